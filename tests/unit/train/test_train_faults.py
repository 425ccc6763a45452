"""What users and faults hit while training (issue 23): the run folder's lock and names, checksummed
checkpoints, the world size of a resumed run, the manifest read once, a frozen or dead peer, a full
disk, SIGTERM, what the command says while loading and on a CPU, and its summary. The commands run
as real processes: tests/integration/test_train_faults_commands.py."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import signal
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

from support.train_faults import TINY_ARGS, _errors

TINY = UNetConfig(width=0.125)

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-2, val_every=100, val_crops=8, checkpoint_every=100, log_every=2,
                tensorboard=False, data_mode="memory", deterministic=True, seed=11)
    base.update(kw)
    return TrainConfig(**base)


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
    # The test's own reads use the full unpickler (its own files, about twice as fast as the
    # weights-only one: 180 damages took most of this module's time); load_checkpoint keeps its own.
    original = torch.load(io.BytesIO(good), weights_only=False)
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
                loaded = torch.load(io.BytesIO(bad), weights_only=False)
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


# --------------------------------------------------------------------------------------------
# 1. One run per folder: a lock, and default names that cannot collide
# --------------------------------------------------------------------------------------------


def test_a_run_folder_in_use_is_refused_naming_the_holder(datadir, tmp_path):
    from stemforge.core.errors import RunLockedError
    from stemforge.train.loop import run
    from stemforge.train.rundir import RunDir
    from stemforge.train.setup import resolve_run

    out = tmp_path / "run"
    with RunDir(out).lock():  # another run holds it
        for resume in (False, True):
            with pytest.raises(RunLockedError) as info:
                train(datadir, out, _config(steps=1), TINY, device="cpu", resume=resume)
            assert str(out) in str(info.value) and f"pid {os.getpid()}" in str(info.value)
    # resolved while free, then another run takes the folder: the loop's own lock refuses
    spec = resolve_run(datadir, out, _config(steps=1), TINY, device="cpu")
    with RunDir(out).lock():
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            run(spec)
    assert not (out / "last.pt").exists() and not (out / "metrics.csv").exists()
    # ... or ran to its end meanwhile: the new run does not overwrite it
    train(datadir, out, _config(steps=1), TINY, device="cpu")
    stamp = (out / "last.pt").stat().st_mtime_ns
    with pytest.raises(StemforgeError, match="already holds a run"):
        run(spec)
    assert (out / "last.pt").stat().st_mtime_ns == stamp
    # a resume resolved before another session replaced last.pt is refused too
    resumed = resolve_run(datadir, out, _config(steps=2), TINY, device="cpu", resume=True)
    train(datadir, out, _config(steps=3), TINY, device="cpu", resume=True)
    with pytest.raises(StemforgeError, match="written by another run"):
        run(resumed)
    assert load_checkpoint(out / "last.pt").step == 3


def test_default_run_names_sort_by_time_and_differ_per_process():
    import datetime as dt

    from stemforge.train.rundir import run_name

    now = dt.datetime(2026, 12, 6, 23, 30, 0, tzinfo=dt.timezone.utc)
    same_second = {run_name(now, pid) for pid in (4242, 4243, 17)}
    assert len(same_second) == 3  # two commands started in the same second get two folders
    later = run_name(now + dt.timedelta(seconds=1), 1)
    assert all(name < later for name in same_second)  # sorted by time first
    assert run_name(now, 4242) == "20261206-233000-4242"


# --------------------------------------------------------------------------------------------
# 8. A full disk while a checkpoint is written
# --------------------------------------------------------------------------------------------


def test_a_full_disk_at_a_checkpoint_is_one_line_and_last_pt_survives(datadir, tmp_path, monkeypatch):
    import contextlib
    import errno

    import stemforge.model.checkpoint as checkpoint
    from stemforge.cli.main import app

    real_open = checkpoint.atomic_open
    written = []

    class Full:
        """A file on a disk that fills after 64 KiB."""

        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data) -> int:
            self.n += len(data)
            if self.n > 65536:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    @contextlib.contextmanager
    def filling(path, *args, **kwargs):
        with real_open(path, *args, **kwargs) as f:
            written.append(Path(path).name)
            yield Full(f) if written.count("last.pt") == 2 and Path(path).name == "last.pt" else f

    monkeypatch.setattr(checkpoint, "atomic_open", filling)
    out = tmp_path / "run"
    args = ["train", str(datadir.path), "--out", str(out), "--steps", "6", "--checkpoint-every", "2",
            "--val-every", "100", "--log-every", "2", "--width", "0.125", "--batch-size", "2", "--device", "cpu",
            "--no-tensorboard"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 3, r.output
    errors = _errors(r.output)
    assert len(errors) == 1 and f"{out / 'last.pt'}: disk full" in errors[0], r.output
    assert "Traceback" not in r.output
    assert load_checkpoint(out / "last.pt").step == 2  # the previous last.pt, whole
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.setattr(checkpoint, "atomic_open", real_open)  # space freed
    r = CliRunner().invoke(app, ["train", str(datadir.path), "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out / "last.pt").step == 6


# --------------------------------------------------------------------------------------------
# 11. SIGTERM is a Ctrl-C; the summary names only the files that exist
# --------------------------------------------------------------------------------------------


def test_sigterm_stops_between_steps_like_ctrl_c(datadir, tmp_path):
    def terminate(event):
        if event.kind == "step" and event.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    def outside(signum, frame):  # what SIGTERM does outside the loop (the CLI's own handler, or death)
        raise AssertionError("SIGTERM was not handled by the training loop")

    before = signal.signal(signal.SIGTERM, outside)
    try:
        result = train(datadir, tmp_path / "run", _config(steps=10), TINY, progress=terminate, device="cpu")
        assert signal.getsignal(signal.SIGTERM) is outside  # the handler found is back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert result.interrupted and result.stopped_by == "SIGTERM" and result.step == 3
    assert load_checkpoint(result.last_checkpoint).step == 3


def test_summary_names_model_pt_only_when_it_exists(tmp_path, capsys):
    from stemforge.train.config import TrainResult

    (tmp_path / "last.pt").write_bytes(b"x")
    result = TrainResult(
        out_dir=tmp_path, step=7, total_steps=10, interrupted=True, last_checkpoint=tmp_path / "last.pt",
        best_checkpoint=tmp_path / "best.pt", model_path=tmp_path / "model.pt", model_weights="best",
        initial_val_loss=None, best_val_loss=None, best_step=None, final_val_loss=None, final_train_loss=None,
        patches_per_s=None, data_mode="memory", data_message="", device="cpu", world_size=1,
        metrics_path=tmp_path / "metrics.csv", tensorboard_dir=None, loss_plot=tmp_path / "loss.png",
        stopped_by="SIGINT",
    )
    text = "\n".join(result.summary_lines())
    assert "model (best)" not in text and "model.pt" in text and "none yet" in text, text
    assert "last.pt holds the weights at step 7" in text
    (tmp_path / "model.pt").write_bytes(b"x")
    assert f"model (best):" in "\n".join(result.summary_lines())


# --------------------------------------------------------------------------------------------
# 12, 13, 17. What the command says: loading, a GPU-sized run on a CPU, the summary
# --------------------------------------------------------------------------------------------


def test_loading_is_said_with_progress_before_training(datadir, tmp_path):
    from stemforge.cli.main import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(datadir.path), "--out", str(out), "--steps", "3", "--log-every", "2",
                                 *TINY_ARGS])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("train: loading the train split into RAM"))
    done = next(i for i, line in enumerate(lines) if line.startswith("train: loaded 4 tracks"))
    data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert start < done < data, r.output
    assert "4 tracks, 0.7 min" in lines[start], lines[start]
    # 17: the summary's values form one column, and its last train loss is metrics.csv's last row's
    summary = lines[next(i for i, line in enumerate(lines) if line.startswith("steps:")):]
    columns = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in summary if ":" in line}
    assert len(columns) == 1, summary
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    last_loss = [row["train_loss"] for row in rows if row["train_loss"]][-1]
    assert next(line for line in summary if line.startswith("train loss (last interval):")).endswith(f" {last_loss}")


def test_loading_lines_in_a_log_and_a_bar_on_a_terminal(monkeypatch):
    import io

    import stemforge.console.progress as progress
    from stemforge.train.config import TrainEvent

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    shown = progress.TrainProgress(stream=log, tty=False)
    for done, t in ((0, 100.0), (1, 104.0), (2, 111.0), (3, 112.0), (4, 125.0)):
        clock[0] = t
        shown(TrainEvent("loading", 0, 10, message="the train split into RAM: 4 tracks, 17.0 h, 3.90 GiB", done=done, total=4))
    assert log.getvalue().splitlines() == [
        "train: loading the train split into RAM: 4 tracks, 17.0 h, 3.90 GiB",
        "train: loading: 2/4 tracks (50%)  elapsed 0:00:11",
        "train: loaded 4 tracks in 0:00:25",
    ]
    monkeypatch.undo()  # tqdm reads the same clock
    term = io.StringIO()
    shown = progress.TrainProgress(stream=term, tty=True)
    for done in range(5):
        shown(TrainEvent("loading", 0, 10, message="the train split into RAM", done=done, total=4))
    shown.close()
    text = term.getvalue()
    assert "\rloading:" in text and "/4 " in text, text  # a bar frame, counting tracks
    assert text.splitlines()[0] == "train: loading the train split into RAM" and "train: loaded 4 tracks in" in text


def test_a_gpu_sized_run_on_a_cpu_says_what_it_costs_and_what_a_cpu_run_is(datadir, tmp_path):
    events = []

    def watch(event):
        events.append(event)
        if event.kind == "note" or (event.kind == "step" and event.step == 3):
            os.kill(os.getpid(), signal.SIGINT)

    train(datadir, tmp_path / "big", _config(steps=100000, log_every=100), UNetConfig(width=0.5), progress=watch,
          device="cpu")
    notes = [e.message for e in events if e.kind == "note"]
    assert len(notes) == 1 and events[[e.kind for e in events].index("note")].step == 2, notes
    assert "GPU-sized" in notes[0] and "--width 0.25 --batch-size 16 --steps 2000" in notes[0]
    assert " h;" in notes[0] and "99,998 steps left" in notes[0], notes[0]
    small = []
    train(datadir, tmp_path / "small", _config(steps=4), TINY, progress=small.append, device="cpu")
    assert not any(e.kind == "note" for e in small)


def test_an_interrupted_session_reports_throughput_and_the_last_row_loss(datadir, tmp_path):
    def interrupt(event):
        if event.kind == "step" and event.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    result = train(datadir, tmp_path / "run", _config(steps=100, log_every=2), TINY, progress=interrupt, device="cpu")
    assert result.interrupted and result.step == 3
    assert result.patches_per_s is not None and result.patches_per_s > 0  # within the warm-up: timed from the start
    rows = list(csv.DictReader(open(result.metrics_path)))
    assert rows[-1]["step"] == "3" and float(rows[-1]["train_loss"]) == pytest.approx(result.final_train_loss, rel=1e-5)


@pytest.mark.parametrize("text", [
    "Application timeout caused pair closure",  # Gloo, inside DDP's buffer broadcast (seen under load)
    "Timed out waiting 30000ms for send operation to complete",
])
def test_a_failed_collective_is_a_lost_peer_whatever_gloo_words_it(text):
    """Gloo words a timed-out peer several ways, one of them ("Application timeout caused pair
    closure", raised by DDP's forward) without naming gloo: each is a PeerLostError (exit 3)
    saying what happened, and an unrelated RuntimeError, or any error of a single process, is not.
    (A closed connection is the survivor test's, tests/integration/test_train_faults_commands.py.)"""
    from stemforge.core.errors import PeerLostError
    from stemforge.train.distributed import DistributedEnv, ProcessGroup

    group = ProcessGroup(DistributedEnv(rank=0, world_size=2), torch.device("cpu"), timeout_s=30)
    lost = group.peer_lost(RuntimeError(text), step=7)
    assert isinstance(lost, PeerLostError)
    assert str(lost).startswith("rank 0 at step 7: ")
    assert "no answer from another process within 30 s (--dist-timeout)" in str(lost), str(lost)
    assert group.peer_lost(RuntimeError("CUDA out of memory"), step=7) is None
    single = ProcessGroup(DistributedEnv(), torch.device("cpu"))
    assert single.peer_lost(RuntimeError(text), step=7) is None
