"""The training loop: Adam on the L1 loss of ``mask * mixture`` against the target magnitude.

``train(datadir, out_dir, train_config, unet_config)`` trains the U-Net on the ``train`` rows
of a DataDir, validates on fixed crops of its ``valid`` rows and writes, under ``out_dir``::

    last.pt          the state to resume from: weights, optimizer (Adam) and GradScaler state,
                     step, TrainConfig, RNG state, data manifest hash (every checkpoint_every
                     steps, at the end, and on Ctrl-C)
    best.pt          the weights with the lowest validation loss so far (no optimizer state);
                     the last weights when the DataDir has no ``valid`` rows
    model.pt         a hard link to best.pt (a copy where links are refused): the file
                     ``stemforge separate`` takes
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

The library never prints: ``progress(event)`` receives :class:`TrainEvent` values.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stemforge.core.config import _Config
from stemforge.core.errors import CheckpointError, ConfigMismatchError, StemforgeError

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
MODEL_NAME = "model.pt"
METRICS_NAME = "metrics.csv"
PLOT_NAME = "loss.png"
TENSORBOARD_DIR = "tensorboard"
RUN_INFO_NAME = "train.json"
METRICS_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "patches_per_s", "lr", "elapsed_s")

PRECISIONS = ("fp32", "bf16", "fp16")
#: Steps at the start of a session left out of the throughput figure (at most; a tenth of a
#: short run): cudnn autotuning, torch.compile, allocator warm-up.
WARMUP_STEPS = 10
DATA_MODES = ("auto", "memory", "streaming")
#: TrainConfig fields a resumed run must keep (they decide which batches and updates come next).
RESUME_FIXED = ("batch_size", "lr", "seed", "patch_frames", "min_vocal_db", "betas", "eps")


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to train (the model itself is described by :class:`~stemforge.train.model.UNetConfig`).

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
        workers: loader processes in streaming mode (None: 1 on the CPU, else min(8, cores/2)).
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
    """

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

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise StemforgeError(f"TrainConfig: {name} must be an integer >= {minimum}, got {v!r}")

        for name in ("batch_size", "prefetch", "patch_frames", "val_every", "checkpoint_every", "log_every"):
            positive_int(name)
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


