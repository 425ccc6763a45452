"""core.files.PendingFile: the atomic write of a writer whose life spans several calls (a shard),
and the writers that now go through core.files (figures, synthetic stem.mp4)."""

from __future__ import annotations

import errno
import os

import pytest

from stemforge.core import files
from stemforge.core.errors import DiskFullError


def test_pending_file_commits_whole_under_its_name(tmp_path):
    final = tmp_path / "x.bin"
    final.write_bytes(b"old")
    pending = files.PendingFile(final)
    assert pending.tmp_path.parent == tmp_path and pending.tmp_path.name.startswith(".x.bin.") and pending.tmp_path.name.endswith(".tmp")
    os.write(pending.fd, b"new bytes and reserved room")
    assert final.read_bytes() == b"old"  # nothing visible before the commit
    pending.sync(size=9)  # cut to what the writer used
    assert pending.fd == -1 and pending.synced
    assert pending.commit() == final
    assert final.read_bytes() == b"new bytes" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_pending_file_with_its_own_temporary_name_and_abort(tmp_path):
    final = tmp_path / "s-00000.h5"
    pending = files.PendingFile(final, final.with_name(final.name + ".tmp"))
    assert pending.tmp_path == tmp_path / "s-00000.h5.tmp" and pending.tmp_path.exists()
    with pytest.raises(FileExistsError):  # the name is claimed: a second writer cannot take it
        files.PendingFile(final, pending.tmp_path)
    pending.abort()
    assert not any(tmp_path.iterdir()) and pending.fd == -1
    pending.abort()  # twice is harmless


def test_pending_file_written_by_name_and_committed_without_fsync(tmp_path, monkeypatch):
    pending = files.PendingFile(tmp_path / "y.txt")
    pending.close()
    pending.tmp_path.write_text("by name")
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync with fsync=False"))
    pending.commit(fsync=False)
    assert (tmp_path / "y.txt").read_text() == "by name"


def test_pending_file_full_disk_at_sync_names_the_final_file(tmp_path, monkeypatch):
    pending = files.PendingFile(tmp_path / "z.bin")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"z\.bin: disk full"):
        pending.sync()
    assert pending.fd == -1  # closed anyway
    monkeypatch.undo()
    pending.abort()
    assert not any(tmp_path.iterdir())


def test_figure_and_stem_mp4_writers_leave_no_temporary_file(tmp_path):
    pytest.importorskip("matplotlib")
    import numpy as np

    from stemforge.evaluate.plots import _pyplot, _save
    from stemforge.synth.layouts import _write_stem_mp4

    fig = _pyplot().figure()
    png = _save(fig, tmp_path / "fig" / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mp4 = _write_stem_mp4(tmp_path / "s.stem.mp4", [np.zeros((2, 4096), np.float32)] * 2, 44100)
    assert mp4.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "fig", "s.stem.mp4"]


def test_check_outputs_refuses_inputs_twice_given_and_existing_files(tmp_path):
    from stemforge.core.errors import OutputPathError

    song, old = tmp_path / "song.wav", tmp_path / "old.wav"
    song.write_bytes(b"")
    old.write_bytes(b"")
    files.check_outputs([tmp_path / "new.wav", tmp_path / "report.json"], [song])
    with pytest.raises(OutputPathError, match=r"song\.wav: refusing to overwrite an input file"):
        files.check_outputs([tmp_path / "x" / ".." / "song.wav"], [song], force=True)
    with pytest.raises(OutputPathError, match=r"a\.wav: given for two outputs"):
        files.check_outputs([tmp_path / "a.wav", tmp_path / "a.wav"], [song])
    with pytest.raises(OutputPathError, match=r"old\.wav: exists \(use --force to overwrite\)"):
        files.check_outputs([old], [song])
    files.check_outputs([old], [song], force=True)
