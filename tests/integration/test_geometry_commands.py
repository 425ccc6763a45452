"""`stemforge augment` run whole on a stereo DataDir: the remixes are made at the DataDir's rate and
channels. The geometries on their own: tests/unit/ingest/test_geometry.py."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core import dsp
from stemforge.core.config import SpectrogramConfig
from stemforge.ingest.engine import ingest
from stemforge.recipes import dsd100
from stemforge.store import DataDir
from stemforge.store.check import validate


def test_augment_remixes_at_the_datadirs_rate_and_channels(tmp_path):
    from stemforge.augment.remix import augment, default_segment_seconds
    from stemforge.synth.layouts import write_corpus

    cfg = SpectrogramConfig.preset("fullband")
    assert default_segment_seconds(cfg) == 12.0 and default_segment_seconds(SpectrogramConfig()) == 10.0
    write_corpus(tmp_path / "c", "dsd100", songs=4, seconds=13.0, seed=4)  # two train songs (Dev), two test
    dd = DataDir.create(tmp_path / "data", cfg)
    assert ingest(dd, dsd100.discover(tmp_path / "c"), workers=1).ok
    runner = CliRunner()
    r = runner.invoke(app, ["augment", str(dd.path), "--hours", "0.02", "--workers", "1"])
    assert r.exit_code == 0, r.output
    df = dd.reload()
    remixes = df[df["dataset"] == "remix"]
    assert len(remixes) >= 2 and (remixes["duration_s"] == 12.0).all()
    assert (remixes["source_channels"] == 2).all() and (remixes["source_sample_rate"] == 44100).all()
    reader = dd.reader()
    for row in remixes.itertuples():
        voc = reader.read_wave(row.shard, row.key, "vocals")
        acc = reader.read_wave(row.shard, row.key, "accompaniment")
        assert voc.shape == acc.shape == (2, 12 * 44100)
        mags = reader.read_frames(row.shard, row.key)
        assert mags["mixture"].shape == (row.n_frames, 2, 2049) and row.n_frames >= 512
        # mixture == |STFT(vocals + accompaniment)| / norm for what is stored, every channel
        ref = np.abs(dsp.stft(voc + acc, cfg)).transpose(1, 0, 2) / row.norm
        assert np.abs(mags["mixture"].astype(np.float32) - ref).max() < 2e-3
    reader.close()
    assert validate(dd).ok
