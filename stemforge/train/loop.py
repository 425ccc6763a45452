"""The training loop: Adam on the loss (L1 or L2) of ``mask * mixture`` against the target magnitude.

``train(datadir, out_dir, train_config, unet_config)`` trains the U-Net on the ``train`` rows
of a DataDir, validates on fixed crops of its ``valid`` rows and writes the run folder
(:mod:`stemforge.train.rundir`: last.pt, best.pt, model.pt, metrics.csv, loss.png, tensorboard/,
train.json). It is :func:`~stemforge.train.setup.resolve_run` (what to train, checked) then
:func:`run` (the loop below).

A step, top to bottom in :func:`_loop`: the schedule sets the learning rate
(:mod:`.schedule`); the next batch (:mod:`.batches`) goes forward and backward through
:class:`TrainStep` (autocast, the loss, the GradScaler, Adam); at log steps the mean loss is
reported, at validation steps the model is scored (:mod:`.validation`) and the best weights
kept, at checkpoint steps last.pt is written; all processes agree on Ctrl-C.

Reproducibility: every random draw comes from a generator seeded by ``(seed, rank, step)``
(:func:`stemforge.train.sampling.step_seed_sequence`): the crops of a step, its dropout masks, the
initial weights (from ``seed``). Nothing reads torch's or numpy's global random state. So
``resume=True`` continues from ``last.pt`` exactly where the run stopped: on the CPU with
deterministic algorithms the weights after resuming are bit-for-bit those of an uninterrupted
run; the data mode (resident or streaming) and the number of loader workers do not change a
batch.

Several processes (``torchrun --nproc-per-node N -m stemforge train ...``): the environment's
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` turn on DistributedDataParallel (:mod:`.distributed`:
NCCL on CUDA, Gloo on the CPU); each rank draws its own crops (seed, rank), validation is split
across ranks, and only rank 0 writes files and reports progress.

The library never prints: ``progress(event)`` receives :class:`~stemforge.train.config.TrainEvent`
values (the CLI draws a bar on a terminal, plain lines in a log file).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn

from stemforge.core.errors import CheckpointError, RunLockedError, StemforgeError
from stemforge.model.unet import UNet, loss_fn
from stemforge.store import DataDir
from stemforge.train.batches import open_batches
from stemforge.train.config import ProgressFn, TrainConfig, TrainEvent, TrainResult
from stemforge.train.ema import WeightAverage
from stemforge.train.distributed import ProcessGroup, StopFlag, any_rank, mean_over_ranks, process_group
from stemforge.train.rundir import MODEL_NAME, Metrics, RunDir
from stemforge.train.sampling import PatchSampler, step_torch_seed
from stemforge.train.records import finish, save_last, write_metrics
from stemforge.train.schedule import Schedule
from stemforge.train.setup import RunSpec, check_unchanged, resolve_run
from stemforge.train.throughput import Throughput, cpu_note, gpu_sized_on_cpu
from stemforge.train.validation import validation_loss, validation_set

#: The autocast dtype of each precision (None: no autocast).
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``scorer(model)`` for ``select="sdr"``: the GNSDR (dB) of a model in memory on the valid split's
#: whole tracks, ``{"vocals": dB, "accompaniment": dB}``
#: (:class:`stemforge.evaluate.validation.SdrScorer` is one; the caller builds it, since ``train``
#: does not import ``evaluate``).
Scorer = Callable[[nn.Module], dict]
#: The note is given when the steps left would take at least this long (seconds) on the CPU.
CPU_NOTE_S = 900.0


class TrainStep:
    """Forward, loss (``config.loss``), backward and Adam update of one batch: the step :func:`train` runs
    (also what ``benchmarks/train.py`` times on in-memory tensors).

    Args:
        model: the U-Net, on ``device`` (possibly wrapped by DDP / torch.compile).
        parameters: its parameters (for the optimizer).
        config: the TrainConfig (lr, betas, eps, precision, seed).
        device: a ``torch.device``.
        rank: process rank (dropout streams differ per rank).
    """

    def __init__(self, model: nn.Module, parameters, config: TrainConfig, device: torch.device, rank: int = 0):
        self.model = model
        self.config = config
        self.device = device
        self.rank = rank
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.Adam(parameters, lr=config.lr, betas=config.betas, eps=config.eps, **fused)
        self.autocast_dtype = AUTOCAST[config.precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.generator = torch.Generator(device=device)

    def __call__(self, step: int, mixture: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Run step ``step`` (0-based) on ``mixture``/``target`` ``[batch, channels, n_bins, P]``
        float32; returns the loss (a detached 0-d tensor on the device; no synchronization)."""
        self.generator.manual_seed(step_torch_seed(self.config.seed, self.rank, step))
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            mask = self.model(mixture, generator=self.generator)
        loss = loss_fn(mask.float(), mixture, target, self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def set_lr(self, lr: float) -> None:
        """The optimizer's learning rate, every parameter group."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def train(
    datadir: DataDir,
    out_dir: str | os.PathLike,
    train_config: TrainConfig,
    unet_config=None,
    progress: ProgressFn | None = None,
    device: str | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    target: str | None = None,
    scorer: Scorer | None = None,
) -> TrainResult:
    """Train a U-Net on ``datadir`` (a :class:`~stemforge.store.DataDir`) into ``out_dir``:
    ``run(resolve_run(...), progress)``.

    Args:
        datadir: the DataDir (its ``train`` rows are trained on, ``valid`` rows validate).
        out_dir: the run folder (created); see :mod:`stemforge.train.rundir` for what it holds.
        train_config: :class:`~stemforge.train.config.TrainConfig`.
        unet_config: :class:`~stemforge.model.config.UNetConfig` (its ``target`` is the target;
            its ``patch_frames`` is set to ``train_config.patch_frames``). Its ``channels`` must
            be the DataDir's and its bins (``first_bin`` .. ``first_bin + n_bins - 1``) among
            the stored ones (:func:`~stemforge.train.setup.check_model_fits`). None with
            ``init`` or ``resume``: the checkpoint's.
        progress: called with :class:`~stemforge.train.config.TrainEvent` values (rank 0 only).
        device: None/``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``
            (:func:`stemforge.core.device.resolve_device`; under torchrun, ``cuda`` means the
            process's ``LOCAL_RANK`` GPU).
        resume: continue the run of ``out_dir/last.pt``. Its UNetConfig and the
            :data:`~stemforge.train.config.RESUME_FIXED` fields of its TrainConfig must equal
            the given ones, and the DataDir's manifest must be the one it was trained on;
            ``steps`` may be raised (not under the ``cosine`` schedule, which spans ``steps``).
        init: fine-tune: a checkpoint (one net, or two: the net of ``target`` is taken) whose
            weights the new run starts from (:func:`~stemforge.train.setup.init_from_checkpoint`).
            Not with ``resume``.
        target: ``vocals`` or ``accompaniment``; None: ``unet_config.target`` (with ``init``:
            the one-net checkpoint's target, and required for a two-net checkpoint).
        scorer: with ``train_config.select == "sdr"`` (required then): ``scorer(model) ->
            {"vocals": GNSDR dB, "accompaniment": GNSDR dB}`` on the valid split's whole tracks
            (:class:`stemforge.evaluate.validation.SdrScorer`); the target's GNSDR picks best.pt.

    Returns:
        a :class:`~stemforge.train.config.TrainResult`. Ctrl-C (SIGINT) or SIGTERM between
        steps writes last.pt and returns with ``interrupted=True`` and ``stopped_by`` naming the
        signal (a second signal raises KeyboardInterrupt at once).

    Raises:
        StemforgeError: bad arguments, empty train split, an existing run without ``resume``.
        RunLockedError: another run is training in ``out_dir``.
        ConfigMismatchError: resuming with another configuration or other data.
        CheckpointError: last.pt missing, unreadable or damaged on resume.
        PeerLostError: several processes, and one stopped answering or is gone.
    """
    spec = resolve_run(datadir, out_dir, train_config, unet_config, resume=resume, init=init, target=target,
                       device=device)
    return run(spec, progress, scorer)


def run(spec: RunSpec, progress: ProgressFn | None = None, scorer: Scorer | None = None) -> TrainResult:
    """Train the run ``spec`` (:func:`~stemforge.train.setup.resolve_run`) up to its steps, or
    until Ctrl-C (or SIGTERM). The run folder's lock is held throughout (rank 0 takes it; every
    process stops when it cannot). The global switches (deterministic algorithms,
    cudnn.benchmark) and the process group are restored on the way out, after the session has
    closed its batches and files and dropped its DistributedDataParallel wrapper (the rule of
    :func:`~stemforge.train.distributed.process_group`).

    Raises:
        RunLockedError: another run holds the folder.
        PeerLostError: with several processes, another one stopped answering within
            ``dist_timeout`` seconds or is gone.
    """
    cfg = spec.train_config
    if cfg.select == "sdr" and scorer is None:
        raise StemforgeError("select 'sdr' needs a scorer of the valid split (stemforge.evaluate.validation.SdrScorer)")
    with _switches(cfg, spec.device), process_group(spec.env, spec.device, cfg.dist_timeout) as group:
        session: Session | None = None
        try:
            with contextlib.ExitStack() as closing:
                _hold_folder(spec, closing)
                session = Session(spec, progress, group, closing, scorer)
                return _loop(session)
        except Exception as exc:
            lost = group.peer_lost(exc, session.step if session is not None else spec.start_step)
            if lost is None:
                raise
            raise lost from None


def _hold_folder(spec: RunSpec, closing: contextlib.ExitStack) -> None:
    """Rank 0 takes the run folder's lock for the session (``closing`` releases it) and checks
    that no other run wrote there since :func:`~stemforge.train.setup.resolve_run` looked; every
    process learns whether it could (a collective) and all stop together when not."""
    refused: StemforgeError | None = None
    if spec.env.is_main:
        try:
            closing.enter_context(RunDir(spec.out_dir).lock())
            check_unchanged(spec)
        except StemforgeError as exc:
            refused = exc
    if any_rank(refused is not None, spec.env, spec.device):
        raise refused or RunLockedError(f"{spec.out_dir}: rank 0 could not take the run folder (its message says why)")


@contextlib.contextmanager
def _switches(cfg: TrainConfig, dev: torch.device) -> Iterator[None]:
    """Deterministic algorithms and cudnn.benchmark as ``cfg`` asks, restored afterwards; the
    process's GPU selected (before NCCL initializes, so that it uses this GPU)."""
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = not cfg.deterministic
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.backends.cudnn.benchmark = previous_benchmark


class Session:
    """One session of a run: everything the loop shares, opened here in order (every attribute
    is set in ``__init__``). ``closing`` receives what must be closed when the session ends,
    whatever happens: the batches, the metrics file and the step (with it the DDP wrapper).

    Attributes:
        spec, cfg, env, dev, rundir: the run.
        step, start_step: the steps taken so far (in the run), at the start of this session.
        schedule: the learning rate, the best validation loss, early stopping.
        valset: the validation crops (None: no validation).
        batches, data_mode, data_message: the batches of the remaining steps and how they are made.
        model: the U-Net; stepper: its :class:`TrainStep` (on the DDP wrapper under torchrun).
        metrics: metrics.csv and TensorBoard (rank 0; None elsewhere).
        loss_sum, loss_n: the train losses since the last log step.
        initial_val, final_val, final_train: the losses to report.
        ema: the moving average of the weights (None without ``ema``); scorer: GNSDR of the
        valid split (``select="sdr"``); final_sdr, best_sdr: the latest and best GNSDR {stem: dB}.
    """

    def __init__(self, spec: RunSpec, progress: ProgressFn | None, group: ProcessGroup, closing: contextlib.ExitStack,
                 scorer: Scorer | None = None):
        cfg, env, dev = self.cfg, self.env, self.dev = spec.train_config, spec.env, spec.device
        self.spec, self.rundir = spec, RunDir(spec.out_dir)
        self._progress = progress if env.is_main else None
        resumed = spec.resumed
        extra = (resumed.extra or {}) if resumed is not None else {}
        self.start_step = self.step = spec.start_step
        self.schedule = Schedule(cfg, extra.get("schedule"), extra.get("best_val_loss"), extra.get("best_step"))
        self.initial_val: float | None = extra.get("initial_val_loss")
        self.final_val: float | None = None
        self.final_train: float | None = None
        self.scorer = scorer if cfg.select == "sdr" else None
        self.final_sdr: dict | None = None
        self.best_sdr: dict | None = extra.get("best_sdr")
        #: the validation loss of the best weights (under select "sdr" not the schedule's best value)
        self.best_loss: float | None = extra.get("best_loss", extra.get("best_val_loss") if cfg.select == "loss" else None)
        if env.is_main:
            self.rundir.path.mkdir(parents=True, exist_ok=True)

        # the data: validation crops, then the batches of the remaining steps
        sampler = PatchSampler.from_datadir(spec.datadir, patch_frames=cfg.patch_frames, min_vocal_db=cfg.min_vocal_db)
        self.steps_per_epoch = sampler.crops_per_epoch / (cfg.batch_size * env.world_size)  # float
        for message in spec.warnings:
            self.emit("warning", message=message)
        unet = spec.unet_config
        bins = {"first_bin": unet.first_bin, "n_bins": unet.n_bins, "plain": spec.plain}
        self.valset = None
        if cfg.val_crops:
            self.valset = validation_set(spec.datadir, unet.target, patch_frames=cfg.patch_frames, max_crops=cfg.val_crops,
                                         **bins)
        if self.valset is None:
            self.emit("warning", message=_no_validation_message(spec))
        remaining = range(self.step, self.step if self.schedule.stopped_early is not None else cfg.steps)

        def loading(message: str, done: int, total: int) -> None:
            self.emit("loading", message=message, done=done, total=total)

        source = open_batches(spec.datadir, sampler, unet.target, dev, remaining, batch_size=cfg.batch_size,
                              seed=cfg.seed, rank=env.rank, data_mode=cfg.data_mode, workers=cfg.workers,
                              prefetch=cfg.prefetch, progress=loading, remix=cfg.remix,
                              remix_aligned=cfg.remix_aligned, remix_gain_db=cfg.remix_gain_db,
                              remix_pitch=cfg.remix_pitch, **bins)
        closing.callback(source.close)
        self.batches = iter(source)
        self.data_mode, self.data_message = source.mode, source.message
        if spec.plain:
            self.data_message += "; plain |STFT| magnitudes (each track times its stored norm), as the init checkpoint was trained on"
        self.emit("data", message=self.data_message)

        # the model (restored on resume, the init's weights for a fine-tune) and its optimizer
        model = UNet(unet, generator=torch.Generator().manual_seed(cfg.seed))
        if resumed is not None:
            model.load_state_dict(resumed.raw["model_state"])
        elif spec.init_state is not None:
            model.load_state_dict(spec.init_state)
        model.to(dev)
        if dev.type == "cuda":
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema: WeightAverage | None = None
        if cfg.ema is not None:
            ema_state = extra.get("ema") if resumed is not None else None
            if resumed is not None and ema_state is None:
                raise CheckpointError(f"{self.rundir.last}: holds no moving average of the weights; cannot resume with ema")
            self.ema = WeightAverage(model, cfg.ema, ema_state)
        self.train_mode()
        net = group.wrap(model)
        if cfg.compile:
            net = torch.compile(net)
        self.stepper: TrainStep | None = TrainStep(net, model.parameters(), cfg, dev, env.rank)
        del net  # the stepper holds the only reference to the wrapper, dropped by _release
        closing.callback(self._release)
        if resumed is not None:
            if resumed.optimizer_state is None:
                raise CheckpointError(f"{self.rundir.last}: holds no optimizer state; cannot resume")
            self.stepper.optimizer.load_state_dict(resumed.optimizer_state)
            if resumed.scaler_state:
                self.stepper.scaler.load_state_dict(resumed.scaler_state)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.loss_n = 0

        # the files: metrics (appended to on resume) and train.json
        self.metrics: Metrics | None = None
        if env.is_main:
            self.metrics = closing.enter_context(Metrics(self.rundir, self.start_step, cfg.tensorboard))
            self.rundir.write_info(spec, self.data_mode)
        self._clock0 = time.perf_counter() - float(extra.get("elapsed_s") or 0.0)

    @property
    def eval_model(self) -> nn.Module:
        """The weights validated and saved as best.pt/model.pt: the moving average, or the model."""
        return self.ema.model if self.ema is not None else self.model

    def _release(self) -> None:
        """Drop the step (and with it the DDP wrapper) before the process group goes."""
        self.stepper = None

    def emit(self, kind: str, step: int | None = None, **fields: Any) -> None:
        """Send a :class:`TrainEvent` to ``progress`` (rank 0 only)."""
        if self._progress is not None:
            self._progress(TrainEvent(kind, self.step if step is None else step, self.cfg.steps, **fields))

    def elapsed(self) -> float:
        """Seconds of training in this run, earlier sessions included."""
        return time.perf_counter() - self._clock0

    def synchronize(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def train_mode(self) -> None:
        """The model in training mode; with ``freeze_bn`` its BatchNorm layers in eval mode."""
        self.model.train()
        if self.cfg.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()


def _no_validation_message(spec: RunSpec) -> str:
    if not spec.train_config.val_crops:
        return f"validation is off (val_crops 0): no validation loss; {MODEL_NAME} will hold the last weights, not the best"
    return (
        f"{spec.datadir.path} has no 'valid' rows: training runs without validation (no validation loss) and "
        f"{MODEL_NAME} will hold the last weights, not the best. Ingest more songs (a corpus's official split "
        f"puts some in valid) or re-ingest with `stemforge ingest ... --valid-fraction 0.1` to hold songs out."
    )


def _loop(s: Session) -> TrainResult:
    """The step loop of a session, then :func:`~stemforge.train.records.finish`."""
    cfg, env = s.cfg, s.env
    if s.start_step == 0 and s.valset is not None:  # the untrained model: the run's first metrics row
        s.initial_val = _validate(s, 0)
        write_metrics(s, 0, {"epoch": 0.0, "val_loss": s.initial_val, **_sdr_columns(s)})
    s.emit("start", s.start_step)
    meter = Throughput(s.start_step, cfg.steps, cfg.batch_size * env.world_size, s.synchronize)
    interrupted = False
    # a GPU-sized model on a CPU: say what it costs once its second step is timed (the first
    # warms up), when that is long (CPU_NOTE_S)
    note_at = (s.start_step + 2 if gpu_sized_on_cpu(s.dev.type, s.spec.unet_config.width) and cfg.steps - s.start_step > 2
               else None)
    with StopFlag() as stop:
        while s.step < cfg.steps and s.schedule.stopped_early is None:
            # the schedule: this step's learning rate
            lr = s.schedule.step_lr(s.step)
            if lr is not None:
                s.stepper.set_lr(lr)
            # forward, loss, backward, update (TrainStep: autocast, GradScaler, Adam)
            began = time.perf_counter()
            mixture, target = next(s.batches)
            if s.dev.type == "cuda":
                mixture = mixture.contiguous(memory_format=torch.channels_last)
            s.loss_sum += s.stepper(s.step, mixture, target)
            if s.ema is not None:
                s.ema.update(s.model)
            s.loss_n += 1
            s.step = step = s.step + 1
            meter.stepped(step)
            if step == note_at:  # on the CPU the step is done when the call returns
                seconds = time.perf_counter() - began
                if seconds * (cfg.steps - step) >= CPU_NOTE_S:
                    s.emit("note", step, message=cpu_note(s.spec.unet_config.width, cfg.batch_size, cfg.steps - step, seconds))
            last = step == cfg.steps
            # log: the mean train loss since the last log step, over all processes
            row: dict[str, Any] = {}
            if step % cfg.log_every == 0 or last:
                row = _log(s, step, meter.interval_rate())
            else:
                s.emit("step", step)
            # validate and checkpoint (their time is not training time)
            validating = step % cfg.val_every == 0 or last
            checkpointing = step % cfg.checkpoint_every == 0 or last
            if validating or checkpointing:
                with meter.paused():
                    if validating:
                        row["val_loss"] = _validate(s, step)
                        row.update(_sdr_columns(s))
                    if row:
                        write_metrics(s, step, row)
                    if checkpointing or s.schedule.stopped_early is not None:  # early stop: the run ends here
                        s.emit("checkpoint", step, path=save_last(s, step))
            elif row:
                write_metrics(s, step, row)
            # Ctrl-C: several processes agree at log steps (a collective); one process checks each step
            check = not env.is_distributed or step % cfg.log_every == 0
            if not last and check and any_rank(stop.set, env, s.dev):
                interrupted = True
                break
    meter.stop()
    return finish(s, interrupted, meter.session_rate(s.step), stop.signal)


def _log(s: Session, step: int, rate: float) -> dict[str, Any]:
    """At a log step: the mean train loss since the previous one (all processes), reported
    with ``rate`` (patches/s); returns the metrics row so far."""
    mean = mean_over_ranks(s.loss_sum / max(1, s.loss_n), s.env)
    s.final_train = float(mean)
    s.loss_sum.zero_()
    s.loss_n = 0
    s.emit("step", step, train_loss=s.final_train, patches_per_s=rate, elapsed_s=s.elapsed())
    return {"train_loss": s.final_train, "patches_per_s": rate}


def _validate(s: Session, step: int) -> float | None:
    """The validation loss at ``step`` (None without validation); the best weights kept
    (best.pt, model.pt) and the schedule told (plateau, early stop). Every process acts alike
    (the loss is all-reduced)."""
    if s.valset is None:
        return None
    cfg, env = s.cfg, s.env
    model = s.eval_model
    val = validation_loss(model, s.valset, s.dev, cfg.batch_size, cfg.precision, env.rank, env.world_size, cfg.loss)
    score = val
    if s.scorer is not None:  # every process scores alike (the same weights, the same tracks)
        s.final_sdr = {k: float(v) for k, v in s.scorer(model).items()}
        score = s.final_sdr[s.spec.unet_config.target]
    s.train_mode()
    s.final_val = val
    verdict = s.schedule.validated(step, score)
    if verdict.best:
        s.best_loss = val
        s.best_sdr = dict(s.final_sdr) if s.final_sdr is not None else None
    if verdict.best and env.is_main:
        s.rundir.save_best(s.spec, model, step, val, sdr=s.final_sdr)
    if verdict.lr is not None:
        s.stepper.set_lr(verdict.lr)
    for message in verdict.messages:
        s.emit("schedule", step, message=message)
    s.emit("validation", step, val_loss=val, elapsed_s=s.elapsed(), val_sdr=s.final_sdr, best=verdict.best)
    return val


def _sdr_columns(s: Session) -> dict[str, Any]:
    """The GNSDR columns of the latest validation (empty without ``select="sdr"``)."""
    if s.scorer is None or s.final_sdr is None:
        return {}
    return {f"val_gnsdr_{stem}": value for stem, value in s.final_sdr.items()}