@dataclass(frozen=True)
class TrainEvent:
    """What ``progress`` receives.

    ``kind``:
        ``"data"`` (message: how batches are made; at start), ``"start"`` (step: the first step
        of this session, total_steps), ``"step"`` (after each step; train_loss is set at log
        steps: mean since the previous), ``"validation"`` (val_loss), ``"checkpoint"`` (path),
        ``"interrupted"`` (path: the checkpoint written), ``"done"``.
    """

    kind: str
    step: int
    total_steps: int
    train_loss: float | None = None
    val_loss: float | None = None
    patches_per_s: float | None = None
    message: str = ""
    path: Path | None = None


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        out_dir: the run folder.
        step: steps taken in total (the checkpoint's step).
        total_steps: the configured number of steps.
        interrupted: stopped early by Ctrl-C (SIGINT); last.pt holds the state at ``step``.
        last_checkpoint, best_checkpoint, model_path: see the module docstring.
        initial_val_loss: validation loss of the untrained model (step 0); None without a
            ``valid`` split.
        best_val_loss, best_step: the lowest validation loss and its step.
        final_val_loss: the validation loss at the last step (None without validation).
        final_train_loss: mean train loss of the last logged interval.
        patches_per_s: training throughput of this session, all processes together: crops per
            second of the step loop (data included), leaving out the warm-up steps
            (:data:`WARMUP_STEPS` at most), validation and checkpoint writing.
        data_mode: ``"memory"`` or ``"streaming"`` as used; data_message: why.
        device: the device of rank 0; world_size: processes.
        metrics_path, tensorboard_dir, loss_plot: the files written (tensorboard_dir None
            when disabled).
    """

    out_dir: Path
    step: int
    total_steps: int
    interrupted: bool
    last_checkpoint: Path
    best_checkpoint: Path
    model_path: Path
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


def resolve_device(device: str, env: DistributedEnv | None = None):
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` ->
    ``cuda:LOCAL_RANK``; anything else as given. Raises when CUDA is asked for and absent."""
    import torch

    env = env or DistributedEnv()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StemforgeError("--device cuda: CUDA is not available (this torch build or machine has no GPU)")
        if dev.index is None:
            dev = torch.device("cuda", env.local_rank % max(1, torch.cuda.device_count()))
    return dev


def default_workers(device) -> int:
    """Loader processes when not configured: 1 for CPU training (the model is the bottleneck),
    else half the cores, at most 8."""
    if getattr(device, "type", str(device)) == "cpu":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def steps_for_epochs(datadir, epochs: float, batch_size: int, patch_frames: int = 128, world_size: int = 1,
                     min_vocal_db: float | None = None) -> int:
    """Steps for ``epochs`` passes over the train split, one pass = as many crops (of all ranks
    together) as the split holds non-overlapping crops."""
    from stemforge.train.data import PatchSampler

    if not epochs > 0:
        raise StemforgeError(f"epochs must be positive, got {epochs}")
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
        from stemforge.train.model import loss_fn

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

    from stemforge.train.model import loss_fn

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
    from stemforge.train.checkpoint import load_checkpoint

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
# The loop
# --------------------------------------------------------------------------------------------


def train(
    datadir,
    out_dir: str | os.PathLike,
    train_config: TrainConfig,
    unet_config,
    progress: ProgressFn | None = None,
    device: str = "auto",
    resume: bool = False,
) -> TrainResult:
    """Train a U-Net on ``datadir`` (a :class:`~stemforge.store.DataDir`) into ``out_dir``.

    Args:
        datadir: the DataDir (its ``train`` rows are trained on, ``valid`` rows validate).
        out_dir: the run folder (created); see the module docstring for what it holds.
        train_config: :class:`TrainConfig`.
        unet_config: :class:`~stemforge.train.model.UNetConfig` (its ``target`` is the target).
        progress: called with :class:`TrainEvent` values (rank 0 only).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``... (under torchrun, ``cuda`` means the
            process's ``LOCAL_RANK`` GPU).
        resume: continue the run of ``out_dir/last.pt``. Its UNetConfig and the
            :data:`RESUME_FIXED` fields of its TrainConfig must equal the given ones, and the
            DataDir's manifest must be the one it was trained on; ``steps`` may be raised.

    Returns:
        a :class:`TrainResult`. Ctrl-C (SIGINT) between steps writes last.pt and returns with
        ``interrupted=True`` (a second Ctrl-C raises KeyboardInterrupt at once).

    Raises:
        StemforgeError: bad arguments, empty train split, an existing run without ``resume``.
        ConfigMismatchError: resuming with another configuration or other data.
        CheckpointError: last.pt missing or unreadable on resume.
    """
    import torch

    from stemforge.train.checkpoint import load_checkpoint, save_checkpoint
    from stemforge.train.data import PatchSampler, validation_set
    from stemforge.train.model import UNet

    cfg = train_config
    if unet_config.n_bins != datadir.config.n_bins - 1:
        raise StemforgeError(
            f"the U-Net sees {unet_config.n_bins} bins; the DataDir stores {datadir.config.n_bins} (the model takes bins 1..{datadir.config.n_bins - 1})"
        )
    out_dir = Path(out_dir)
    env = distributed_env()
    dev = resolve_device(device, env)
    emit = progress if (progress is not None and env.is_main) else (lambda event: None)
    target = unet_config.target
    manifest_hash = datadir.manifest_hash

    # -- the starting point ----------------------------------------------------------------
    last_path, best_path, model_path = out_dir / LAST_NAME, out_dir / BEST_NAME, out_dir / MODEL_NAME
    resumed = None
    if resume:
        resumed = load_checkpoint(last_path) if last_path.exists() else None
        if resumed is None:
            raise CheckpointError(f"{last_path}: no checkpoint to resume from (train without --resume first)")
        _check_resume(resumed, cfg, unet_config, manifest_hash, datadir)
    elif last_path.exists():
        raise StemforgeError(
            f"{out_dir} already holds a run ({LAST_NAME}); continue it with --resume or choose another --out"
        )
    start_step = resumed.step if resumed is not None else 0
    extra = (resumed.extra or {}) if resumed is not None else {}
    best_val = extra.get("best_val_loss")
    best_step = extra.get("best_step")
    initial_val = extra.get("initial_val_loss")
    elapsed_before = float(extra.get("elapsed_s") or 0.0)

    # -- global switches, restored on exit ------------------------------------------------
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
    closers: list[Callable[[], None]] = []
    try:
        if env.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        # -- data ------------------------------------------------------------------------
        sampler = PatchSampler.from_datadir(datadir, patch_frames=cfg.patch_frames, min_vocal_db=cfg.min_vocal_db)
        steps_per_epoch = sampler.crops_per_epoch / (cfg.batch_size * env.world_size)  # float
        valset = validation_set(datadir, target, patch_frames=cfg.patch_frames, max_crops=cfg.val_crops) if cfg.val_crops else None
        batches, data_mode, data_message = _make_batches(datadir, sampler, cfg, target, dev, env, range(start_step, cfg.steps))
        closers.append(batches.close)
        emit(TrainEvent("data", start_step, cfg.steps, message=data_message))

        # -- model and optimizer ----------------------------------------------------------
        model = UNet(unet_config, generator=torch.Generator().manual_seed(cfg.seed))
        if resumed is not None:
            model.load_state_dict(resumed.raw["model_state"])
        model.to(dev)
        if dev.type == "cuda":
            model.to(memory_format=torch.channels_last)
        model.train()
        net = model
        if env.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        stepper = TrainStep(net, model.parameters(), cfg, dev, env.rank)
        if resumed is not None:
            if resumed.optimizer_state is None:
                raise CheckpointError(f"{last_path}: holds no optimizer state; cannot resume")
            stepper.optimizer.load_state_dict(resumed.optimizer_state)
            if resumed.scaler_state:
                stepper.scaler.load_state_dict(resumed.scaler_state)

        # -- files ------------------------------------------------------------------------
        metrics = None
        if env.is_main:
            metrics = _Metrics(out_dir, start_step, cfg.tensorboard)
            closers.append(metrics.close)
            _write_run_info(out_dir, datadir, cfg, unet_config, manifest_hash, env, dev, data_mode)
        elapsed0 = time.perf_counter() - elapsed_before

        def elapsed() -> float:
            return time.perf_counter() - elapsed0

        def save_last(step: int) -> Path:
            if not env.is_main:
                return last_path
            info = {
                "train_config": cfg.to_dict(),
                "best_val_loss": best_val,
                "best_step": best_step,
                "initial_val_loss": initial_val,
                "elapsed_s": elapsed(),
                "world_size": env.world_size,
                "data_mode": data_mode,
            }
            rng = {
                "scheme": "per-step: numpy SeedSequence([seed, rank, step, stream]); stream 0 crops, 1 dropout",
                "seed": cfg.seed,
                "dropout_generator": stepper.generator.get_state().cpu(),
            }
            save_checkpoint(
                last_path, model, unet_config, datadir.config, target, step,
                optimizer_state=stepper.optimizer.state_dict(),
                scaler_state=stepper.scaler.state_dict() if stepper.scaler.is_enabled() else None,
                rng_state=rng, manifest_hash=manifest_hash, extra=info,
            )
            if valset is None:  # nothing to choose by: the last weights are the best we know
                save_best(step, None)
            return last_path

        def save_best(step: int, val: float | None) -> None:
            save_checkpoint(
                best_path, model, unet_config, datadir.config, target, step,
                manifest_hash=manifest_hash,
                extra={"val_loss": val, "train_config": cfg.to_dict()},
            )
            _link_or_copy(best_path, model_path)

        def validate(step: int) -> float | None:
            nonlocal best_val, best_step
            if valset is None:
                return None
            val = validation_loss(model, valset, dev, cfg.batch_size, cfg.precision, env.rank, env.world_size)
            if env.is_main:
                if best_val is None or val < best_val:
                    best_val, best_step = val, step
                    save_best(step, val)
            emit(TrainEvent("validation", step, cfg.steps, val_loss=val))
            return val

        def plot() -> None:
            if env.is_main:
                from stemforge.train.plots import plot_loss

                plot_loss(metrics.path, out_dir / PLOT_NAME, title=f"{out_dir.name}: {target}, U-Net width {unet_config.width:g}")

        # -- the loop ---------------------------------------------------------------------
        final_val = None
        if start_step == 0 and valset is not None:
            initial_val = final_val = validate(0)
            if metrics is not None:
                metrics.write({"step": 0, "epoch": 0.0, "val_loss": final_val, "lr": cfg.lr, "elapsed_s": elapsed()})
        emit(TrainEvent("start", start_step, cfg.steps))
        step = start_step
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        loss_n = 0
        final_train = None
        timer_start: float | None = None  # after the warm-up steps of this session
        timed_from = start_step + min(WARMUP_STEPS, max(1, (cfg.steps - start_step) // 10))
        paused = 0.0  # validation, plots and checkpoints: left out of the throughput
        interval_t, interval_steps = time.perf_counter(), 0
        interrupted = False
        batch_iter = iter(batches)
        with _StopFlag() as stop:
            while step < cfg.steps:
                mixture, target_mag = next(batch_iter)
                if dev.type == "cuda":
                    mixture = mixture.contiguous(memory_format=torch.channels_last)
                loss = stepper(step, mixture, target_mag)
                loss_sum += loss
                loss_n += 1
                step += 1
                interval_steps += 1
                if step == timed_from:
                    _synchronize(dev)
                    timer_start = time.perf_counter()
                last_step = step == cfg.steps
                row: dict[str, Any] = {}
                if step % cfg.log_every == 0 or last_step:
                    mean = loss_sum / max(1, loss_n)
                    if env.is_distributed:
                        import torch.distributed as dist

                        dist.all_reduce(mean)
                        mean /= env.world_size
                    final_train = float(mean)
                    now = time.perf_counter()
                    rate = interval_steps * cfg.batch_size * env.world_size / max(1e-9, now - interval_t)
                    interval_t, interval_steps = now, 0
                    loss_sum.zero_()
                    loss_n = 0
                    row = {"train_loss": final_train, "patches_per_s": rate}
                    emit(TrainEvent("step", step, cfg.steps, train_loss=final_train, patches_per_s=rate))
                else:
                    emit(TrainEvent("step", step, cfg.steps))
                pausing = step % cfg.val_every == 0 or step % cfg.checkpoint_every == 0 or last_step
                if pausing:
                    _synchronize(dev)  # the steps before count as training time
                t_pause = time.perf_counter()
                if step % cfg.val_every == 0 or last_step:
                    final_val = validate(step)
                    row["val_loss"] = final_val
                if row and metrics is not None:
                    row.update(step=step, epoch=step / steps_per_epoch, lr=cfg.lr, elapsed_s=elapsed())
                    metrics.write(row)
                    if "val_loss" in row:
                        plot()
                if step % cfg.checkpoint_every == 0 or last_step:
                    emit(TrainEvent("checkpoint", step, cfg.steps, path=save_last(step)))
                if pausing:
                    pause = time.perf_counter() - t_pause
                    interval_t += pause
                    if timer_start is not None:
                        paused += pause
                # several processes agree at log steps (a collective); one process checks each step
                check = not env.is_distributed or step % cfg.log_every == 0
                if not last_step and check and _should_stop(stop.set, env, dev):
                    interrupted = True
                    break
        _synchronize(dev)
        timer_end = time.perf_counter()
        if interrupted:
            path = save_last(step)
            if metrics is not None:
                if loss_n:
                    mean = float(loss_sum / loss_n)
                    metrics.write({"step": step, "epoch": step / steps_per_epoch, "train_loss": mean, "lr": cfg.lr, "elapsed_s": elapsed()})
                plot()
            emit(TrainEvent("interrupted", step, cfg.steps, path=path))
        elif step == start_step:  # nothing to do (already at steps): keep the files consistent
            save_last(step)
            if metrics is not None:
                plot()
        rate = None
        if timer_start is not None and step > timed_from:
            seconds = timer_end - timer_start - paused
            rate = (step - timed_from) * cfg.batch_size * env.world_size / seconds if seconds > 0 else None
        emit(TrainEvent("done", step, cfg.steps, train_loss=final_train, val_loss=final_val, patches_per_s=rate))
        return TrainResult(
            out_dir=out_dir,
            step=step,
            total_steps=cfg.steps,
            interrupted=interrupted,
            last_checkpoint=last_path,
            best_checkpoint=best_path,
            model_path=model_path,
            initial_val_loss=initial_val,
            best_val_loss=best_val,
            best_step=best_step,
            final_val_loss=final_val,
            final_train_loss=final_train,
            patches_per_s=rate,
            data_mode=data_mode,
            data_message=data_message,
            device=str(dev),
            world_size=env.world_size,
            metrics_path=out_dir / METRICS_NAME,
            tensorboard_dir=(out_dir / TENSORBOARD_DIR) if cfg.tensorboard else None,
            loss_plot=out_dir / PLOT_NAME,
        )
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception:
                pass
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.backends.cudnn.benchmark = previous_benchmark
        if initialized_here:
            import torch.distributed as dist

            dist.destroy_process_group()


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


def _check_resume(ckpt, cfg: TrainConfig, unet_config, manifest_hash: str, datadir) -> None:
    path = ckpt.path
    if ckpt.unet_config != unet_config:
        raise ConfigMismatchError(f"{path} (U-Net)", unet_config.describe(), ckpt.unet_config.describe())
    ckpt.check_spectrogram_config(datadir.config)
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


class _ResidentIter:
    """Batches of :class:`ResidentBatches` in step order. On the CPU the next batch is cut on a
    helper thread while the model computes (the tensor copies release the GIL), so cutting
    batches does not add to the step time; on a GPU cutting is asynchronous already."""

    def __init__(self, batches, steps: range):
        import concurrent.futures

        self.batches = batches
        self.steps = iter(steps)
        self._pool = None
        self._next = None
        if getattr(getattr(batches, "device", None), "type", "cpu") == "cpu":
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stemforge-batches")
            self._submit()

    def _submit(self) -> None:
        step = next(self.steps, None)
        self._next = None if step is None else self._pool.submit(self.batches.batch, step)

    def __iter__(self):
        return self

    def __next__(self):
        if self._pool is None:
            return self.batches.batch(next(self.steps))
        if self._next is None:
            raise StopIteration
        batch = self._next.result()
        self._submit()
        return batch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class _StreamingIter:
    def __init__(self, loader, device):
        self.loader = loader
        self.device = device

    def __iter__(self):
        return self

    def __next__(self):
        from stemforge.train.data import to_device

        return to_device(next(self.loader), self.device)

    def close(self) -> None:
        self.loader.close()


def _make_batches(datadir, sampler, cfg: TrainConfig, target: str, dev, env: DistributedEnv, steps: range):
    """An iterator of ``(mixture, target)`` float32 device batches for ``steps``, the mode used
    and a sentence saying how the batches are made."""
    from stemforge.train.data import ResidentBatches, StreamingBatches, resident_fits, resident_nbytes, streaming_loader

    where = "GPU memory" if dev.type == "cuda" else "RAM"
    mode = cfg.data_mode
    if mode in ("auto", "memory"):
        fits, why = resident_fits(resident_nbytes(sampler.tracks, cfg.patch_frames, datadir.config.n_bins - 1), dev)
        if fits:
            resident = ResidentBatches(sampler, datadir.reader(), target, cfg.batch_size, cfg.seed, env.rank, dev)
            return _ResidentIter(resident, steps), "memory", f"resident in {where}: {why}"
        fallback = f"{why}; streaming from the shards instead"
    else:
        fallback = "streaming from the shards (asked for)"
    workers = cfg.workers if cfg.workers is not None else default_workers(dev)
    streaming = StreamingBatches(sampler, datadir.reader(), target, cfg.batch_size, cfg.seed, env.rank)
    loader = streaming_loader(streaming, steps, workers=workers, prefetch=cfg.prefetch)
    return _StreamingIter(loader, dev), "streaming", f"{fallback}, {workers} loader process{'es' if workers != 1 else ''}"


def _write_run_info(out_dir: Path, datadir, cfg: TrainConfig, unet_config, manifest_hash: str, env, dev, data_mode: str) -> None:
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
    }
    tmp = out_dir / f".{RUN_INFO_NAME}.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / RUN_INFO_NAME)
