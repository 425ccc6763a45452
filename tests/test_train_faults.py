"""What users and faults hit while training (issue 23): the run folder's lock and names, checksummed
checkpoints, the world size of a resumed run, the manifest read once, a frozen or dead peer, a full
disk, SIGTERM, what the command says while loading and on a CPU, and its summary."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stemforge.core.errors import CheckpointError, StemforgeError
from stemforge.model import UNetConfig
from stemforge.model.checkpoint import combine_checkpoints, load_checkpoint
from stemforge.store import DataDir
from stemforge.train.config import TrainConfig
from stemforge.train.loop import train

TINY = UNetConfig(width=0.125)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> DataDir:
    """Synthetic DSD100 songs: four train songs and one valid song (as tests/test_train.py)."""
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import dsd100
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("faults")
    entries = [dict(id=51 + i, subset="Dev", artist=f"Synth Artist {i}", title=f"Song {i}") for i in range(4)]
    entries.append(dict(id=65, subset="Dev", artist="Fergessen", title="Nos Palpitants"))  # valid in DSD100
    write_corpus(root / "corpus", "dsd100", songs=5, seconds=10.0, seed=3, entries=entries)
    dd = DataDir.create(root / "data")
    report = ingest(dd, dsd100.discover(root / "corpus"), workers=1)
    assert not report.failed
    return DataDir.open(root / "data")


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-2, val_every=100, val_crops=8, checkpoint_every=100, log_every=2,
                tensorboard=False, data_mode="memory", deterministic=True, seed=11)
    base.update(kw)
    return TrainConfig(**base)


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", **extra)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stemforge", "train", *args]


TINY_ARGS = ["--width", "0.125", "--batch-size", "2", "--device", "cpu", "--no-tensorboard", "--in-memory"]


# --------------------------------------------------------------------------------------------
# 4. The manifest hash and the rows trained on come from one read
# --------------------------------------------------------------------------------------------


def _commit_a_change(path: Path, title: str) -> None:
    """Another writer (an augment, say) commits a changed row into the DataDir at ``path``."""
    other = DataDir.open(path)
    with other.writing():
        row = other.manifest.to_dict("records")[0]
        row["title"] = title
        other.commit([row])


def test_manifest_hash_describes_the_rows_read(datadir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(datadir.path, copy)

    def file_hash() -> str:
        return hashlib.sha256((copy / "manifest.csv").read_bytes()).hexdigest()[:16]

    # the rows first, then a commit, then the hash: the hash is the rows' one
    first = file_hash()
    dd = DataDir.open(copy)
    assert "one" not in set(dd.manifest["title"])
    _commit_a_change(copy, "one")
    assert dd.manifest_hash == first != file_hash()
    # the hash first, then a commit, then the rows: the rows are the hash's
    dd = DataDir.open(copy)
    second = dd.manifest_hash
    _commit_a_change(copy, "two")
    assert "one" in set(dd.manifest["title"]) and "two" not in set(dd.manifest["title"])
    assert dd.manifest_hash == second != file_hash()
    # through training: the checkpoint and train.json record the manifest of the rows trained on
    dd = DataDir.open(copy)
    recorded = dd.manifest_hash
    _commit_a_change(copy, "three")
    result = train(dd, tmp_path / "run", _config(steps=1), TINY, device="cpu")
    assert load_checkpoint(result.last_checkpoint).manifest_hash == recorded != file_hash()
    assert json.loads((result.out_dir / "train.json").read_text())["manifest_hash"] == recorded


# --------------------------------------------------------------------------------------------
# 2. Checkpoints carry a checksum, checked at every load
# --------------------------------------------------------------------------------------------


def _same(a, b) -> bool:
    """Whether two loaded payloads hold the same values (tensors: dtype, shape and every bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _zero_everywhere(path: Path, count: int) -> tuple[int, int, int]:
    """Write 4 KiB of zeroes at ``count`` offsets spread over ``path`` (one at a time, the file
    restored between); every damage that torch.load reads as other values must be refused by
    load_checkpoint. Returns (offsets tried, refused by the checksum, read as other values)."""
    good = path.read_bytes()
    original = torch.load(path, weights_only=True)
    offsets = sorted({min(len(good) - 1, i * len(good) // count + (i * 997) % 512) for i in range(count)})
    refused = changed = 0
    try:
        for offset in offsets:
            bad = bytearray(good)
            bad[offset:offset + 4096] = bytes(len(bad[offset:offset + 4096]))
            if bad == good:
                continue
            path.write_bytes(bad)
            try:
                loaded = torch.load(path, weights_only=True)
            except Exception:  # torch refuses the file itself: load_checkpoint must too, in one line
                with pytest.raises(CheckpointError):
                    load_checkpoint(path)
                continue
            if _same(loaded, original):
                continue  # padding between the zip's records: nothing loaded changed
            changed += 1
            with pytest.raises(CheckpointError) as info:
                load_checkpoint(path)
            message = str(info.value)
            assert "\n" not in message and str(path) in message, message
            refused += "damaged" in message
    finally:
        path.write_bytes(good)
    return len(offsets), refused, changed


def test_damaged_checkpoints_are_refused_at_every_offset(datadir, tmp_path):
    result = train(datadir, tmp_path / "run", _config(steps=2), TINY, device="cpu")
    for path, count in ((result.last_checkpoint, 120), (result.model_path, 60)):
        if path.name == "model.pt":  # a hard link to best.pt: damage a copy of its own
            copy = path.with_name("copy.pt")
            shutil.copyfile(path, copy)
            path = copy
        tried, refused, changed = _zero_everywhere(path, count)
        # most damages change the values read (the tensors fill most of the file): each was refused
        assert changed > tried // 2 and refused == changed, (path.name, tried, refused, changed)
        load_checkpoint(path)  # the undamaged file loads


def test_every_load_checks_the_checksum_and_old_checkpoints_still_load(datadir, tmp_path):
    from stemforge.cli.main import app
    from stemforge.separate.separator import Separator
    from stemforge.train.setup import resolve_run

    run = tmp_path / "run"
    result = train(datadir, run, _config(steps=2, checkpoint_every=1), TINY, device="cpu")
    last, model = result.last_checkpoint, result.model_path

    def damage(path: Path) -> Path:
        """A copy of ``path`` with one weight's bytes changed (the zip reads fine)."""
        copy = path.with_name(f"damaged-{path.name}")
        data = bytearray(path.read_bytes())
        raw = torch.load(path, weights_only=True)
        tensor = raw["model_state"]["conv1.weight"]
        needle = tensor.reshape(-1)[:8].numpy().tobytes()
        at = bytes(data).index(needle)
        data[at:at + 4] = bytes(4)
        copy.write_bytes(bytes(data))
        return copy

    bad_model, bad_last = damage(model), damage(last)
    with pytest.raises(CheckpointError, match="damaged"):
        Separator.from_checkpoint(bad_model, device="cpu")  # separate, evaluate, serve
    with pytest.raises(CheckpointError, match="damaged"):
        combine_checkpoints(bad_model, model, tmp_path / "both.pt")  # combine
    with pytest.raises(CheckpointError, match="damaged"):
        resolve_run(datadir, tmp_path / "ft", init=bad_model, device="cpu")  # --init
    # --resume: one line, exit 3, naming the file
    os.replace(bad_last, last)
    r = CliRunner().invoke(app, ["train", str(datadir.path), "--out", str(run), "--resume", "--steps", "3"])
    assert r.exit_code == 3, r.output
    error = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and str(last) in error[0] and "damaged" in error[0], r.output
    # a checkpoint written before checksums existed (no checksum key) loads as before
    raw = torch.load(model, weights_only=True)
    assert raw["checksum"].startswith("sha256:")
    del raw["checksum"]
    old = tmp_path / "old.pt"
    torch.save(raw, old)
    assert load_checkpoint(old).step == result.best_step
    Separator.from_checkpoint(old, device="cpu")
