"""The training loop: Adam on the L1 loss of ``mask * mixture`` against the target magnitude.

``train(datadir, out_dir, train_config, unet_config)`` trains the U-Net on the ``train`` rows
of a DataDir, validates on fixed crops of its ``valid`` rows and writes, under ``out_dir``::

    last.pt          the state to resume from: weights, optimizer (Adam) and GradScaler state,
                     step, TrainConfig, RNG state, data manifest hash (every checkpoint_every
                     steps, at the end, and on Ctrl-C)
    best.pt          the weights with the lowest validation loss so far (no optimizer state);
                     not written without validation (no ``valid`` rows, or ``val_crops`` 0)
    model.pt         the file ``stemforge separate`` takes: a hard link to best.pt (a copy
                     where links are refused); without validation, the last weights
                     (``TrainResult.model_weights`` says which)
    metrics.csv      step, epoch, train_loss, val_loss, patches_per_s, lr, elapsed_s
    loss.png         train and validation loss against step
    tensorboard/     the same scalars for TensorBoard
    train.json       the configurations and the data it was trained on, human readable

Reproducibility: every random draw comes from a generator seeded by ``(seed, rank, step)``
(:func:`stemforge.train.data.step_seed_sequence`): the crops of a step, its dropout masks, the
initial weights (from ``seed``). Nothing reads torch's or numpy's global random state. So
``resume=True`` continues from ``last.pt`` exactly where the run stopped: on the CPU with
deterministic algorithms the weights after resuming are bit-for-bit those of an uninterrupted
run; the data mode (resident or streaming) and the number of loader workers do not change a
batch.

Several processes (``torchrun --nproc-per-node N -m stemforge train ...``): the environment's
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` turn on DistributedDataParallel (NCCL on CUDA, Gloo on the
CPU); each rank draws its own crops (seed, rank), validation is split across ranks, and only
rank 0 writes files and reports progress.

The run is an object, :class:`TrainingRun`, whose methods are its steps (open, train a step,
log, validate, checkpoint, finish); :func:`train` makes one and runs it. The batches come from
:mod:`stemforge.train.batches`, the throughput figures from :mod:`stemforge.train.throughput`.
The library never prints: ``progress(event)`` receives :class:`TrainEvent` values (the CLI
draws a bar on a terminal, plain lines in a log file).
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from stemforge.core.config import _Config
from stemforge.core.errors import CheckpointError, ConfigMismatchError, StemforgeError
from stemforge.train.batches import DATA_MODES
from stemforge.train.throughput import Throughput

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.csv"
PLOT_NAME = "loss.png"
TENSORBOARD_DIR = "tensorboard"
RUN_INFO_NAME = "train.json"
METRICS_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "patches_per_s", "lr", "elapsed_s")

PRECISIONS = ("fp32", "bf16", "fp16")
#: Learning-rate schedules: ``constant``; ``plateau`` (halved after ``patience`` validations
#: without a new best); ``cosine`` (from ``lr`` at step 0 to 0 at ``steps``).
LR_SCHEDULES = ("constant", "plateau", "cosine")
#: TrainConfig fields a resumed run must keep (they decide which batches and updates come next).
RESUME_FIXED = ("batch_size", "lr", "seed", "patch_frames", "min_vocal_db", "betas", "eps",
                "lr_schedule", "patience", "early_stop", "freeze_bn")


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to train (the model itself is described by :class:`~stemforge.model.config.UNetConfig`).

    Attributes:
        steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: crops per step per process (the seed: 64).
        lr: Adam learning rate (the seed: 1e-3); betas, eps: Adam's other parameters.
        seed: seeds the initial weights, the crops and the dropout masks.
        precision: ``fp32``; ``bf16`` or ``fp16`` run the forward pass under ``torch.autocast``
            (``fp16`` with a GradScaler). On the CPU only fp32 is fast.
        data_mode: ``memory`` copies the train magnitudes to the device (GPU memory, or RAM on
            the CPU) and cuts batches there; ``streaming`` reads crops from the shards in worker
            processes; ``auto`` picks memory when the data take at most half the free memory.
            ``memory`` falls back to streaming, with a message, when they do not fit.
        workers: loader processes in streaming mode (None:
            :func:`~stemforge.train.batches.loader_workers`: 1 on the CPU, else min(8, cores/2)).
        prefetch: batches each loader worker cuts ahead.
        compile: wrap the model in ``torch.compile``.
        patch_frames: frames per crop (128: the seed's).
        min_vocal_db: reject crops whose mean vocal energy is more than this many dB below the
            track's loudest vocal frame (e.g. -30); None keeps every crop.
        val_every: validate every this many steps (and at step 0 and at the end).
        val_crops: at most this many fixed validation crops.
        checkpoint_every: write last.pt every this many steps (and at the end).
        log_every: a metrics row (mean train loss since the last row) every this many steps.
        tensorboard: also write TensorBoard event files.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training (and
            cudnn.benchmark off): slower on a GPU, needed for bit-exact resume there.
        lr_schedule: ``constant`` (the seed's), ``plateau`` (the learning rate is halved when
            ``patience`` validations in a row bring no new best validation loss; the count
            restarts after each halving) or ``cosine`` (``lr * (1 + cos(pi * step / steps)) / 2``
            at each step: ``steps`` then cannot change on resume).
        patience: validations without a new best before ``plateau`` halves the rate.
        freeze_bn: keep every BatchNorm layer's running statistics as they are (the layers run in
            eval mode while training; their scale and shift still learn): what ``stemforge train
            --init`` does, so that a fine-tune starts from the source net's own statistics rather
            than from those of small batches (Spleeter's net, at batch 4, lost most of its accuracy
            within 4 steps at lr 1e-6 otherwise).
        early_stop: stop when this many validations in a row bring no new best validation loss
            (None: never). The run ends as if it had reached ``steps`` (last.pt written; a
            ``--resume`` of it has nothing left to do).

    ``lr_schedule``, ``patience`` and ``early_stop`` enter the hash only when they differ from
    their defaults, so the configurations of runs recorded before they existed keep their hashes.
    """

    _HASH_IF_SET: ClassVar[tuple[str, ...]] = ("lr_schedule", "patience", "early_stop", "freeze_bn")

    steps: int = 10000
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 0
    precision: str = "fp32"
    data_mode: str = "auto"
    workers: int | None = None
    prefetch: int = 3
    compile: bool = False
    patch_frames: int = 128
    min_vocal_db: float | None = None
    val_every: int = 500
    val_crops: int = 256
    checkpoint_every: int = 500
    log_every: int = 10
    tensorboard: bool = True
    deterministic: bool = False
    lr_schedule: str = "constant"
    patience: int = 5
    early_stop: int | None = None
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise StemforgeError(f"TrainConfig: {name} must be an integer >= {minimum}, got {v!r}")

        for name in ("batch_size", "prefetch", "patch_frames", "val_every", "checkpoint_every", "log_every", "patience"):
            positive_int(name)
        if self.early_stop is not None:
            positive_int("early_stop")
        if self.lr_schedule not in LR_SCHEDULES:
            raise StemforgeError(f"TrainConfig: lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        positive_int("steps", 0)
        positive_int("seed", 0)
        positive_int("val_crops", 0)
        if self.workers is not None:
            positive_int("workers", 0)
        for name in ("lr", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise StemforgeError(f"TrainConfig: {name} must be a positive number, got {v!r}")
            object.__setattr__(self, name, float(v))
        betas = tuple(float(b) for b in self.betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise StemforgeError(f"TrainConfig: betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", betas)
        if self.min_vocal_db is not None:
            object.__setattr__(self, "min_vocal_db", float(self.min_vocal_db))
        if self.precision not in PRECISIONS:
            raise StemforgeError(f"TrainConfig: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.data_mode not in DATA_MODES:
            raise StemforgeError(f"TrainConfig: data_mode must be one of {DATA_MODES}, got {self.data_mode!r}")
        if self.patch_frames % 64:
            raise StemforgeError(f"TrainConfig: patch_frames must be a multiple of 64, got {self.patch_frames}")

    def lr_at(self, step: int, current: float) -> float:
        """The learning rate of step ``step`` (0-based): ``current`` (the rate so far: ``lr``, or
        what ``plateau`` halved it to) except under ``cosine``, which is a function of the step."""
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / max(1, self.steps)))
        return current


@dataclass(frozen=True)
class TrainEvent:
    """What ``progress`` receives.

    ``kind``, in the order they come:
        ``"warning"`` (message: something the user should act on, e.g. no validation split),
        ``"data"`` (message: how batches are made), ``"validation"`` of the untrained model
        (step 0 of a new run), ``"start"`` (step: the first step of this session,
        total_steps), then ``"step"`` after each step (train_loss, patches_per_s and
        elapsed_s are set at log steps: mean loss and patches/s since the previous log step),
        ``"validation"`` (val_loss), ``"schedule"`` (message: the learning rate was halved, or
        training stops early), ``"checkpoint"`` (path), ``"interrupted"`` (path: the
        checkpoint written) and ``"done"`` (train_loss, val_loss: the latest; patches_per_s:
        the session's).

    ``elapsed_s``: seconds of training in the run so far (earlier sessions included).
    """

    kind: str
    step: int
    total_steps: int
    train_loss: float | None = None
    val_loss: float | None = None
    patches_per_s: float | None = None
    message: str = ""
    path: Path | None = None
    elapsed_s: float | None = None


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        out_dir: the run folder.
        step: steps taken in total (the checkpoint's step).
        total_steps: the configured number of steps.
        interrupted: stopped early by Ctrl-C (SIGINT); last.pt holds the state at ``step``.
        last_checkpoint, best_checkpoint, model_path: see the module docstring
            (best_checkpoint None without validation).
        model_weights: what model.pt holds: ``"best"`` (lowest validation loss) or
            ``"last"`` (no validation: the weights at ``step``).
        initial_val_loss: validation loss of the untrained model (step 0); None without a
            ``valid`` split.
        best_val_loss, best_step: the lowest validation loss and its step.
        final_val_loss: the validation loss at the last step (None without validation).
        final_train_loss: mean train loss of the last logged interval.
        patches_per_s: training throughput of this session, all processes together: crops per
            second of the step loop (data included), leaving out the warm-up steps
            (:data:`~stemforge.train.throughput.WARMUP_STEPS` at most), validation and checkpoint writing.
        data_mode: ``"memory"`` or ``"streaming"`` as used; data_message: why.
        device: the device of rank 0; world_size: processes.
        metrics_path, tensorboard_dir, loss_plot: the files written (tensorboard_dir None
            when disabled).
        stopped_early: the step at which early stopping ended the run (None: it did not).
        lr: the learning rate of the last step (after the schedule).
    """

    out_dir: Path
    step: int
    total_steps: int
    interrupted: bool
    last_checkpoint: Path
    best_checkpoint: Path | None
    model_path: Path
    model_weights: str
    initial_val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    final_val_loss: float | None
    final_train_loss: float | None
    patches_per_s: float | None
    data_mode: str
    data_message: str
    device: str
    world_size: int
    metrics_path: Path
    tensorboard_dir: Path | None
    loss_plot: Path
    stopped_early: int | None = None
    lr: float | None = None


ProgressFn = Callable[[TrainEvent], None]


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedEnv:
    """The process's place in a ``torchrun`` job (rank 0 of 1 when not launched by one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_env(environ: dict[str, str] | None = None) -> DistributedEnv:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise StemforgeError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise StemforgeError(f"bad distributed environment: RANK={rank} WORLD_SIZE={world}")
    return DistributedEnv(rank, world, local)


def check_epochs(epochs: float) -> float:
    """``epochs`` as a float; StemforgeError unless it is a positive finite number."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not (epochs > 0 and math.isfinite(epochs)):
        raise StemforgeError(f"epochs must be a positive number, got {epochs!r}")
    return float(epochs)


def steps_for_epochs(datadir, epochs: float, batch_size: int, patch_frames: int = 128, world_size: int = 1,
                     min_vocal_db: float | None = None) -> int:
    """Steps for ``epochs`` passes over the train split, one pass = as many crops (of all ranks
    together) as the split holds non-overlapping crops."""
    from stemforge.train.data import PatchSampler

    check_epochs(epochs)
    sampler = PatchSampler.from_datadir(datadir, patch_frames=patch_frames, min_vocal_db=min_vocal_db)
    return max(1, math.ceil(epochs * sampler.crops_per_epoch / (batch_size * world_size)))


# --------------------------------------------------------------------------------------------
# One optimizer step
# --------------------------------------------------------------------------------------------


class TrainStep:
    """Forward, L1 loss, backward and Adam update of one batch: the step :func:`train` runs
    (also what ``benchmarks/train.py`` times on in-memory tensors).

    Args:
        model: the U-Net, on ``device`` (possibly wrapped by DDP / torch.compile).
        parameters: its parameters (for the optimizer).
        config: the TrainConfig (lr, betas, eps, precision, seed).
        device: a ``torch.device``.
        rank: process rank (dropout streams differ per rank).
    """

    def __init__(self, model, parameters, config: TrainConfig, device, rank: int = 0):
        import torch

        self.model = model
        self.config = config
        self.device = device
        self.rank = rank
        kwargs: dict[str, Any] = {}
        if device.type == "cuda":
            kwargs["fused"] = True
        self.optimizer = torch.optim.Adam(parameters, lr=config.lr, betas=config.betas, eps=config.eps, **kwargs)
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.generator = torch.Generator(device=device)

    def __call__(self, step: int, mixture, target):
        """Run step ``step`` (0-based) on ``mixture``/``target`` ``[batch, 1, 512, P]`` float32;
        returns the loss (a detached 0-d tensor on the device; no synchronization)."""
        import torch

        from stemforge.train.data import step_torch_seed
        from stemforge.model import loss_fn

        self.generator.manual_seed(step_torch_seed(self.config.seed, self.rank, step))
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            mask = self.model(mixture, generator=self.generator)
        loss = loss_fn(mask.float(), mixture, target)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validation_loss(model, valset, device, batch_size: int, precision: str = "fp32", rank: int = 0, world_size: int = 1):
    """Mean L1 loss of ``model`` (eval mode, no dropout) over the crops of ``valset``
    (:class:`~stemforge.train.data.ValidationSet`); with several processes each takes every
    ``world_size``-th crop and the sums are all-reduced. Returns a float."""
    import torch

    from stemforge.model import loss_fn

    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    index = torch.arange(rank, len(valset), world_size)
    try:
        with torch.no_grad():
            for i in range(0, index.numel(), batch_size):
                sel = index[i : i + batch_size]
                mix = valset.mixture[sel].to(device).float()
                tgt = valset.target[sel].to(device).float()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    mask = model(mix)
                total[0] += loss_fn(mask.float(), mix, tgt).double() * sel.numel()
                total[1] += sel.numel()
    finally:
        model.train(was_training)
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(total)
    return float(total[0] / total[1]) if float(total[1]) > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# Files of a run
# --------------------------------------------------------------------------------------------


def run_checkpoint(out_dir: str | os.PathLike) -> Path:
    """The file a resume reads: ``out_dir/last.pt``."""
    return Path(out_dir) / LAST_NAME


def resume_configs(out_dir: str | os.PathLike):
    """``(TrainConfig, UNetConfig, step)`` stored in ``out_dir/last.pt``, so that a resumed run
    can default to the configuration it was started with.

    Raises:
        CheckpointError: no last.pt there, or it holds no TrainConfig.
    """
    from stemforge.model.checkpoint import load_checkpoint

    path = run_checkpoint(out_dir)
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from (train without --resume first)")
    ckpt = load_checkpoint(path)
    return stored_train_config(ckpt), ckpt.unet_config, ckpt.step


def stored_train_config(ckpt) -> TrainConfig:
    """The TrainConfig a run checkpoint records; CheckpointError when absent or unreadable."""
    stored = (ckpt.extra or {}).get("train_config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{ckpt.path}: holds no training configuration (not written by `stemforge train`?)")
    try:
        return TrainConfig.from_dict(stored)
    except (StemforgeError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: stored training configuration cannot be read: {exc}") from None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (hard link, else a copy), replacing it atomically."""
    import shutil

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class _Metrics:
    """metrics.csv (append; rows past the resumed step dropped) and TensorBoard scalars."""

    def __init__(self, out_dir: Path, start_step: int, tensorboard: bool):
        self.path = out_dir / METRICS_NAME
        rows = []
        if start_step > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRICS_COLUMNS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in METRICS_COLUMNS})
        self._file = open(self.path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=METRICS_COLUMNS)
        self.tb_dir = out_dir / TENSORBOARD_DIR if tensorboard else None
        self._tb = None
        if self.tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.tb_dir), purge_step=start_step if start_step > 0 else None)

    def write(self, row: dict) -> None:
        self._csv.writerow({k: ("" if row.get(k) is None else _fmt(row[k])) for k in METRICS_COLUMNS})
        self._file.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/valid"), ("patches_per_s", "throughput/patches_per_s")):
                if row.get(key) is not None:
                    self._tb.add_scalar(tag, float(row[key]), step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class _StopFlag:
    """Set by SIGINT (Ctrl-C) while training; a second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class TrainingRun:
    """One session of a training run (what :func:`train` runs): its steps are the methods.

    :meth:`run` calls, in order: :meth:`open` (data, model, optimizer, files); the validation
    of the untrained model (step 0 of a new run); then for each step :meth:`train_step`,
    :meth:`log` at log steps, :meth:`validate` at validation steps (which calls
    :meth:`after_validation`: the place for a learning-rate schedule or early stopping),
    :meth:`save_last` at checkpoint steps; and :meth:`finish`. The state they share lives in
    attributes (``step``, ``best_val``, ``final_train``, ...). The arguments are those of
    :func:`train`; checks that need no data (configuration, an existing run, the resume
    checkpoint) are made here, before anything is opened.
    """

    def __init__(self, datadir, out_dir: str | os.PathLike, train_config: TrainConfig, unet_config=None,
                 progress: ProgressFn | None = None, device: str | None = None, resume: bool = False,
                 init: str | os.PathLike | None = None, target: str | None = None):
        import dataclasses

        from stemforge.core.device import resolve_device
        from stemforge.model.checkpoint import load_checkpoint

        cfg = self.cfg = train_config
        self.datadir = datadir
        self._warnings: list[str] = []
        self.init_state = None
        self.init_info: dict[str, Any] | None = None
        if init is not None:
            if resume:
                raise StemforgeError("--init starts a new run from a checkpoint's weights; --resume continues last.pt: give one")
            unet_config, self.init_state, self.init_info, warns = init_from_checkpoint(init, datadir.config, unet_config, target)
            self._warnings += warns
        elif unet_config is None:
            raise StemforgeError("train: give a UNetConfig, or a checkpoint to start from (init)")
        elif target is not None and target != unet_config.target:
            unet_config = dataclasses.replace(unet_config, target=target)
        if unet_config.patch_frames != cfg.patch_frames:  # the model records the patches it was trained on
            unet_config = dataclasses.replace(unet_config, patch_frames=cfg.patch_frames)
        self.unet_config = unet_config
        check_model_fits(unet_config, datadir.config)
        # The magnitudes the model takes: the DataDir's, or plain |STFT| (stored values times the
        # track's norm) for a model trained on normalization "none" (Spleeter's, fine-tuned).
        self.input_config = datadir.config
        if self.init_info is not None and self.init_info.get("normalization") == "none":
            none = dataclasses.replace(datadir.config, normalization="none")
            if plain_input(datadir.config, none):
                self.input_config = none
        self.out_dir = Path(out_dir)
        self.env = distributed_env()
        self.dev = resolve_device(device, self.env.local_rank)
        self._progress = progress if (progress is not None and self.env.is_main) else None
        self.target = unet_config.target
        self.manifest_hash = datadir.manifest_hash
        self.last_path = self.out_dir / LAST_NAME
        self.best_path = self.out_dir / BEST_NAME
        self.model_path = self.out_dir / MODEL_NAME
        self.resumed = None
        if resume:
            if not self.last_path.exists():
                raise CheckpointError(f"{self.last_path}: no checkpoint to resume from (train without --resume first)")
            self.resumed = load_checkpoint(self.last_path)
            if plain_input(datadir.config, self.resumed.spectrogram_config):
                self.input_config = self.resumed.spectrogram_config
            _check_resume(self.resumed, cfg, unet_config, self.manifest_hash, datadir, self.input_config)
        elif self.last_path.exists():
            raise StemforgeError(
                f"{self.out_dir} already holds a run ({LAST_NAME}); continue it with --resume or choose another --out"
            )
        self.start_step = self.step = self.resumed.step if self.resumed is not None else 0
        extra = (self.resumed.extra or {}) if self.resumed is not None else {}
        self.best_val: float | None = extra.get("best_val_loss")
        self.best_step: int | None = extra.get("best_step")
        self.initial_val: float | None = extra.get("initial_val_loss")
        self.final_val: float | None = None
        self.final_train: float | None = None
        self._elapsed_before = float(extra.get("elapsed_s") or 0.0)
        self._closers: list[Callable[[], None]] = []
        # the learning-rate schedule and early stopping: restored on resume (the optimizer's
        # state holds the rate too; these are the counters that decide the next change)
        sched = extra.get("schedule") or {}
        self.lr = float(sched.get("lr", cfg.lr))
        self.plateau_count = int(sched.get("plateau_count", 0))
        self.since_best = int(sched.get("since_best", 0))
        self.stopped_early: int | None = sched.get("stopped_early")
        if self.resumed is not None and extra.get("init") is not None:
            self.init_info = extra["init"]

    # -- helpers ---------------------------------------------------------------------------

    def emit(self, kind: str, step: int | None = None, **fields) -> None:
        """Send a :class:`TrainEvent` to ``progress`` (rank 0 only)."""
        if self._progress is not None:
            self._progress(TrainEvent(kind, self.step if step is None else step, self.cfg.steps, **fields))

    def elapsed(self) -> float:
        """Seconds of training in this run, earlier sessions included."""
        return time.perf_counter() - self._clock0

    @property
    def validating(self) -> bool:
        """Whether this run has validation crops (a ``valid`` split and ``val_crops`` > 0)."""
        return self.valset is not None

    def synchronize(self) -> None:
        _synchronize(self.dev)

    # -- the steps -------------------------------------------------------------------------

    def open(self) -> None:
        """Cut the validation crops, open the batches, build the model and optimizer (restored
        on resume), open the metrics and write train.json."""
        import torch

        from stemforge.train.batches import open_batches
        from stemforge.train.data import PatchSampler, validation_set
        from stemforge.model import UNet

        cfg, env, dev = self.cfg, self.env, self.dev
        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        sampler = PatchSampler.from_datadir(self.datadir, patch_frames=cfg.patch_frames, min_vocal_db=cfg.min_vocal_db)
        self.steps_per_epoch = sampler.crops_per_epoch / (cfg.batch_size * env.world_size)  # float
        for message in self._warnings:
            self.emit("warning", message=message)
        plain = self.input_config is not self.datadir.config
        bins = {"first_bin": self.unet_config.first_bin, "n_bins": self.unet_config.n_bins, "plain": plain}
        self.valset = None
        if cfg.val_crops:
            self.valset = validation_set(self.datadir, self.target, patch_frames=cfg.patch_frames, max_crops=cfg.val_crops, **bins)
        if self.valset is None:
            self.emit("warning", message=self._no_validation_message())
        remaining = range(self.start_step, self.start_step if self.stopped_early is not None else cfg.steps)
        source = open_batches(
            self.datadir, sampler, self.target, dev, remaining, batch_size=cfg.batch_size,
            seed=cfg.seed, rank=env.rank, data_mode=cfg.data_mode, workers=cfg.workers, prefetch=cfg.prefetch, **bins,
        )
        self._closers.append(source.close)
        self.batches = iter(source)
        self.data_mode, self.data_message = source.mode, source.message
        if plain:
            self.data_message += "; plain |STFT| magnitudes (each track times its stored norm), as the init checkpoint was trained on"
        self.emit("data", message=self.data_message)

        model = UNet(self.unet_config, generator=torch.Generator().manual_seed(cfg.seed))
        if self.resumed is not None:
            model.load_state_dict(self.resumed.raw["model_state"])
        elif self.init_state is not None:  # fine-tuning: the initial weights are the checkpoint's
            model.load_state_dict(self.init_state)
            self.init_state = None
        model.to(dev)
        if dev.type == "cuda":
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.train_mode()
        net = model
        if env.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        self.model = model
        self.stepper = TrainStep(net, model.parameters(), cfg, dev, env.rank)
        if self.resumed is not None:
            if self.resumed.optimizer_state is None:
                raise CheckpointError(f"{self.last_path}: holds no optimizer state; cannot resume")
            self.stepper.optimizer.load_state_dict(self.resumed.optimizer_state)
            if self.resumed.scaler_state:
                self.stepper.scaler.load_state_dict(self.resumed.scaler_state)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.loss_n = 0

        self.metrics = None
        if env.is_main:
            self.metrics = _Metrics(self.out_dir, self.start_step, cfg.tensorboard)
            self._closers.append(self.metrics.close)
            _write_run_info(self.out_dir, self.datadir, cfg, self.unet_config, self.manifest_hash, env, dev, self.data_mode,
                            self.init_info)
        self._clock0 = time.perf_counter() - self._elapsed_before

    def _no_validation_message(self) -> str:
        if not self.cfg.val_crops:
            return f"validation is off (val_crops 0): no validation loss; {MODEL_NAME} will hold the last weights, not the best"
        return (
            f"{self.datadir.path} has no 'valid' rows: training runs without validation (no validation loss) and "
            f"{MODEL_NAME} will hold the last weights, not the best. Ingest more songs (a corpus's official split "
            f"puts some in valid) or re-ingest with `stemforge ingest ... --valid-fraction 0.1` to hold songs out."
        )

    def train_step(self, step: int) -> None:
        """Optimizer step ``step`` (0-based) on the next batch; its loss is summed for :meth:`log`."""
        import torch

        mixture, target = next(self.batches)
        if self.dev.type == "cuda":
            mixture = mixture.contiguous(memory_format=torch.channels_last)
        lr = self.cfg.lr_at(step, self.lr)
        if lr != self.lr or self.cfg.lr_schedule == "cosine":
            self.set_lr(lr)
        self.loss_sum += self.stepper(step, mixture, target)
        self.loss_n += 1

    def log(self, step: int, rate: float) -> dict[str, Any]:
        """At a log step: the mean train loss since the previous one (all processes), reported
        with ``rate`` (patches/s); returns the metrics row so far."""
        mean = self.loss_sum / max(1, self.loss_n)
        if self.env.is_distributed:
            import torch.distributed as dist

            dist.all_reduce(mean)
            mean /= self.env.world_size
        self.final_train = float(mean)
        self.loss_sum.zero_()
        self.loss_n = 0
        self.emit("step", step, train_loss=self.final_train, patches_per_s=rate, elapsed_s=self.elapsed())
        return {"train_loss": self.final_train, "patches_per_s": rate}

    def validate(self, step: int) -> float | None:
        """The validation loss at ``step`` (None without validation), then :meth:`after_validation`."""
        if self.valset is None:
            return None
        cfg, env = self.cfg, self.env
        val = validation_loss(self.model, self.valset, self.dev, cfg.batch_size, cfg.precision, env.rank, env.world_size)
        self.train_mode()
        self.final_val = val
        self.after_validation(step, val)
        self.emit("validation", step, val_loss=val, elapsed_s=self.elapsed())
        return val

    def after_validation(self, step: int, val: float) -> None:
        """Keep the best weights (best.pt, model.pt); then the ``plateau`` schedule (halve the
        rate after ``patience`` validations without a new best) and early stopping (stop after
        ``early_stop`` of them). Every process acts alike (``val`` is all-reduced)."""
        cfg = self.cfg
        if self.best_val is None or val < self.best_val:
            self.best_val, self.best_step = val, step
            self.since_best = self.plateau_count = 0
            self.save_best(step, val)
            return
        self.since_best += 1
        self.plateau_count += 1
        if cfg.lr_schedule == "plateau" and self.plateau_count >= cfg.patience:
            self.plateau_count = 0
            self.set_lr(self.lr / 2)
            self.emit("schedule", step, message=f"no new best validation loss for {cfg.patience} validations: learning rate halved to {self.lr:g}")
        if cfg.early_stop is not None and self.since_best >= cfg.early_stop and step < cfg.steps:
            self.stopped_early = step
            self.emit("schedule", step, message=(
                f"early stop: no new best validation loss for {cfg.early_stop} validations "
                f"(best {self.best_val:.5g} at step {self.best_step})"
            ))

    def train_mode(self) -> None:
        """The model in training mode; with ``freeze_bn`` its BatchNorm layers in eval mode."""
        from torch import nn

        self.model.train()
        if self.cfg.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()

    def set_lr(self, lr: float) -> None:
        """Set the optimizer's learning rate (every parameter group) and :attr:`lr`."""
        self.lr = float(lr)
        for group in self.stepper.optimizer.param_groups:
            group["lr"] = self.lr

    def schedule_state(self) -> dict[str, Any]:
        """What the schedule and early stopping carry over a resume (stored in last.pt)."""
        return {
            "lr_schedule": self.cfg.lr_schedule, "lr": self.lr, "plateau_count": self.plateau_count,
            "since_best": self.since_best, "stopped_early": self.stopped_early,
        }

    def save_best(self, step: int, val: float | None) -> None:
        """best.pt (weights only) and model.pt linked to it (rank 0)."""
        from stemforge.model.checkpoint import save_checkpoint

        if not self.env.is_main:
            return
        save_checkpoint(
            self.best_path, self.model, self.unet_config, self.input_config, self.target, step,
            manifest_hash=self.manifest_hash,
            extra={"val_loss": val, "train_config": self.cfg.to_dict(), "init": self.init_info},
        )
        _link_or_copy(self.best_path, self.model_path)

    def save_last(self, step: int) -> Path:
        """last.pt, the state to resume from (rank 0); without validation also model.pt, the
        last weights."""
        from stemforge.model.checkpoint import save_checkpoint

        if not self.env.is_main:
            return self.last_path
        cfg, stepper = self.cfg, self.stepper
        info = {
            "train_config": cfg.to_dict(),
            "best_val_loss": self.best_val,
            "best_step": self.best_step,
            "initial_val_loss": self.initial_val,
            "elapsed_s": self.elapsed(),
            "world_size": self.env.world_size,
            "data_mode": self.data_mode,
            "schedule": self.schedule_state(),
            "init": self.init_info,
        }
        rng = {
            "scheme": "per-step: numpy SeedSequence([seed, rank, step, stream]); stream 0 crops, 1 dropout",
            "seed": cfg.seed,
            "dropout_generator": stepper.generator.get_state().cpu(),
        }
        save_checkpoint(
            self.last_path, self.model, self.unet_config, self.input_config, self.target, step,
            optimizer_state=stepper.optimizer.state_dict(),
            scaler_state=stepper.scaler.state_dict() if stepper.scaler.is_enabled() else None,
            rng_state=rng, manifest_hash=self.manifest_hash, extra=info,
        )
        if not self.validating:  # nothing to choose by: model.pt is the last weights, named so
            save_checkpoint(
                self.model_path, self.model, self.unet_config, self.input_config, self.target, step,
                manifest_hash=self.manifest_hash,
                extra={"val_loss": None, "weights": "last (no validation)", "train_config": cfg.to_dict(),
                       "init": self.init_info},
            )
        return self.last_path

    def write_metrics(self, step: int, row: dict[str, Any]) -> None:
        """One metrics.csv / TensorBoard row (rank 0); the loss plot is redrawn with each
        validation row."""
        if self.metrics is None:
            return
        row.update(step=step, epoch=step / self.steps_per_epoch, lr=self.lr, elapsed_s=self.elapsed())
        self.metrics.write(row)
        if "val_loss" in row:
            self.plot()

    def plot(self) -> None:
        """loss.png from metrics.csv (rank 0)."""
        if self.metrics is None:
            return
        from stemforge.train.plots import plot_loss

        title = f"{self.out_dir.name}: {self.target}, U-Net width {self.unet_config.width:g}"
        plot_loss(self.metrics.path, self.out_dir / PLOT_NAME, title=title)

    # -- the session -----------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Open, train up to ``steps`` (or until Ctrl-C), finish; restores the global switches
        (deterministic algorithms, cudnn.benchmark, the process group) on the way out."""
        import torch

        cfg, env, dev = self.cfg, self.env, self.dev
        previous_deterministic = torch.are_deterministic_algorithms_enabled()
        previous_benchmark = torch.backends.cudnn.benchmark
        initialized_here = False
        if dev.type == "cuda":
            torch.cuda.set_device(dev)  # before NCCL initializes, so that it uses this GPU
            torch.backends.cudnn.benchmark = not cfg.deterministic
        if env.is_distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
                initialized_here = True
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        try:
            self.open()
            return self.loop()
        finally:
            for close in reversed(self._closers):
                try:
                    close()
                except Exception:  # noqa: BLE001  closing after a failure must not hide the failure itself
                    pass
            torch.use_deterministic_algorithms(previous_deterministic)
            torch.backends.cudnn.benchmark = previous_benchmark
            if initialized_here:
                import torch.distributed as dist

                # Free the DistributedDataParallel wrapper while the process group is still
                # registered, so that the group's last reference is the registry's: freeing
                # the wrapper's C++ Reducer holds the GIL, and if it dropped the group's last
                # reference, Gloo's destructor would join a worker thread that may still need
                # the GIL to free a finished all-reduce's tensors (a deadlock, seen once in six
                # loaded test runs); destroy_process_group releases the GIL while it waits.
                self.stepper = None
                gc.collect()
                dist.destroy_process_group()

    def loop(self) -> TrainResult:
        """The step loop (after :meth:`open`) and :meth:`finish`."""
        cfg, env = self.cfg, self.env
        if self.start_step == 0 and self.validating:
            self.initial_val = self.validate(0)
            self.write_metrics(0, {"epoch": 0.0, "val_loss": self.initial_val})
        self.emit("start", self.start_step)
        meter = Throughput(self.start_step, cfg.steps, cfg.batch_size * env.world_size, self.synchronize)
        interrupted = False
        with _StopFlag() as stop:
            while self.step < cfg.steps and self.stopped_early is None:
                self.train_step(self.step)
                self.step = step = self.step + 1
                meter.stepped(step)
                last = step == cfg.steps
                row: dict[str, Any] = {}
                if step % cfg.log_every == 0 or last:
                    row = self.log(step, meter.interval_rate())
                else:
                    self.emit("step", step)
                validating = step % cfg.val_every == 0 or last
                checkpointing = step % cfg.checkpoint_every == 0 or last
                if validating or checkpointing:
                    with meter.paused():
                        if validating:
                            row["val_loss"] = self.validate(step)
                        if row:
                            self.write_metrics(step, row)
                        if self.stopped_early is not None:
                            checkpointing = True  # early stop: the run ends here, as at its last step
                        if checkpointing:
                            self.emit("checkpoint", step, path=self.save_last(step))
                elif row:
                    self.write_metrics(step, row)
                # several processes agree at log steps (a collective); one process checks each step
                check = not env.is_distributed or step % cfg.log_every == 0
                if not last and check and _should_stop(stop.set, env, self.dev):
                    interrupted = True
                    break
        meter.stop()
        return self.finish(interrupted, meter.session_rate(self.step))

    def finish(self, interrupted: bool, rate: float | None) -> TrainResult:
        """After the loop: on Ctrl-C, last.pt, the partial metrics row and the plot; the
        ``done`` event; the :class:`TrainResult`."""
        step, cfg = self.step, self.cfg
        if interrupted:
            path = self.save_last(step)
            if self.loss_n:
                self.write_metrics(step, {"train_loss": float(self.loss_sum / self.loss_n)})
            self.plot()
            self.emit("interrupted", step, path=path)
        elif step == self.start_step:  # nothing to do (already at steps): keep the files consistent
            self.save_last(step)
            self.plot()
        self.emit("done", step, train_loss=self.final_train, val_loss=self.final_val, patches_per_s=rate,
                  elapsed_s=self.elapsed())
        return TrainResult(
            out_dir=self.out_dir,
            step=step,
            total_steps=cfg.steps,
            interrupted=interrupted,
            last_checkpoint=self.last_path,
            best_checkpoint=self.best_path if self.validating else None,
            model_path=self.model_path,
            model_weights="best" if self.validating else "last",
            initial_val_loss=self.initial_val,
            best_val_loss=self.best_val,
            best_step=self.best_step,
            final_val_loss=self.final_val,
            final_train_loss=self.final_train,
            patches_per_s=rate,
            data_mode=self.data_mode,
            data_message=self.data_message,
            device=str(self.dev),
            world_size=self.env.world_size,
            metrics_path=self.out_dir / METRICS_NAME,
            tensorboard_dir=(self.out_dir / TENSORBOARD_DIR) if cfg.tensorboard else None,
            loss_plot=self.out_dir / PLOT_NAME,
            stopped_early=self.stopped_early,
            lr=self.lr,
        )


def train(
    datadir,
    out_dir: str | os.PathLike,
    train_config: TrainConfig,
    unet_config=None,
    progress: ProgressFn | None = None,
    device: str | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    target: str | None = None,
) -> TrainResult:
    """Train a U-Net on ``datadir`` (a :class:`~stemforge.store.DataDir`) into ``out_dir``:
    ``TrainingRun(...).run()``.

    Args:
        datadir: the DataDir (its ``train`` rows are trained on, ``valid`` rows validate).
        out_dir: the run folder (created); see the module docstring for what it holds.
        train_config: :class:`TrainConfig`.
        unet_config: :class:`~stemforge.model.config.UNetConfig` (its ``target`` is the target;
            its ``patch_frames`` is set to ``train_config.patch_frames``). Its ``channels`` must
            be the DataDir's and its bins (``first_bin`` .. ``first_bin + n_bins - 1``) among
            the stored ones (:func:`check_model_fits`). None with ``init``: the checkpoint's.
        progress: called with :class:`TrainEvent` values (rank 0 only).
        device: None/``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``
            (:func:`stemforge.core.device.resolve_device`; under torchrun, ``cuda`` means the
            process's ``LOCAL_RANK`` GPU).
        resume: continue the run of ``out_dir/last.pt``. Its UNetConfig and the
            :data:`RESUME_FIXED` fields of its TrainConfig must equal the given ones, and the
            DataDir's manifest must be the one it was trained on; ``steps`` may be raised
            (not under the ``cosine`` schedule, which spans ``steps``).
        init: fine-tune: a checkpoint (one net, or two: the net of ``target`` is taken) whose
            weights the new run starts from (:func:`init_from_checkpoint`). Not with ``resume``.
        target: ``vocals`` or ``accompaniment``; None: ``unet_config.target`` (with ``init``:
            the one-net checkpoint's target, and required for a two-net checkpoint).

    Returns:
        a :class:`TrainResult`. Ctrl-C (SIGINT) between steps writes last.pt and returns with
        ``interrupted=True`` (a second Ctrl-C raises KeyboardInterrupt at once).

    Raises:
        StemforgeError: bad arguments, empty train split, an existing run without ``resume``.
        ConfigMismatchError: resuming with another configuration or other data.
        CheckpointError: last.pt missing or unreadable on resume.
    """
    return TrainingRun(datadir, out_dir, train_config, unet_config, progress, device, resume, init, target).run()


#: SpectrogramConfig fields a model's input depends on (normalization aside: see init_from_checkpoint).
GEOMETRY_FIELDS = ("sample_rate", "n_fft", "hop_length", "window", "center", "pad_mode", "channels")


def default_model_bins(config) -> int:
    """The bins a model sees by default at ``config`` (a SpectrogramConfig): the preset's
    (512 of 513 at seed and paper, 1024 of 2049 at fullband, Spleeter's) for a preset's frame
    grid, else ``n_fft / 2`` rounded down to a multiple of 64 (bins 1..n_fft/2)."""
    from stemforge.core.config import PRESETS
    from stemforge.model.config import FRAME_MULTIPLE

    for p in PRESETS.values():
        g = p.spectrogram
        if (g.sample_rate, g.n_fft, g.hop_length) == (config.sample_rate, config.n_fft, config.hop_length):
            return p.model_bins
    return max(FRAME_MULTIPLE, (config.n_fft // 2) // FRAME_MULTIPLE * FRAME_MULTIPLE)


def geometry_unet_config(config, variant: str = "seed", **overrides: Any):
    """The UNetConfig of preset ``variant`` (``seed``, ``paper``, ``spleeter``: the layer order
    and kernels) sized to the DataDir geometry ``config``: its ``channels``, ``n_bins``
    :func:`default_model_bins`, ``patch_frames`` the geometry's training crop
    (:func:`stemforge.core.config.patch_frames`: 128 at seed/paper, 512 at fullband);
    ``first_bin`` is the variant's (1; 0 for ``spleeter``). ``overrides`` (``n_bins``, ``width``,
    ``target``, ...) win."""
    from stemforge.core.config import patch_frames
    from stemforge.model import UNetConfig

    sized = {"channels": config.channels, "n_bins": default_model_bins(config), "patch_frames": patch_frames(config)}
    return UNetConfig.preset(variant, **{**sized, **overrides})


def plain_input(config, model_config) -> bool:
    """Whether a model of spectrogram config ``model_config`` trains on a DataDir of ``config``
    through plain magnitudes: the model's normalization is ``"none"``, the DataDir's
    ``"max_mixture"``, and nothing else differs (the stored ``norm`` undoes the division)."""
    import dataclasses

    return (model_config.normalization == "none" and config.normalization == "max_mixture"
            and dataclasses.replace(config, normalization="none").hash == model_config.hash)


def check_model_fits(unet_config, config) -> None:
    """StemforgeError unless a model of ``unet_config`` can train on a DataDir of ``config``:
    the same channels, and bins ``first_bin .. first_bin + n_bins - 1`` among the stored ones."""
    if unet_config.channels != config.channels:
        raise StemforgeError(
            f"the U-Net takes {unet_config.channels} channel(s); the DataDir stores {config.channels} ({config.geometry()})"
        )
    a, n = unet_config.first_bin, unet_config.n_bins
    if a + n > config.n_bins:
        raise StemforgeError(
            f"the U-Net sees {n} bins ({a}..{a + n - 1}: --model-bins {n}); the DataDir stores {config.n_bins} "
            f"(0..{config.n_bins - 1}), so at most {(config.n_bins - a) // 64 * 64} bins fit"
        )


def init_unet_config(path: str | os.PathLike, target: str | None = None):
    """The UNetConfig of the net ``init_from_checkpoint(path, ..., target=target)`` would start
    from (what ``stemforge train --init`` shows and overrides)."""
    from stemforge.model.checkpoint import load_checkpoint

    return _init_net(load_checkpoint(path), target)[0]


def _init_net(ckpt, target: str | None):
    import dataclasses

    if target is None:
        if len(ckpt.targets) > 1:
            raise StemforgeError(
                f"{ckpt.path} holds {' and '.join(ckpt.targets)} nets: choose one with --target"
            )
        target = ckpt.targets[0]
    net = ckpt.net(target)
    return dataclasses.replace(net.config, target=target), net


def init_from_checkpoint(path: str | os.PathLike, config, unet_config=None, target: str | None = None):
    """The start of a fine-tuning run: the net of ``target`` in checkpoint ``path``, checked
    against the DataDir geometry ``config``.

    Refused, with a :class:`ConfigMismatchError` naming both values: another geometry (sample
    rate, n_fft, hop, window, channels: :data:`GEOMETRY_FIELDS`), or, when ``unet_config`` is
    given, another architecture (every :attr:`UNetConfig.architecture` field: variant, kernel,
    width, bins, channels, BatchNorm constants, dropout). ``patch_frames`` may differ (the net is
    fully convolutional). A checkpoint trained on plain ``|STFT|`` (normalization ``"none"``:
    Spleeter's) fine-tuned on a max-normalized DataDir is fed plain magnitudes, each track's
    stored magnitudes times its stored ``norm`` (:func:`plain_input`; Spleeter's BatchNorm
    constants and biases do not survive a 300-fold change of scale); the run then records
    normalization ``"none"``. Any other normalization mismatch is allowed with a warning (the
    DataDir's scale is trained on and recorded).

    Returns:
        ``(unet_config, model_state, info, warnings)``: the UNetConfig to train (the
        checkpoint's, ``target`` set), its state_dict (CPU tensors), what train.json and the
        run's checkpoints record under ``init`` (path, target, step, hashes) and warning lines.
    """
    import dataclasses

    from stemforge.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    stored, net = _init_net(ckpt, target if target is not None else (unet_config.target if unet_config else None))
    src = ckpt.spectrogram_config
    differ = [f for f in GEOMETRY_FIELDS if getattr(src, f) != getattr(config, f)]
    if differ:
        raise ConfigMismatchError(
            f"--init {ckpt.path} (geometry: the DataDir's against the checkpoint's)",
            ", ".join(f"{f}={getattr(config, f)}" for f in differ),
            ", ".join(f"{f}={getattr(src, f)}" for f in differ),
        )
    if unet_config is not None:
        given, have = unet_config.architecture, stored.architecture
        bad = [k for k in given if given[k] != have[k]]
        if bad:
            raise ConfigMismatchError(
                f"--init {ckpt.path} (architecture: the asked-for U-Net against the checkpoint's)",
                ", ".join(f"{k}={given[k]}" for k in bad), ", ".join(f"{k}={have[k]}" for k in bad),
            )
        stored = dataclasses.replace(stored, patch_frames=unet_config.patch_frames)
    warnings = []
    if src.normalization != config.normalization and not plain_input(config, src):
        warnings.append(
            f"--init {ckpt.path} was trained on normalization {src.normalization!r} magnitudes; this DataDir holds "
            f"{config.normalization!r} ones: fine-tuning adapts the net to the DataDir's scale, and the new checkpoint "
            f"records the DataDir's configuration (what the Separator then feeds it)"
        )
    info = {
        "path": str(Path(ckpt.path).resolve()), "target": stored.target, "step": ckpt.steps.get(stored.target, ckpt.step),
        "unet_config_hash": net.config.hash, "spectrogram_config_hash": src.hash, "normalization": src.normalization,
    }
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return stored, state, info, warnings


def _synchronize(dev) -> None:
    if dev.type == "cuda":
        import torch

        torch.cuda.synchronize(dev)


def _should_stop(local: bool, env: DistributedEnv, dev) -> bool:
    """Whether any process was interrupted (all processes stop at the same step)."""
    if not env.is_distributed:
        return local
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if local else 0.0], device=dev)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def _check_resume(ckpt, cfg: TrainConfig, unet_config, manifest_hash: str, datadir, input_config=None) -> None:
    path = ckpt.path
    if ckpt.unet_config != unet_config:
        raise ConfigMismatchError(f"{path} (U-Net)", unet_config.describe(), ckpt.unet_config.describe())
    ckpt.check_spectrogram_config(input_config if input_config is not None else datadir.config)
    stored_cfg = stored_train_config(ckpt)
    differ = {k: (getattr(cfg, k), getattr(stored_cfg, k)) for k in RESUME_FIXED if getattr(cfg, k) != getattr(stored_cfg, k)}
    if differ:
        expected = ", ".join(f"{k}={v[0]}" for k, v in differ.items())
        found = ", ".join(f"{k}={v[1]}" for k, v in differ.items())
        raise ConfigMismatchError(f"{path} (training configuration)", expected, found)
    if ckpt.manifest_hash and ckpt.manifest_hash != manifest_hash:
        raise ConfigMismatchError(
            f"{path} (training data: the DataDir's manifest changed since this run started)",
            f"manifest {manifest_hash}", f"manifest {ckpt.manifest_hash}",
        )
    if cfg.steps < ckpt.step:
        raise StemforgeError(f"{path} is at step {ckpt.step}; --steps {cfg.steps} is behind it")
    if cfg.lr_schedule == "cosine" and cfg.steps != stored_cfg.steps:
        raise ConfigMismatchError(
            f"{path} (the cosine schedule spans the run's steps: they cannot change on resume)",
            f"steps={cfg.steps}", f"steps={stored_cfg.steps}",
        )


def _write_run_info(out_dir: Path, datadir, cfg: TrainConfig, unet_config, manifest_hash: str, env, dev, data_mode: str,
                    init: dict | None = None) -> None:
    from stemforge import __version__

    info = {
        "stemforge_version": __version__,
        "data": str(Path(datadir.path).resolve()),
        "manifest_hash": manifest_hash,
        "spectrogram_config": datadir.config.to_dict(),
        "train_config": cfg.to_dict(),
        "unet_config": unet_config.to_dict(),
        "device": str(dev),
        "world_size": env.world_size,
        "data_mode": data_mode,
        "init": init,
    }
    tmp = out_dir / f".{RUN_INFO_NAME}.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / RUN_INFO_NAME)
