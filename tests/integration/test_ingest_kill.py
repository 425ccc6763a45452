"""`stemforge ingest dsd100` killed with SIGKILL part way, then rerun: it resumes and the result
equals an uninterrupted ingest. The rest of DSD100's ingest:
tests/unit/ingest/test_ingest_dsd100.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


from stemforge.ingest.engine import ingest
from stemforge.recipes import dsd100
from stemforge.store import DataDir
from stemforge.store.check import validate


def test_kill_9_then_rerun_resumes(tmp_path):
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "c", "dsd100", songs=8, seconds=8.0, seed=21)
    data = tmp_path / "d"
    env = dict(os.environ, STEMFORGE_SHARD_TRACKS="1")
    cmd = [sys.executable, "-m", "stemforge", "ingest", "dsd100", str(tmp_path / "c"), "--out", str(data), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = data / "manifest.csv"
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists():
            committed = max(0, len(manifest.read_text().strip().splitlines()) - 1)
            if committed >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed; make the corpus larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    dd = DataDir.open(data)
    n_before = len(dd.manifest)
    assert 2 <= n_before < 8
    report = ingest(dd, dsd100.discover(tmp_path / "c"), workers=1)
    assert len(report.unchanged) == n_before
    assert len(report.ingested) == 8 - n_before
    dd = DataDir.open(data)
    assert len(dd.manifest) == 8 and not dd.manifest["uid"].duplicated().any()
    assert validate(dd).ok
