"""The store on a really full disk: a real small filesystem fills while `stemforge ingest` runs as a
process, nothing crashes and a rerun completes. The other fault classes:
tests/unit/store/test_reliability_store.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stemforge.store import DataDir
from stemforge.store.check import validate

from support.reliability_store import N_SONGS, _assert_complete, _error_lines
from support.tmpfs import mount_tmpfs


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 6 MiB filesystem (tmpfs: one 2-track shard fits, not two), where root may mount one; skips otherwise."""
    yield from mount_tmpfs(tmp_path, "6m")


def test_really_full_disk_no_crash_and_rerun_completes(dsd100_corpus, small_tmpfs):
    """A real full disk (libhdf5 used to segfault, exit 139, after dozens of tracebacks)."""
    data = small_tmpfs / "d"
    env = dict(os.environ, STEMFORGE_SHARD_TRACKS="2")
    cmd = [sys.executable, "-m", "stemforge", "ingest", "dsd100", str(dsd100_corpus), "--out", str(data), "--workers", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and "disk full" in lines[0] and str(data) in lines[0] and "kept" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    dd = DataDir.open(data)
    kept = len(dd.manifest)
    assert 0 < kept < N_SONGS
    assert validate(dd).ok
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    _assert_complete(data)
