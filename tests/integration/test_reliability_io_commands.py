"""Issue 23's input/output faults through whole commands: a real full disk under `stemforge
separate` and a really small disk under `stemforge augment` (processes on a small tmpfs), ingest,
augment, separate and evaluate writing plain progress lines into a log, and MIR-1K's ingest
through a pipe in a real process. The one-line refusals in process:
tests/integration/test_reliability_io.py."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from stemforge.cli.main import app

from support.reliability_io import _snapshot, _train_datadir, one_line_error, tone
from support.tmpfs import mount_tmpfs


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB filesystem: one 20 s stem does not fit."""
    yield from mount_tmpfs(tmp_path, "1m")


@pytest.fixture
def tmpfs_8m(tmp_path):
    """A real 8 MiB filesystem: a DataDir of two short songs fits, a hundred remixes do not."""
    yield from mount_tmpfs(tmp_path, "8m")


def test_separate_on_a_really_full_disk_says_so(tmp_path, tiny_checkpoint, small_tmpfs):
    """Issue 23 item 10: `separate` on a full disk said "cannot write (System error.)" (libsndfile's
    words) and went on failing every file. Now: the disk is full, one line, exit 3, no stem of
    that file left (not even a temporary file), the files separated before kept."""
    first = tone(tmp_path / "first.wav", seconds=1.0)  # fits (about 2 x 64 KB)
    big = tone(tmp_path / "big.wav", seconds=20.0)  # 2 x 1.3 MB: does not
    after = tone(tmp_path / "after.wav", seconds=1.0)
    out = small_tmpfs / "sep"
    result = CliRunner().invoke(app, ["separate", str(tiny_checkpoint), str(first), str(big), str(after), "-o", str(out)])
    line = one_line_error(result, 3)
    assert "disk full (No space left on device)" in line and "big" in line, line
    assert "kept the 1 file(s) separated before it" in line, line
    assert "System error" not in result.output
    assert sorted(p.name for p in (out / "first").iterdir()) == ["accompaniment.wav", "vocals.wav"]
    assert not any((out / "big").iterdir()) if (out / "big").exists() else True
    assert not (out / "after").exists()  # the batch stopped: the next file would find the disk full too


def _progress_clean(output: str, label: str) -> list[str]:
    """The output holds no carriage return, and its progress lines (those starting with
    ``label``) are a few readable lines."""
    assert "\r" not in output, output[:400]
    lines = [line for line in output.splitlines() if line.startswith(label)]
    assert 1 <= len(lines) <= 6, lines
    return lines


def test_batch_commands_write_plain_progress_into_a_log(tmp_path, tiny_checkpoint):
    """ingest, augment, separate and evaluate wrote tqdm's carriage-return bars into a log file (a
    CliRunner's output is not a terminal either); now each writes a few plain lines."""
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "mir", "mir1k", songs=6, seconds=5.0, seed=2)
    data = tmp_path / "data"
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", "mir1k", str(tmp_path / "mir"), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = _progress_clean(result.output, "ingest mir1k: ")
    assert lines[-1].startswith("ingest mir1k: 6/6 tracks (100%)  done in "), lines
    result = runner.invoke(app, ["augment", str(data), "--hours", "0.01", "--segment-seconds", "4.1", "--min-vocal-activity", "0.1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    _progress_clean(result.output, "augment: ")
    result = runner.invoke(app, ["separate", str(tiny_checkpoint), str(tone(tmp_path / "tune.wav")), "-o", str(tmp_path / "sep")])
    assert result.exit_code == 0, result.output
    _progress_clean(result.output, "separate: ")
    result = runner.invoke(app, ["evaluate", str(tiny_checkpoint), str(data), "--split", "all", "-o", str(tmp_path / "ev" / "r.csv")])
    assert result.exit_code == 0, result.output
    _progress_clean(result.output, "evaluate all: ")


def test_mir1k_ingest_through_a_pipe_is_a_few_readable_lines(tmp_path):
    """The issue's case, in a real process whose stderr is a pipe (MIR-1K's ingest was one line
    of thousands of carriage-return updates)."""
    import subprocess
    import sys

    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "mir", "mir1k", songs=6, seconds=1.0, seed=5)
    done = subprocess.run(
        [sys.executable, "-m", "stemforge", "ingest", "mir1k", str(tmp_path / "mir"), "--out", str(tmp_path / "d"), "--workers", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = _progress_clean(done.stderr, "ingest mir1k: ")
    assert lines[0].startswith("ingest mir1k: 0/6 tracks") and lines[-1].startswith("ingest mir1k: 6/6 tracks (100%)"), lines
    assert all(len(line) < 100 for line in lines), lines


def test_augment_on_a_really_small_disk_is_refused(tmp_path, tmpfs_8m):
    """The same on a real 1 MiB filesystem: the DataDir's own free space is what counts."""
    import shutil

    data = _train_datadir(tmp_path, songs=2, seconds=4.5)
    shutil.copytree(data, tmpfs_8m / "data")
    before = _snapshot(tmpfs_8m / "data")
    result = CliRunner().invoke(app, ["augment", str(tmpfs_8m / "data"), "--hours", "0.1", "--segment-seconds", "4.5", "--workers", "1"])
    line = one_line_error(result, 3)
    assert "disk full (not enough room" in line and "nothing was written" in line, line
    assert _snapshot(tmpfs_8m / "data") == before
