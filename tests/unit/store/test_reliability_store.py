"""The store's fault classes (docs/reliability.md): a full disk, damaged shards, old shards.

Each test makes its inputs at test time (a 6-song synthetic DSD100 tree, shards damaged in place)
and checks the promise: a one-line reason, the rest of the batch goes on, nothing stored earlier is
lost, the DataDir stays valid, and a re-run repairs. A really full disk under a running command:
tests/integration/test_reliability_store_disk.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core import files
from stemforge.core.errors import CorruptDataError, DiskFullError
from stemforge.ingest.engine import ingest
from stemforge.recipes import dsd100
from stemforge.store import DataDir
from stemforge.store.check import validate
from stemforge.store.shards import ARRAY_NAMES, CHECKSUM_ATTR

from support.reliability_store import N_SONGS, _assert_complete, _error_lines


def _ingest_cli(corpus: Path, data: Path):
    return CliRunner().invoke(app, ["ingest", "dsd100", str(corpus), "--out", str(data), "--workers", "1"])


# -- a full disk ---------------------------------------------------------------------------
def test_full_disk_while_writing_a_shard(dsd100_corpus, tmp_path, monkeypatch):
    """ENOSPC when a shard's bytes are reserved (the lowest write point before libhdf5): exit 3,
    one line naming the DataDir and what was kept, the DataDir valid, a re-run completes."""
    monkeypatch.setenv("STEMFORGE_SHARD_TRACKS", "2")
    data = tmp_path / "d"
    real = os.posix_fallocate
    calls = {"n": 0}

    def full(fd, offset, length):  # shard 0: calls 1-3 (overhead, 2 tracks); shard 1 fails at its 2nd track
        calls["n"] += 1
        if calls["n"] >= 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", full)
    result = _ingest_cli(dsd100_corpus, data)
    assert result.exit_code == 3, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert str(data) in lines[0] and "disk full" in lines[0] and "kept the 2 track(s)" in lines[0]
    assert "Traceback" not in result.output
    dd = DataDir.open(data)
    assert len(dd.manifest) == 2
    assert validate(dd).ok
    assert not list((data / "shards").glob("*.tmp"))
    monkeypatch.setattr(os, "posix_fallocate", real)  # space freed
    again = _ingest_cli(dsd100_corpus, data)
    assert again.exit_code == 0, again.output
    _assert_complete(data)


def test_full_disk_while_writing_the_manifest(dsd100_corpus, tmp_path, monkeypatch):
    """ENOSPC inside the manifest's write: the previous manifest stays, the shard it would have
    committed is removed again (no orphan), exit 3 with one line; a re-run completes."""
    monkeypatch.setenv("STEMFORGE_SHARD_TRACKS", "2")
    data = tmp_path / "d"

    class _Full:
        """A manifest file that takes at most 2 rows: the second shard's commit finds the disk full."""

        def __init__(self, f):
            self._f = f

        def write(self, text):
            if text.count("\n") > 3:  # header + 2 rows + the last newline
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._f.write(text)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def fake_open(path, *args, **kwargs):
        f = open(path, *args, **kwargs)
        return _Full(f) if ".manifest.csv." in str(path) else f

    monkeypatch.setattr(files, "open", fake_open, raising=False)
    result = _ingest_cli(dsd100_corpus, data)
    assert result.exit_code == 3, result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1 and str(data) in lines[0] and "manifest.csv" in lines[0], result.output
    assert "kept the 2 track(s)" in lines[0]
    dd = DataDir.open(data)
    assert len(dd.manifest) == 2
    res = validate(dd)
    assert res.ok, res.problems  # no orphan shard, no temporary file taken as valid
    assert len(dd.shard_files()) == 1
    monkeypatch.undo()
    again = _ingest_cli(dsd100_corpus, data)
    assert again.exit_code == 0, again.output
    _assert_complete(data)


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    """core.files: ENOSPC -> DiskFullError naming the file; the old content stays, no temp left."""
    path = tmp_path / "x.txt"
    files.write_text(path, "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"x\.txt: disk full \(No space left on device\)"):
        files.write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


# -- damaged shards ------------------------------------------------------------------------
@pytest.fixture
def stored(dsd100_corpus, tmp_path):
    """A DataDir holding the 6 songs in 3 shards of 2 tracks."""
    data = tmp_path / "d"
    report = ingest(DataDir.create(data), dsd100.discover(dsd100_corpus), tracks_per_shard=2)
    assert report.ok and len(report.ingested) == N_SONGS
    return data


def _zero_bytes_inside(data: Path, uid: str, name: str = "mixture", n: int = 1024) -> None:
    """Overwrite ``n`` bytes in the middle of one stored array with zeros (plain file I/O)."""
    dd = DataDir.open(data)
    row = dd.manifest.set_index("uid").loc[uid]
    path = data / row["shard"]
    with h5py.File(path, "r") as f:
        ds = f["tracks"][row["key"]][name]
        info = ds.id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
        assert np.any(ds[:]), "the array must not be zeros already"
    with open(path, "r+b") as f:
        f.seek(offset + size // 2 - n // 2)
        f.write(b"\0" * n)


def test_zeroed_bytes_are_found_and_repaired(dsd100_corpus, stored):
    dd = DataDir.open(stored)
    victim = dd.manifest["uid"].iloc[3]
    _zero_bytes_inside(stored, victim)
    res = validate(DataDir.open(stored))
    assert len(res.problems) == 1, res.problems
    assert victim in res.problems[0] and "mixture" in res.problems[0] and "fails its checksum" in res.problems[0]
    row = dd.manifest.set_index("uid").loc[victim]
    reader = DataDir.open(stored).reader()
    with pytest.raises(CorruptDataError, match="mixture fails its checksum"):
        reader.verify(row["shard"], row["key"])
    with pytest.raises(CorruptDataError, match="mixture fails its checksum"):
        reader.read_frames(row["shard"], row["key"])  # a whole-array read checks on the way
    reader.read_frames(row["shard"], row["key"], 0, 16)  # a crop is read as it is
    reader.close()
    # the re-run redoes exactly the damaged track and keeps the rest
    report = ingest(DataDir.open(stored), dsd100.discover(dsd100_corpus), tracks_per_shard=2)
    assert [u for u, _ in report.repaired] == [victim] and "fails its checksum" in report.repaired[0][1]
    assert len(report.unchanged) == N_SONGS - 1 and [r["uid"] for r in report.ingested] == [victim]
    _assert_complete(stored)


def test_truncated_shard_is_found_and_repaired(dsd100_corpus, stored):
    dd = DataDir.open(stored)
    shard = dd.manifest["shard"].iloc[0]
    in_shard = set(dd.manifest.loc[dd.manifest["shard"] == shard, "uid"])
    path = stored / shard
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 1024)
    res = validate(DataDir.open(stored))
    assert not res.ok and all(shard in p for p in res.problems), res.problems
    report = ingest(DataDir.open(stored), dsd100.discover(dsd100_corpus), tracks_per_shard=2)
    assert {u for u, _ in report.repaired} == in_shard
    assert len(report.unchanged) == N_SONGS - len(in_shard)
    _assert_complete(stored)
    assert not path.exists()  # the damaged shard no row references any more is gone


def test_missing_array_is_redone(dsd100_corpus, stored):
    dd = DataDir.open(stored)
    row = dd.manifest.iloc[5]
    with h5py.File(stored / row["shard"], "r+") as f:
        del f["tracks"][row["key"]]["wave_accompaniment"]
    report = ingest(DataDir.open(stored), dsd100.discover(dsd100_corpus), tracks_per_shard=2)
    assert [u for u, _ in report.repaired] == [row["uid"]] and "wave_accompaniment is missing" in report.repaired[0][1]
    _assert_complete(stored)


def test_evaluation_read_of_a_damaged_waveform_is_refused(stored):
    dd = DataDir.open(stored)
    row = dd.manifest.iloc[1]
    _zero_bytes_inside(stored, row["uid"], "wave_vocals")
    reader = dd.reader()
    with pytest.raises(CorruptDataError, match="wave_vocals fails its checksum"):
        reader.read_wave(row["shard"], row["key"], "vocals")
    assert reader.read_wave(row["shard"], row["key"], "accompaniment").size  # the other array is whole
    reader.close()


def test_shards_without_checksums_stay_valid_with_a_note(dsd100_corpus, stored):
    """A shard written by an older stemforge (no crc32 attributes) is valid, noted, unchanged."""
    dd = DataDir.open(stored)
    shard = dd.manifest["shard"].iloc[0]
    with h5py.File(stored / shard, "r+") as f:
        for g in f["tracks"].values():
            for name in ARRAY_NAMES:
                del g[name].attrs[CHECKSUM_ATTR]
    res = validate(DataDir.open(stored))
    assert res.ok, res.problems
    assert any(shard in w and "no checksum (written by an older stemforge)" in w for w in res.warnings), res.warnings
    out = CliRunner().invoke(app, ["validate", str(stored)])
    assert out.exit_code == 0 and "no checksum" in out.output
    report = ingest(DataDir.open(stored), dsd100.discover(dsd100_corpus), tracks_per_shard=2)
    assert len(report.unchanged) == N_SONGS and not report.repaired


def test_every_array_has_a_checksum(stored):
    dd = DataDir.open(stored)
    reader = dd.reader()
    for row in dd.manifest.itertuples():
        assert reader.verify(row.shard, row.key) == []  # nothing unverifiable
    reader.close()
