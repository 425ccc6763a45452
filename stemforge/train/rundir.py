"""The run folder: what a training run writes, and where (rank 0 only).

::

    last.pt          the state to resume from: weights, optimizer (Adam) and GradScaler state,
                     step, TrainConfig, RNG state, data manifest hash, the schedule's state
                     (every checkpoint_every steps, at the end, and on Ctrl-C)
    best.pt          the weights with the lowest validation loss so far (no optimizer state);
                     not written without validation (no ``valid`` rows, or ``val_crops`` 0)
    model.pt         the file ``stemforge separate`` takes: a hard link to best.pt (a copy
                     where links are refused); without validation, the last weights
                     (``TrainResult.model_weights`` says which)
    metrics.csv      step, epoch, train_loss, val_loss, patches_per_s, lr, elapsed_s
    loss.png         train and validation loss against step
    tensorboard/     the same scalars for TensorBoard
    train.json       the configurations and the data it was trained on, human readable
    .train.lock      the lock a running ``stemforge train`` holds on the folder (its pid inside)

Every file appears whole or not at all (:mod:`stemforge.core.files`); metrics.csv grows by
appended rows, and a resumed run first rewrites it without the rows past its step.

One run at a time: a run holds an exclusive ``fcntl.flock`` on ``.train.lock`` from before its
first file until it ends (:meth:`RunDir.lock`; the kernel releases it however the process ends),
and another run into the same folder is refused with a
:class:`~stemforge.core.errors.RunLockedError` naming the folder and the holder's pid.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import json
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from torch import nn

from stemforge import __version__
from stemforge.core.errors import RunLockedError, StemforgeError
from stemforge.core.files import FILE_MODE, atomic_open, atomic_path, disk_full, is_disk_full, write_text
from stemforge.model.checkpoint import save_checkpoint
from stemforge.train.plots import plot_loss

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.train.setup import RunSpec

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.csv"
PLOT_NAME = "loss.png"
TENSORBOARD_DIR = "tensorboard"
RUN_INFO_NAME = "train.json"
LOCK_NAME = ".train.lock"
METRICS_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "patches_per_s", "lr", "elapsed_s", "val_gnsdr_vocals",
                   "val_gnsdr_accompaniment")


#: Where ``stemforge train`` puts a run not given ``--out`` (relative to the working folder).
RUNS_DIR = "runs"


def run_name(now: datetime.datetime, pid: int) -> str:
    """The folder name of a new run without ``--out``: the UTC time to the second, then the
    process id (``20261206-233000-4242``), so that names sort by time and two runs started in
    the same second on one machine never share a folder."""
    return f"{now.astimezone(datetime.timezone.utc):%Y%m%d-%H%M%S}-{pid}"


def default_run_dir(resume: bool, distributed: bool = False) -> Path:
    """``runs/<UTC timestamp>-<pid>`` for a new run (:func:`run_name`); for ``resume``, the
    newest run under ``runs/`` (StemforgeError when there is none). A new ``distributed`` run
    has no default (StemforgeError): every process must agree on its folder."""
    if distributed and not resume:
        raise StemforgeError("under torchrun pass --out (every process must agree on the run folder)")
    if resume:
        runs = sorted(Path(RUNS_DIR).glob(f"*/{LAST_NAME}"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise StemforgeError(f"--resume without --out: no run under ./{RUNS_DIR}/ to resume (pass --out)")
        return runs[-1].parent
    return Path(RUNS_DIR) / run_name(datetime.datetime.now(datetime.timezone.utc), os.getpid())


class RunDir:
    """The paths of a run folder and the writing of its files.

    Attributes:
        path: the folder; last, best, model, metrics, plot, tensorboard, info: its files.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.last = self.path / LAST_NAME
        self.best = self.path / BEST_NAME
        self.model = self.path / MODEL_NAME
        self.metrics = self.path / METRICS_NAME
        self.plot = self.path / PLOT_NAME
        self.tensorboard = self.path / TENSORBOARD_DIR
        self.info = self.path / RUN_INFO_NAME
        self.lock_path = self.path / LOCK_NAME

    def holds_run(self) -> bool:
        """Whether a run was started here (it has a last.pt)."""
        return self.last.exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's run lock for the block (the folder is created): an exclusive
        ``flock`` on ``.train.lock``, with this process's pid written in it. RunLockedError,
        naming the folder and the holder's pid, when another process holds it; StemforgeError
        when the folder or its lock file cannot be created (a read-only folder, say)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.lock_path, exc) from None
            raise StemforgeError(f"{self.lock_path}: cannot create the run folder's lock: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise self._locked(holder) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def check_unlocked(self) -> None:
        """RunLockedError when another process holds the folder's run lock (looked at, not
        taken: nothing is created)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no lock file: no run ever held it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._locked(_holder(fd)) from None
        finally:
            os.close(fd)  # closing drops the shared lock if it was taken

    def _locked(self, holder: str) -> RunLockedError:
        return RunLockedError(
            f"{self.path}: another `stemforge train` (pid {holder}) is running in this run folder; wait for it to end, "
            f"or choose another --out"
        )

    def write_info(self, spec: "RunSpec", data_mode: str) -> None:
        """train.json: the configurations, the data and where the run trains."""
        info = {
            "stemforge_version": __version__,
            "data": str(Path(spec.datadir.path).resolve()),
            "manifest_hash": spec.manifest_hash,
            "spectrogram_config": spec.datadir.config.to_dict(),
            "train_config": spec.train_config.to_dict(),
            "unet_config": spec.unet_config.to_dict(),
            "device": str(spec.device),
            "world_size": spec.env.world_size,
            "data_mode": data_mode,
            "init": spec.init_info,
        }
        write_text(self.info, json.dumps(info, indent=2, sort_keys=True) + "\n")

    def save_best(self, spec: "RunSpec", model: nn.Module, step: int, val: float | None, sdr: dict | None = None) -> None:
        """best.pt (the weights, no optimizer state) and model.pt, the same file; ``sdr``: the
        valid split's GNSDR ``{stem: dB}`` when it picked them (``extra.val_gnsdr``)."""
        extra = {"val_loss": val, "train_config": spec.train_config.to_dict(), "init": spec.init_info}
        if sdr is not None:
            extra["val_gnsdr"] = dict(sdr)
        self._save(self.best, spec, model, step, extra=extra)
        # a hard link to best.pt where the file system allows one (best.pt is fsynced already)
        with atomic_path(self.model, fsync=False) as tmp:
            tmp.unlink()
            try:
                os.link(self.best, tmp)
            except OSError:
                shutil.copyfile(self.best, tmp)

    def save_last(self, spec: "RunSpec", model: nn.Module, step: int, optimizer_state: dict, scaler_state: dict | None,
                  rng_state: dict, extra: dict[str, Any]) -> Path:
        """last.pt, the state to resume from; returns its path."""
        self._save(self.last, spec, model, step, optimizer_state=optimizer_state, scaler_state=scaler_state,
                   rng_state=rng_state, extra=extra)
        return self.last

    def save_model_last(self, spec: "RunSpec", model: nn.Module, step: int) -> None:
        """model.pt as the last weights (a run without validation has no best to choose)."""
        self._save(self.model, spec, model, step, extra={
            "val_loss": None, "weights": "last (no validation)", "train_config": spec.train_config.to_dict(),
            "init": spec.init_info,
        })

    def _save(self, path: Path, spec: "RunSpec", model: nn.Module, step: int, **kwargs: Any) -> None:
        save_checkpoint(path, model, spec.unet_config, spec.input_config, spec.unet_config.target, step,
                        manifest_hash=spec.manifest_hash, **kwargs)

    def draw_loss(self, title: str) -> None:
        """loss.png from metrics.csv."""
        plot_loss(self.metrics, self.plot, title=title)


class Metrics:
    """metrics.csv (append; a resumed run's rows past its step dropped) and TensorBoard scalars.

    A context manager (or call :meth:`close`). TensorBoard writes its event files on a thread of
    its own; a full disk met there is raised in the training thread at the next write, as a
    :class:`~stemforge.core.errors.DiskFullError` naming the tensorboard folder, and that thread's
    own report (a traceback on stderr) is left out while the metrics are open.

    Args:
        rundir: the run folder.
        start_step: the step the session starts at (0: a new run, the file starts empty).
        tensorboard: also write TensorBoard event files (under ``rundir.tensorboard``).
    """

    def __init__(self, rundir: RunDir, start_step: int, tensorboard: bool):
        self.path = rundir.metrics
        self.tensorboard_dir = rundir.tensorboard
        rows = []
        if start_step > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
        with atomic_open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in METRICS_COLUMNS})
        self._file = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=METRICS_COLUMNS)
        self._tb = None
        self._previous_hook = None
        if tensorboard:
            # imported only when asked for: TensorBoard's writer pulls in its protobuf stack
            from torch.utils.tensorboard import SummaryWriter

            self._previous_hook = threading.excepthook
            threading.excepthook = self._thread_failed
            try:
                self._tb = self._tensorboard(SummaryWriter, log_dir=str(rundir.tensorboard),
                                             purge_step=start_step if start_step > 0 else None)
            except BaseException:
                self._file.close()
                self._restore_hook()
                raise

    def _thread_failed(self, args: threading.ExceptHookArgs) -> None:
        """threading.excepthook while open: TensorBoard's writer thread meeting a full disk is
        reported by :meth:`_tensorboard` in the training thread; anything else as before."""
        if type(args.thread).__module__.startswith("tensorboard") and is_disk_full(args.exc_value):
            return
        (self._previous_hook or threading.__excepthook__)(args)

    def _restore_hook(self) -> None:
        if self._previous_hook is not None and threading.excepthook == self._thread_failed:
            threading.excepthook = self._previous_hook
        self._previous_hook = None

    def _tensorboard(self, call, *args: Any, **kwargs: Any) -> Any:
        """``call(...)`` of TensorBoard's writer; a full disk (met here or by its thread, which
        raises it again here) becomes a DiskFullError naming the tensorboard folder."""
        try:
            return call(*args, **kwargs)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.tensorboard_dir, exc) from None
            raise

    def write(self, row: dict[str, Any]) -> None:
        """One row (missing columns empty; floats with 6 significant digits)."""
        self._csv.writerow({k: ("" if row.get(k) is None else _fmt(row[k])) for k in METRICS_COLUMNS})
        self._file.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/valid"), ("patches_per_s", "throughput/patches_per_s")):
                if row.get(key) is not None:
                    self._tensorboard(self._tb.add_scalar, tag, float(row[key]), step)

    def close(self, quiet: bool = False) -> None:
        """Close metrics.csv and the TensorBoard writer; ``quiet``: while another error is on its
        way out, the writer's own failure to flush (a full disk again) does not replace it."""
        try:
            self._file.close()
            if self._tb is not None:
                tb, self._tb = self._tb, None
                try:
                    self._tensorboard(tb.flush)
                finally:
                    self._tensorboard(tb.close)
        except (OSError, StemforgeError):
            if not quiet:
                raise
        finally:
            self._restore_hook()

    def __enter__(self) -> "Metrics":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(quiet=exc_type is not None)


def _holder(fd: int) -> str:
    """The pid written in a lock file (``unknown`` when it holds none)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
