"""Issue 23, the input/output faults users and an adversarial tester hit (items 6, 7, 9, 10, 14,
15): paths that are not regular files, text that cannot be stored, output folders that cannot
be made, misleading reasons, floods of failure lines, a silent multi-GB augment, and progress
bars written into log files.

Every input is made at test time (tiny wavs, FIFOs, symbolic links, CSV lists). Whole commands on
real small disks, progress of whole commands into a log, a real pipe:
tests/integration/test_reliability_io_commands.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stemforge.cli.main import app

from support.reliability_io import _snapshot, _train_datadir, no_traceback, one_line_error, tone

# --------------------------------------------------------------------------- helpers


def _unblock(fifo: Path) -> None:
    """Give a reader blocked on ``fifo`` an end of file (a writer that opens and closes)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def call_unblocked(fn, fifos: list[Path], timeout: float = 30.0):
    """``fn()`` in a thread; when it is still running after ``timeout`` s (blocked opening a
    FIFO), the FIFOs are unblocked so that the thread ends, and the test fails."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    blocked = thread.is_alive()
    while thread.is_alive():
        for fifo in fifos:
            _unblock(fifo)
        thread.join(0.5)
    assert not blocked, f"blocked for {timeout:.0f} s on a FIFO"
    if "error" in box:
        raise box["error"]
    return box["value"]


# --------------------------------------------------------------------------- item 6


def test_a_fifo_as_the_model_is_refused_by_every_command_without_blocking(tmp_path, tiny_checkpoint):
    """Issue 23 item 6: a FIFO (or a device, a directory) where a checkpoint goes is refused in one
    line before it is opened, by every command that opens one; before, `separate` blocked for ever."""
    from stemforge.model.checkpoint import load_checkpoint
    from stemforge.train.setup import resume_configs

    fifo = tmp_path / "model-fifo.pt"
    os.mkfifo(fifo)
    song = tone(tmp_path / "song.wav")
    runner = CliRunner()
    data = tmp_path / "no-datadir"
    commands = {
        "separate": ["separate", str(fifo), str(song), "-o", str(tmp_path / "sep")],
        "evaluate": ["evaluate", str(fifo), str(data)],
        "serve": ["serve", str(fifo), "--port", "0"],
        "combine (vocals)": ["combine", str(fifo), str(tiny_checkpoint), "-o", str(tmp_path / "both.pt")],
        "combine (accompaniment)": ["combine", str(tiny_checkpoint), str(fifo), "-o", str(tmp_path / "both.pt")],
        "import-chainer": ["import-chainer", str(fifo), "-o", str(tmp_path / "chainer.pt")],
    }
    for name, args in commands.items():
        if name == "evaluate":  # evaluate opens its DataDir first: give it one
            _tiny_datadir(tmp_path, data)
        result = call_unblocked(lambda: runner.invoke(app, args), [fifo])
        line = one_line_error(result, 3)
        assert str(fifo) in line and "not a regular file (a FIFO)" in line, (name, line)
    # train --init is checked with the other options (a usage error, exit 2)
    result = call_unblocked(lambda: runner.invoke(app, ["train", str(data), "--init", str(fifo), "--out", str(tmp_path / "r")]), [fifo])
    assert result.exit_code == 2 and "not a regular file (a FIFO)" in result.output, result.output
    # train --resume reads the run's last.pt through the same loader
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "last.pt")
    with pytest.raises(Exception, match=r"last\.pt: not a regular file \(a FIFO\)"):
        call_unblocked(lambda: resume_configs(run), [run / "last.pt"])
    # the loader itself, on a device and a directory
    from stemforge.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"/dev/zero: not a regular file \(a character device\)"):
        load_checkpoint("/dev/zero")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def _tiny_datadir(tmp_path: Path, data: Path) -> Path:
    """A DataDir with one test track (made once per test)."""
    if (data / "stemforge.json").exists():
        return data
    songs = tmp_path / "dd-songs"
    songs.mkdir(exist_ok=True)
    v, a = tone(songs / "v.wav", freq=500), tone(songs / "a.wav", freq=110)
    (songs / "list.csv").write_text(f"vocals,accompaniment,split\n{v},{a},test\n")
    result = CliRunner().invoke(app, ["ingest", "csv", str(songs / "list.csv"), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return data


# --------------------------------------------------------------------------- item 10: the right reasons


def test_separate_gives_the_real_reason_for_loops_devices_fifos_and_non_utf8_names(tmp_path, tiny_checkpoint):
    """Issue 23 item 10: a symbolic link loop said "file not found", /dev/zero "empty file", a file
    name that is not UTF-8 "not a readable audio file" (soundfile could not encode the name)."""
    loop = tmp_path / "loop.wav"
    os.symlink(tmp_path / "loop2.wav", loop)
    os.symlink(loop, tmp_path / "loop2.wav")
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    raw = os.fsencode(tmp_path) + b"/caf\xe9-\xff.wav"  # Latin-1 bytes: not UTF-8
    tone(Path(os.fsdecode(raw)))
    broken = os.fsencode(tmp_path) + b"/broken-\xff.wav"
    Path(os.fsdecode(broken)).write_bytes(b"RIFF" + b"\x00" * 100)
    inputs = [str(loop), "/dev/zero", str(fifo), os.fsdecode(raw), os.fsdecode(broken)]
    out = tmp_path / "sep"
    result = call_unblocked(lambda: CliRunner().invoke(app, ["separate", str(tiny_checkpoint), *inputs, "-o", str(out)]), [fifo])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 4, result.output
    assert any(str(loop) in f and "symbolic link loop" in f for f in failed), failed
    assert any("/dev/zero: not a regular file (a character device)" in f for f in failed), failed
    assert any(str(fifo) in f and "not a regular file (a FIFO)" in f for f in failed), failed
    # the name is shown with its bytes escaped, and the reason is the file's, not its name's
    shown = [f for f in failed if "broken-\\xff.wav" in f]
    assert shown and "codec can't encode" not in shown[0] and "surrogates" not in shown[0], failed
    assert "\udcff" not in result.output
    # the file whose name is not UTF-8 but whose audio is fine is separated, under its own name
    assert "caf\\xe9-\\xff" in result.output
    folder = os.fsencode(out) + b"/caf\xe9-\xff"
    assert sorted(os.listdir(folder)) == [b"accompaniment.wav", b"vocals.wav"]


def test_csv_rows_name_the_real_reason(tmp_path):
    """A CSV row naming a symbolic link loop, a FIFO or a device fails with that reason (no
    "file not found", no blocking); the good row is stored."""
    loop = tmp_path / "loop.wav"
    os.symlink(tmp_path / "loop2.wav", loop)
    os.symlink(loop, tmp_path / "loop2.wav")
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    v, a = tone(tmp_path / "v.wav", freq=500), tone(tmp_path / "a.wav", freq=110)
    rows = [f"{v},{a},good", f"{loop},{a},loop", f"{fifo},{a},fifo", f"/dev/zero,{a},zero"]
    (tmp_path / "list.csv").write_text("vocals,accompaniment,track_id\n" + "\n".join(rows) + "\n")
    args = ["ingest", "csv", str(tmp_path / "list.csv"), "--out", str(tmp_path / "data"), "--workers", "1"]
    result = call_unblocked(lambda: CliRunner().invoke(app, args), [fifo])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3, result.output
    assert any("loop.wav: a symbolic link loop" in f and "line 3" in f for f in failed), failed
    assert any("fifo.wav: not a regular file (a FIFO)" in f for f in failed), failed
    assert any("/dev/zero: not a regular file (a character device)" in f for f in failed), failed
    assert "ingested 1," in result.output


# --------------------------------------------------------------------------- item 9 (separate)


def test_separate_into_a_symlink_loop_is_one_line_exit_3(tmp_path, tiny_checkpoint):
    """Issue 23 item 9: `separate -o` pointing at a symbolic link loop gave a traceback
    (RuntimeError: Symlink loop). Now one line naming the folder, exit 3 (nothing can be done),
    before the model is read; a loop inside OUTDIR fails only the input whose output it is."""
    song = tone(tmp_path / "tune.wav")
    loop = tmp_path / "out-loop"
    os.symlink(tmp_path / "out-loop2", loop)
    os.symlink(loop, tmp_path / "out-loop2")
    for outdir in (loop, loop / "below"):
        result = CliRunner().invoke(app, ["separate", str(tiny_checkpoint), str(song), "-o", str(outdir)])
        line = one_line_error(result, 3)
        assert str(outdir) in line and "symbolic link loop" in line, line
        assert "model:" not in result.output  # refused before the model is loaded
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    line = one_line_error(CliRunner().invoke(app, ["separate", str(tiny_checkpoint), str(song), "-o", str(a_file)]), 3)
    assert "is a file, not a folder" in line, line
    # a loop where one input's track folder goes: that input fails, the other is separated
    out = tmp_path / "sep"
    out.mkdir()
    os.symlink(out / "tune", out / "tune")
    other = tone(tmp_path / "other.wav")
    result = CliRunner().invoke(app, ["separate", str(tiny_checkpoint), str(song), str(other), "-o", str(out)])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and "tune.wav" in failed[0] and "symbolic link loop" in failed[0], result.output
    assert (out / "other" / "vocals.wav").is_file()


# --------------------------------------------------------------------------- item 7


def _failed(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("failed: ")]


def test_names_that_cannot_be_stored_fail_their_row_and_the_rest_is_stored(tmp_path):
    """Issue 23 item 7: a NUL byte in a CSV row's artist, title or track_id gave a traceback from
    store/shards.py (HDF5 attributes hold no NUL) and the good rows of the batch were not stored.
    Now each such row is one line (file, line, column, reason), the others are stored, exit 1;
    a control character in a name and a cell over the size limit are refused the same way."""
    from stemforge.recipes.csv import MAX_CELL_CHARS
    from stemforge.store import DataDir

    songs = tmp_path / "songs"
    songs.mkdir()
    files = [(tone(songs / f"v{i}.wav", freq=300 + 40 * i), tone(songs / f"a{i}.wav", freq=100 + i)) for i in range(7)]
    cells = [
        ("Good", "One", "good1"),
        ("Ba\x00d", "Two", "nul-artist"),
        ("Good", "Thr\x00ee", "nul-title"),
        ("Good", "Four", "nul\x00id"),
        ("Good", "Fi\nve", "newline-title"),
        ("Good", "x" * (200 * 1024), "long-title"),  # over the csv module's own 128 KiB limit
        ("Good", "Seven", "good2"),
    ]
    lines = ["vocals,accompaniment,artist,title,track_id"]
    lines += [f'{v.name},{a.name},{artist},"{title}",{tid}' for (v, a), (artist, title, tid) in zip(files, cells)]
    csv_path = songs / "list.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["ingest", "csv", str(csv_path), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    failed = _failed(result.output)
    assert len(failed) == 5, result.output
    expect = {
        3: ("'artist'", "NUL byte"),
        4: ("'title'", "NUL byte"),
        5: ("'track_id'", "NUL byte"),
        6: ("'title'", "control character '\\n'"),  # the quoted cell spans two lines: row 6 starts on line 6
        8: ("'title'", f"more than the {MAX_CELL_CHARS:,} a cell may hold"),
    }
    for line_no, (column, reason) in expect.items():
        hits = [f for f in failed if f"{csv_path}:" in f and column in f and reason in f]
        assert hits, (line_no, column, reason, failed)
    assert all(len(f) < 400 for f in failed)  # one line, the long cell not echoed
    stored = DataDir.open(data).manifest
    assert sorted(stored["track_id"]) == ["good1", "good2"]
    # the pairs list reads its rows through the same check
    pairs = songs / "pairs.csv"
    pairs.write_text("original,karaoke,artist,title\n" f"{files[0][0].name},{files[0][1].name},A\x00B,T\n")
    result = CliRunner().invoke(app, ["ingest", "pairs", str(pairs), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    (line,) = _failed(result.output)
    assert f"{pairs}:2: column 'artist'" in line and "NUL byte" in line, line


def test_every_recipe_reaches_the_name_check(tmp_path):
    """Names from a corpus's metadata (a MedleyDB artist holding a NUL byte) and from file names
    (a ccMixter song folder whose name is not UTF-8) fail their own track in one line; the
    other tracks are stored (before, the NUL crashed the shard write and the surrogate the
    manifest's)."""
    import yaml

    from stemforge.store import DataDir
    from stemforge.synth.layouts import write_corpus

    recs = write_corpus(tmp_path / "m", "medleydb", songs=3, seconds=1.0, seed=16)
    meta_path = recs[1]["paths"]["metadata"]
    meta = yaml.safe_load(meta_path.read_text())
    meta["artist"] = "Nul\x00Artist"
    meta_path.write_text(yaml.safe_dump(meta, sort_keys=False))
    result = CliRunner().invoke(app, ["ingest", "medleydb", str(tmp_path / "m"), "--out", str(tmp_path / "d1"), "--workers", "1"])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    (line,) = _failed(result.output)
    assert recs[1]["track_id"] in line and "artist 'Nul\\x00Artist' holds a NUL byte" in line, line
    assert len(DataDir.open(tmp_path / "d1").manifest) == 2

    recs = write_corpus(tmp_path / "c", "ccmixter", songs=3, seconds=1.0, seed=3)
    folder = Path(recs[0]["paths"]["mixture"]).parent
    renamed = os.fsencode(folder.parent) + b"/" + os.fsencode(folder.name) + b"-\xe9t\xe9"  # Latin-1
    os.rename(os.fsencode(folder), renamed)
    result = CliRunner().invoke(app, ["ingest", "ccmixter", str(tmp_path / "c"), "--out", str(tmp_path / "d2"), "--workers", "1"])
    assert result.exit_code == 1, result.output
    no_traceback(result)
    (line,) = _failed(result.output)
    assert "-\\xe9t\\xe9" in line and "not valid UTF-8" in line, line
    assert "\udce9" not in result.output
    assert len(DataDir.open(tmp_path / "d2").manifest) == 2


# --------------------------------------------------------------------------- item 10: a full disk in separate


def test_a_full_disk_met_by_libsndfile_is_a_disk_full_error(tmp_path, monkeypatch):
    """Where no small filesystem can be mounted: libsndfile's "System error." with ENOSPC left in
    errno becomes DiskFullError naming the file, and the temporary file is removed."""
    import errno

    import soundfile

    from stemforge.core import audio
    from stemforge.core.errors import DiskFullError

    def full(self, data):
        soundfile._ffi.errno = errno.ENOSPC
        raise soundfile.LibsndfileError(2, "")  # SF_ERR_SYSTEM: "System error."

    monkeypatch.setattr(soundfile.SoundFile, "write", full)
    target = tmp_path / "stem.wav"
    writer = audio.AudioWriter(target, 16000, 1)
    with pytest.raises(DiskFullError, match=r"stem\.wav: disk full \(No space left on device\)"):
        writer.write(np.zeros((1, 1000), np.float32))
    writer.abort()
    assert os.listdir(tmp_path) == []
    with pytest.raises(DiskFullError, match=r"other\.wav: disk full"):
        audio.write(tmp_path / "other.wav", np.zeros(1000, np.float32), 16000)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- item 15: progress in a log


def test_progress_off_a_terminal_is_plain_lines_at_an_interval():
    """Issue 23 item 15: the one mechanism behind every batch command's progress. Off a terminal:
    no carriage return, a line at the start, one per interval, one at the end."""
    import io

    from stemforge.console.progress import LINE_INTERVAL_S, Progress

    now = [0.0]
    stream = io.StringIO()
    bar = Progress("ingest mir1k", 1000, "tracks", stream=stream, clock=lambda: now[0])
    for i in range(1000):  # 0.2 s per track: 200 s in all
        now[0] += 0.2
        bar.update()
        if i == 499:
            bar.line("failed: x.wav: file not found")
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    progress = [line for line in lines if line.startswith("ingest mir1k: ")]
    assert 2 + int(200 // LINE_INTERVAL_S) - 1 <= len(progress) <= 2 + int(200 // LINE_INTERVAL_S), lines
    assert progress[0] == "ingest mir1k: 0/1,000 tracks (0%)  elapsed 0:00:00  left -"
    assert progress[-1] == "ingest mir1k: 1,000/1,000 tracks (100%)  done in 0:03:20"
    assert "failed: x.wav: file not found" in lines


# --------------------------------------------------------------------------- item 10: failures said once, summarized


def test_failures_are_said_once_and_summarized_past_twenty(tmp_path):
    """Issue 23 item 10: 100,000 missing files in a CSV printed every failure twice (32.5 MB of
    stderr). Now each failure once, as it happens; past 20 only a count by reason on stderr and
    the full list in a file under the DataDir's logs/ (here with 150 missing rows)."""
    from stemforge.console.failures import SHOWN
    from stemforge.store import DataDir

    v, a = tone(tmp_path / "v.wav", freq=500), tone(tmp_path / "a.wav", freq=110)
    rows = [f"{v},{a},good"] + [f"missing{i}.wav,{a},m{i}" for i in range(150)]
    (tmp_path / "few.csv").write_text("vocals,accompaniment,track_id\n" + "\n".join(rows[:4]) + "\n")
    (tmp_path / "many.csv").write_text("vocals,accompaniment,track_id\n" + "\n".join(rows) + "\n")
    data = tmp_path / "data"
    runner = CliRunner()
    # a few: each named once (before, once as it happened and again in the closing list)
    result = runner.invoke(app, ["ingest", "csv", str(tmp_path / "few.csv"), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 1, result.output
    for i in range(3):
        assert result.output.count(f"missing{i}.wav") == 1, result.output
    assert "3 tracks failed (named above, one line each); the other tracks were stored" in result.output
    # many: the first 20 named, the rest counted by reason, the whole list in a file
    result = runner.invoke(app, ["ingest", "csv", str(tmp_path / "many.csv"), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert len(_failed(result.output)) == SHOWN
    assert sum(result.output.count(f"missing{i}.wav") for i in range(150)) == SHOWN
    summary = [line for line in result.output.splitlines() if line.startswith("... and ")]
    assert summary == [f"... and {150 - SHOWN} more failed (reasons: file not found x {150 - SHOWN}); 150 tracks failed in all; the other tracks were stored"]
    (listing,) = (data / "logs").glob("ingest-csv-*-failed.txt")
    assert f"the full list, one line each: {listing}" in result.output
    listed = listing.read_text().splitlines()
    assert len(listed) == 150 and all("file not found" in line for line in listed)
    assert len(result.output) < 12_000
    assert len(DataDir.open(data).manifest) == 1


def test_separate_and_evaluate_summarize_their_failures_too(tmp_path, tiny_checkpoint):
    from stemforge.console.failures import SHOWN

    missing = [str(tmp_path / f"gone{i}.wav") for i in range(30)]
    good = tone(tmp_path / "tune.wav")
    out = tmp_path / "sep"
    result = CliRunner().invoke(app, ["separate", str(tiny_checkpoint), str(good), *missing, "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert len(_failed(result.output)) == SHOWN
    assert sum(result.output.count(f"gone{i}.wav") for i in range(30)) == SHOWN  # the table lists no more of them
    assert f"... and {30 - SHOWN} more failed (reasons: file not found x {30 - SHOWN}); 30 files failed in all" in result.output
    (listing,) = out.glob("separate-*-failed.txt")
    assert len(listing.read_text().splitlines()) == 30


def test_failures_group_reasons_and_write_the_whole_list(tmp_path):
    """The one mechanism (stemforge/console/failures.py) every batch command reports through."""
    from stemforge.console.failures import SHOWN, Failures, reason_of

    assert reason_of("/x/a.wav: file not found (vocals of l.csv line 5)") == "file not found"
    assert reason_of("/x/b.flac: sample rate 655350 Hz is above 384000 Hz") == "sample rate N Hz is above N Hz"
    shown: list[str] = []
    failures = Failures(shown.append, lambda: tmp_path / "logs" / "x-failed.txt", "tracks")
    assert failures.summary() == []
    for i in range(SHOWN + 40):
        failures.add(f"/songs/s{i}.wav: " + ("file not found" if i % 4 else "not a regular file (a FIFO)"))
    assert shown == [f"failed: /songs/s{i}.wav: " + ("file not found" if i % 4 else "not a regular file (a FIFO)") for i in range(SHOWN)]
    first, where = failures.summary("the others were stored")
    assert first == f"... and 40 more failed (reasons: file not found x 30, not a regular file x 10); {SHOWN + 40} tracks failed in all; the others were stored"
    assert where == f"the full list, one line each: {tmp_path / 'logs' / 'x-failed.txt'}"
    assert len((tmp_path / "logs" / "x-failed.txt").read_text().splitlines()) == SHOWN + 40


# --------------------------------------------------------------------------- item 14: augment says what it will write


def test_augment_says_bytes_free_space_and_reuse_before_writing(tmp_path):
    """Issue 23 item 14: `augment --hours 17` on 30 s of audio reused each song about 2,000 times
    and wrote 16.9 GB without a word. Now, before the first remix: the bytes it will write, the
    free space, how often each source is used, and a warning past REUSE_WARNING; the run goes on."""
    from stemforge.augment.remix import REUSE_WARNING

    data = _train_datadir(tmp_path)  # 15 s of audio per role: 37 remixes of 4.5 s reuse each second 11 times
    result = CliRunner().invoke(app, ["augment", str(data), "--hours", "0.05", "--segment-seconds", "4.5", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first_progress = next(i for i, line in enumerate(lines) if line.startswith("augment: 0/"))
    say = lines[:first_progress]
    (size,) = [line for line in say if line.startswith("augment: 37 remixes of 4.5 s to write")]
    assert "about " in size and " free on the DataDir's disk" in size, size
    (uses,) = [line for line in say if "each is used about" in line]
    assert "3 vocal and 3 accompaniment source track(s)" in uses and "about 12.3 times as vocals" in uses, uses
    assert "each second of their audio in about 11.1 and 11.1 remixes" in uses, uses
    (warning,) = [line for line in say if line.startswith("warning: ")]
    assert f"about 11 remixes (more than {REUSE_WARNING:g})" in warning, warning
    # what was said is what was written (the shard bytes, within 10%)
    import re

    said = float(re.search(r"about ([\d.]+) MB", size)[1]) * 1e6
    written = sum(p.stat().st_size for p in (data / "shards").glob("remix-*.h5"))
    assert abs(written - said) < 0.1 * said, (written, said)


def test_augment_refuses_when_the_disk_cannot_hold_it_and_writes_nothing(tmp_path, monkeypatch):
    """When the disk cannot hold the remixes and the margin: one line, exit 3, nothing written
    (not even the drop of stale remixes). `stemforge augment --hours 17` as written (the DataDir
    from $STEMFORGE_DATA) reaches that check."""
    from stemforge.augment import remix

    data = _train_datadir(tmp_path, seconds=10.0)  # the 30 s of source audio
    before = _snapshot(data)
    monkeypatch.setattr(remix, "free_bytes", lambda path: 50_000_000)  # 50 MB free
    monkeypatch.setenv("STEMFORGE_DATA", str(data))
    result = CliRunner().invoke(app, ["augment", "--hours", "17"])
    line = one_line_error(result, 3)
    assert line.startswith(f"error: {data}: disk full (not enough room: 6,117 remixes need about "), line
    assert "50.0 MB free); nothing was written: free space, or ask for fewer --hours" in line, line
    assert "augment: " not in result.output  # refused before anything was said or written
    assert _snapshot(data) == before
