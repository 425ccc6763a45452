"""The default (seed) geometry is frozen: the arrays stemforge 0.1.0 stored stay bit-identical.

``tests/data/seed_geometry_v0.1.0.json`` holds the config hash and the SHA-256 of every stored
array (magnitudes, waveforms, vocal energy) of a DataDir that stemforge 0.1.0 (commit 41d5948,
before the package was re-laid out) ingested from a synthetic DSD100 corpus
(``write_corpus(..., "dsd100", songs=2, seconds=4.0, seed=11)``). Today's code must write the
same corpus and the same arrays, bit for bit, so that existing DataDirs stay valid and a
re-ingest does not change what is stored.
"""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.ingest.engine import ingest
from stemforge.recipes import dsd100
from stemforge.store import DataDir
from stemforge.synth.layouts import write_corpus

from conftest import TEST_DATA

FROZEN = TEST_DATA / "seed_geometry_v0.1.0.json"


def test_default_geometry_arrays_are_those_of_0_1_0(tmp_path):
    want = json.loads(FROZEN.read_text())
    assert SpectrogramConfig().hash == want["config_hash"]
    write_corpus(tmp_path / "corpus", "dsd100", songs=2, seconds=4.0, seed=11)
    dd = DataDir.create(tmp_path / "data")
    ingest(dd, dsd100.discover(tmp_path / "corpus"), workers=1)
    assert dd.config.hash == want["config_hash"]
    got = {}
    for shard in sorted((tmp_path / "data" / "shards").glob("*.h5")):
        with h5py.File(shard) as f:
            for key in sorted(f["tracks"]):
                for name, ds in sorted(f["tracks"][key].items()):
                    got[f"{key}/{name}"] = hashlib.sha256(np.ascontiguousarray(ds[()]).tobytes()).hexdigest()
    assert set(got) == set(want["arrays"])
    changed = sorted(k for k in got if got[k] != want["arrays"][k])
    assert changed == [], f"arrays no longer bit-identical to stemforge 0.1.0: {changed}"
