"""Every file stemforge writes gets the mode a plain ``open()`` gives under the user's umask.

``tempfile.mkstemp`` makes 0600 files, which locked colleagues out of a shared DataDir; the atomic
writes of ``stemforge.core.files`` create their temporary file with 0666 and let the umask decide.
Each writer is checked under three umasks; the last test runs a tiny demo (every stage) and checks
every file it leaves. The files of a whole demo run: tests/integration/test_permissions_demo.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from support.permissions import _assert_modes, _mode

UMASKS = [0o022, 0o027, 0o002]


@pytest.fixture(params=UMASKS, ids=lambda u: f"umask{u:03o}")
def umask(request):
    """Run the test under ``request.param``; returns the mode a plain open() gives then."""
    old = os.umask(request.param)
    try:
        yield 0o666 & ~request.param
    finally:
        os.umask(old)


def _plain_open_mode(folder: Path) -> int:
    probe = folder / ".probe"
    with open(probe, "w"):
        pass
    mode = _mode(probe)
    probe.unlink()
    return mode


def test_atomic_helpers(tmp_path, umask):
    from stemforge.core import files

    assert _plain_open_mode(tmp_path) == umask
    a = files.write_text(tmp_path / "a.txt", "x\n")
    b = files.write_bytes(tmp_path / "b.bin", b"x")
    with files.atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"c")
    with files.atomic_open(tmp_path / "d.txt", "w") as f:
        f.write("d")
    _assert_modes([a, b, tmp_path / "c.bin", tmp_path / "d.txt"], umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin", "d.txt"]  # no temp left


def test_datadir_files(tmp_path, umask):
    """manifest.csv, stemforge.json, the lock file and the shards."""
    from stemforge.store import DataDir
    from stemforge.store.shards import TrackArrays
    from stemforge.store.sink import ShardSink

    dd = DataDir.create(tmp_path / "d")
    n = 40
    mag = np.ones((n, 513), np.float32)
    wave = np.zeros(dd.config.hop_length * (n - 1), np.float32)
    arrays = TrackArrays(mag, mag * 0.5, mag * 0.5, 1.0, np.ones(n, np.float32), wave, wave)
    row = dict(uid="t:1", dataset="t", track_id="1", split="train", n_frames=n, norm=1.0, config_hash=dd.config.hash)
    with dd.writing():
        with ShardSink(dd, "t", 4) as sink:
            sink.add("k1", "t:1", row, arrays)
    root = tmp_path / "d"
    _assert_modes([root / "manifest.csv", root / "stemforge.json", root / ".stemforge.lock", *dd.shard_files()], umask)


def test_audio_write(tmp_path, umask):
    """core.audio.write: the derived vocals, the demo's separated wavs."""
    from stemforge.core import audio

    y = np.zeros((2, 1600), np.float32)
    _assert_modes([audio.write(tmp_path / "x.wav", y, 16000), audio.write(tmp_path / "x.flac", y, 16000)], umask)


def test_synth_corpus_files(tmp_path, umask):
    """The synthetic corpora: wavs, csv/json metadata, stem.mp4 containers."""
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "dsd", "dsd100", songs=1, seconds=1.0, seed=0)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    try:
        import av  # noqa: F401

        write_corpus(tmp_path / "musdb", "musdb", songs=1, seconds=1.0, seed=0)
        written += [p for p in (tmp_path / "musdb").rglob("*") if p.is_file()]
        assert any(p.name.endswith(".stem.mp4") for p in written)
    except ImportError:
        pass
    _assert_modes(written, umask)


def test_derive_vocals_outputs(tmp_path, umask):
    from stemforge.cli.main import app
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "pairs", "pairs", songs=1, seconds=8.0, seed=3)
    original = next((tmp_path / "pairs" / "originals").iterdir())
    karaoke = next((tmp_path / "pairs" / "karaoke").iterdir())
    out = tmp_path / "out"
    out.mkdir()
    args = ["derive-vocals", str(original), str(karaoke), "-o", str(out / "v.wav"),
            "--accompaniment-out", str(out / "a.wav"), "--report", str(out / "r.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    _assert_modes([out / "v.wav", out / "a.wav", out / "r.json"], umask)
