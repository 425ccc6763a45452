"""What a training run is asked to do and what it reports: plain values, torch-free.

:class:`TrainConfig` (how to train), :class:`TrainEvent` (what ``progress`` receives),
:class:`TrainResult` (what :func:`~stemforge.train.loop.train` returns) and the names of the
choices they take. This is the one module of ``train`` the CLI imports at its top: it imports
neither torch nor the data stack, so ``stemforge train --help`` stays fast.

Each TrainConfig field the command line sets declares its option here, in the field's metadata
(:class:`Flag`: the option's names and help); ``stemforge train`` derives its options from them
(:func:`flags`), so a field, its default and its option are declared in one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from stemforge.core.config import _Config
from stemforge.core.errors import StemforgeError
from stemforge.model.config import LOSSES

PRECISIONS = ("fp32", "bf16", "fp16")
#: Learning-rate schedules: ``constant``; ``plateau`` (halved after ``patience`` validations
#: without a new best); ``cosine`` (from ``lr`` at step 0 to 0 at ``steps``).
LR_SCHEDULES = ("constant", "plateau", "cosine")
#: How batches are made: ``memory`` (resident on the device), ``streaming`` (read from the
#: shards by loader processes), ``auto`` (memory when it fits): :func:`~stemforge.train.batches.open_batches`.
DATA_MODES = ("auto", "memory", "streaming")
#: Where training examples come from: ``stored`` (crops of the stored magnitudes, the default)
#: or ``fresh`` (remixed every step from the stored waveforms: :mod:`~stemforge.train.remix`).
REMIX_MODES = ("stored", "fresh")
#: What picks best.pt: ``loss`` (the validation L1 loss on fixed crops) or ``sdr`` (GNSDR of the
#: target stem on the valid split's whole tracks, BSS Eval v3).
SELECT_MODES = ("loss", "sdr")
#: TrainConfig fields a resumed run must keep (they decide which batches and updates come next).
RESUME_FIXED = ("batch_size", "lr", "seed", "patch_frames", "min_vocal_db", "betas", "eps",
                "lr_schedule", "patience", "early_stop", "freeze_bn", "remix", "remix_aligned", "remix_gain_db",
                "remix_pitch", "ema", "select", "warmup", "loss")


@dataclass(frozen=True)
class Flag:
    """The command-line option of a :class:`TrainConfig` field (``stemforge train``).

    Attributes:
        help: the option's help.
        names: its names (``("--batch-size", "-b")``); default: ``--field-name``, and for a
            bool field ``--field-name/--no-field-name``.
        show_default: append `` [default: ...]`` (the field's default: ``yes``/``no`` for a
            bool, ``%g`` for a float); False where the help says it in words.
        switch: a boolean option that sets the field to one of two values (``data_mode``:
            ``--in-memory`` is ``"memory"``, ``--streaming`` ``"streaming"``).
    """

    help: str
    names: tuple[str, ...] = ()
    show_default: bool = True
    switch: tuple[Any, Any] | None = None

    def option_names(self, f: dataclasses.Field) -> tuple[str, ...]:
        """The names of the option of field ``f``."""
        if self.names:
            return self.names
        name = "--" + f.name.replace("_", "-")
        return (f"{name}/--no-{name[2:]}",) if f.type in ("bool", bool) else (name,)

    def hint(self, f: dataclasses.Field) -> str:
        """The option's first name, as an error message names it (``--compile``, ``--in-memory``)."""
        return self.option_names(f)[0].split("/")[0]

    def help_text(self, f: dataclasses.Field) -> str:
        """:attr:`help`, with the field's default when :attr:`show_default`."""
        if not self.show_default:
            return self.help
        value = f.default
        text = ("yes" if value else "no") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
        return f"{self.help} [default: {text}]"


def _flag(help: str, *names: str, show_default: bool = True, switch: tuple[Any, Any] | None = None) -> dict[str, Flag]:
    """Field metadata declaring the field's command-line option (:class:`Flag`)."""
    return {"flag": Flag(help, tuple(names), show_default, switch)}


@dataclass(frozen=True)
class TrainConfig(_Config):
    """How to train (the model itself is described by :class:`~stemforge.model.config.UNetConfig`).

    Attributes:
        steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: crops per step per process (the seed: 64).
        lr: Adam learning rate (the seed: 1e-3); betas, eps: Adam's other parameters.
        seed: seeds the initial weights, the crops and the dropout masks.
        precision: ``fp32``; ``bf16`` or ``fp16`` run the forward pass under ``torch.autocast``
            (``fp16`` with a GradScaler). On the CPU, bf16 is fast only where it has AVX512-BF16
            (measured: 2.0x fp32 at width 1); elsewhere use fp32.
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
        dist_timeout: with several processes (torchrun), seconds a process waits for the others
            in a collective (and at the rendezvous) before it stops with a
            :class:`~stemforge.core.errors.PeerLostError` naming the lost one: a frozen or dead
            peer ends the run instead of hanging it. The longest wait of a sound run is a
            checkpoint written by rank 0, or one process loading its data slower than another.

        remix: ``stored`` (crops of the stored magnitudes) or ``fresh``: every example remixed at
            each step from the train split's stored waveforms (:mod:`~stemforge.train.remix`):
            the vocals of one track and the accompaniment of an independently drawn one, each at
            a random offset, the vocals scaled by a random gain; magnitudes computed as ingest
            stores them.
        remix_aligned: with ``fresh``, the probability that an example is an aligned original
            (one track's vocals and accompaniment at the same offset, no gain: a stored crop).
        remix_gain_db: with ``fresh``, the vocal gain is drawn uniformly in
            ``[-remix_gain_db, +remix_gain_db]`` dB.
        remix_pitch: with ``fresh``, each stem of a remix is played at a speed of ``2 ** (u / 12)``,
            ``u`` drawn uniformly in ``[-remix_pitch, +remix_pitch]`` semitones for each stem
            independently: pitch and tempo change together (resampling), as other singers and
            songs would sound (0: off; aligned originals are never changed).
        ema: keep an exponential moving average of the weights with this decay per step
            (e.g. 0.995; None: off); the average is what is validated and what best.pt and
            model.pt hold (last.pt holds both).
        select: what picks best.pt: ``loss`` (the validation loss) or ``sdr`` (GNSDR in dB of the
            target stem over the valid split's whole tracks, BSS Eval v3, as ``stemforge evaluate``
            computes it; both are logged to metrics.csv).
        warmup: the learning rate rises linearly from ``lr / warmup`` to ``lr`` over the first
            ``warmup`` steps (0: none).
        loss: the training (and validation) loss of ``mask * mixture - target``: ``l1`` (the
            seed's) or ``l2`` (:func:`~stemforge.model.unet.loss_fn`).

    ``lr_schedule``, ``patience``, ``early_stop``, ``freeze_bn``, ``dist_timeout`` and the fields
    after them enter the hash only when they differ from their defaults, so the configurations of runs recorded before they existed keep their hashes.
    The fields with a ``flag`` in their metadata are ``stemforge train``'s options (:class:`Flag`).
    """

    _HASH_IF_SET: ClassVar[tuple[str, ...]] = ("lr_schedule", "patience", "early_stop", "freeze_bn", "dist_timeout",
                                               "remix", "remix_aligned", "remix_gain_db", "ema", "select", "warmup",
                                               "remix_pitch", "loss")

    steps: int = field(default=10000, metadata=_flag("Optimizer steps in total."))
    batch_size: int = field(default=64, metadata=_flag("Crops per step (per process).", "--batch-size", "-b"))
    lr: float = field(default=1e-3, metadata=_flag("Adam learning rate."))
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = field(default=0, metadata=_flag("Seeds weights, crops and dropout."))
    precision: str = field(default="fp32", metadata=_flag("fp32 | bf16 | fp16 (autocast; fp16 with loss scaling)."))
    data_mode: str = field(default="auto", metadata=_flag(
        "Hold the train magnitudes in GPU memory (or RAM) / stream crops from the shards. Default: in memory when "
        "they take at most half the free memory.", "--in-memory/--streaming", show_default=False,
        switch=("memory", "streaming")))
    workers: int | None = field(default=None, metadata=_flag(
        "Loader processes when streaming (default: 1 on CPU, else cores/2, at most 8).", "--workers", "-j",
        show_default=False))
    prefetch: int = 3
    compile: bool = field(default=False, metadata=_flag("torch.compile the model."))
    patch_frames: int = field(default=128, metadata=_flag(
        "Frames per training crop, a multiple of 64 (default: the geometry's, 128 at seed/paper, 512 at fullband; "
        "with --resume: the run's).", show_default=False))
    min_vocal_db: float | None = field(default=None, metadata=_flag(
        "Reject crops whose vocals are this many dB under the track's loudest vocal frame (e.g. -30).",
        show_default=False))
    val_every: int = field(default=500, metadata=_flag("Validate every N steps."))
    val_crops: int = 256
    checkpoint_every: int = field(default=500, metadata=_flag("Write last.pt every N steps."))
    log_every: int = field(default=10, metadata=_flag(
        "A metrics row, and a progress line when stderr is not a terminal, every N steps."))
    tensorboard: bool = field(default=True, metadata=_flag("Write TensorBoard logs."))
    deterministic: bool = field(default=False, metadata=_flag("Deterministic algorithms (slower on GPU)."))
    dist_timeout: float = field(default=300.0, metadata=_flag(
        "Several processes (torchrun): seconds to wait for the others in a collective before stopping with a message "
        "naming the lost one."))
    lr_schedule: str = field(default="constant", metadata=_flag(
        "constant | plateau (halve the rate after --patience validations without a new best) | cosine (to 0 at "
        "--steps)."))
    patience: int = field(default=5, metadata=_flag("Validations without a new best before plateau halves the rate."))
    early_stop: int | None = field(default=None, metadata=_flag(
        "Stop after N validations in a row without a new best validation loss (default: never).", show_default=False))
    freeze_bn: bool = field(default=False, metadata=_flag(
        "Keep the BatchNorm running statistics fixed (default: yes with --init, else no).", show_default=False))
    remix: str = field(default="stored", metadata=_flag(
        "stored (crops of the stored magnitudes) | fresh (each example remixed every step from the train split's "
        "stored waveforms: vocals and accompaniment of independently drawn tracks at random offsets and gains)."))
    remix_aligned: float = field(default=0.1, metadata=_flag(
        "With --remix fresh: probability that an example is an aligned original (a stored crop)."))
    remix_gain_db: float = field(default=3.0, metadata=_flag(
        "With --remix fresh: vocal gain drawn uniformly in +-this many dB."))
    remix_pitch: float = field(default=0.0, metadata=_flag(
        "With --remix fresh: each remixed stem's pitch and tempo changed together (resampled) by a draw within "
        "+-this many semitones (0: off)."))
    ema: float | None = field(default=None, metadata=_flag(
        "Exponential moving average of the weights with this decay per step (e.g. 0.995): validated and saved in "
        "best.pt/model.pt (default: off).", show_default=False))
    select: str = field(default="loss", metadata=_flag(
        "What picks best.pt: loss (validation loss on fixed crops) | sdr (GNSDR of the target on the valid split's "
        "whole tracks, BSS Eval v3; mono DataDirs)."))
    warmup: int = field(default=0, metadata=_flag("Linear learning-rate warm-up over the first N steps."))
    loss: str = field(default="l1", metadata=_flag(
        "l1 (the seed's: mean |mask * mixture - target|) | l2 (mean squared: loud bins weigh as SDR weighs them)."))

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
        positive_int("warmup", 0)
        if self.remix not in REMIX_MODES:
            raise StemforgeError(f"TrainConfig: remix must be one of {REMIX_MODES}, got {self.remix!r}")
        if self.loss not in LOSSES:
            raise StemforgeError(f"TrainConfig: loss must be one of {LOSSES}, got {self.loss!r}")
        if self.select not in SELECT_MODES:
            raise StemforgeError(f"TrainConfig: select must be one of {SELECT_MODES}, got {self.select!r}")
        for name, lo, hi in (("remix_aligned", 0.0, 1.0), ("remix_gain_db", 0.0, 60.0), ("remix_pitch", 0.0, 12.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
                raise StemforgeError(f"TrainConfig: {name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.ema is not None:
            v = self.ema
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v < 1.0):
                raise StemforgeError(f"TrainConfig: ema must be a decay in (0, 1), got {v!r}")
            object.__setattr__(self, "ema", float(v))
        positive_int("val_crops", 0)
        if self.workers is not None:
            positive_int("workers", 0)
        for name in ("lr", "eps", "dist_timeout"):
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
        what ``plateau`` halved it to) except under ``cosine``, which is a function of the step;
        during the ``warmup`` steps that rate times ``(step + 1) / warmup``."""
        if self.lr_schedule == "cosine":
            rate = self.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, self.steps) / max(1, self.steps)))
        else:
            rate = current
        if step < self.warmup:
            rate = rate * (step + 1) / self.warmup
        return rate


def flags() -> Iterator[tuple[dataclasses.Field, Flag]]:
    """``(field, Flag)`` of every TrainConfig field that is a command-line option, in field order."""
    for f in dataclasses.fields(TrainConfig):
        if "flag" in f.metadata:
            yield f, f.metadata["flag"]


def check_values(overrides: dict[str, Any], unet_overrides: dict[str, Any], epochs: float | None, device: str) -> None:
    """The checks of :class:`TrainConfig`, ``epochs``, the device name and
    :class:`~stemforge.model.config.UNetConfig`, made on the values given (one at a time, in
    that order) before anything is opened. OptionError naming the first bad one (a field name,
    ``epochs`` or ``device``), the library's message as its reason."""
    from stemforge.core.device import resolve_device
    from stemforge.core.errors import OptionError
    from stemforge.model.config import UNetConfig

    checks = [(name, lambda n=name, v=value: TrainConfig(**{n: v})) for name, value in overrides.items()]
    if epochs is not None:
        checks.append(("epochs", lambda: check_epochs(epochs)))
    checks.append(("device", lambda: resolve_device(device)))
    checks += [(name, lambda n=name, v=value: UNetConfig(**{n: v})) for name, value in unet_overrides.items()]
    for name, check in checks:
        try:
            check()
        except StemforgeError as exc:
            raise OptionError(name, str(exc)) from None


def check_epochs(epochs: float) -> float:
    """``epochs`` as a float; StemforgeError unless it is a positive finite number."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not (epochs > 0 and math.isfinite(epochs)):
        raise StemforgeError(f"epochs must be a positive number, got {epochs!r}")
    return float(epochs)


@dataclass(frozen=True)
class TrainEvent:
    """What ``progress`` receives.

    ``kind``, in the order they come:
        ``"warning"`` (message: something the user should act on, e.g. no validation split),
        ``"loading"`` (message: what is being read, e.g. the train split into RAM; done and
        total: tracks read so far and in all, from 0 to total), ``"data"`` (message: how batches
        are made), ``"validation"`` of the untrained model (step 0 of a new run), ``"start"``
        (step: the first step of this session, total_steps), then ``"step"`` after each step
        (train_loss, patches_per_s and elapsed_s are set at log steps: mean loss and patches/s
        since the previous log step), ``"note"`` (message: once, after the first steps of a
        GPU-sized run on a CPU: what it would cost, what a CPU-sized run is),
        ``"validation"`` (val_loss), ``"schedule"`` (message: the learning rate was halved, or
        training stops early), ``"checkpoint"`` (path), ``"interrupted"`` (path: the
        checkpoint written; message: the signal, ``SIGINT`` or ``SIGTERM``) and ``"done"``
        (train_loss, val_loss: the latest; patches_per_s: the session's).

    ``elapsed_s``: seconds of training in the run so far (earlier sessions included).
    ``val_sdr`` (``"validation"`` with ``select="sdr"``): ``{stem: GNSDR dB}`` on the valid
    split; ``best``: that validation gave new best weights.
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
    done: int = 0
    total: int = 0
    val_sdr: dict | None = None
    best: bool = False


ProgressFn = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """What :func:`~stemforge.train.loop.train` did.

    Attributes:
        out_dir: the run folder.
        step: steps taken in total (the checkpoint's step).
        total_steps: the configured number of steps.
        interrupted: stopped early by Ctrl-C (SIGINT) or SIGTERM; last.pt holds the state at ``step``.
        last_checkpoint, best_checkpoint, model_path: see :mod:`stemforge.train.rundir`
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
        stopped_by: the signal that interrupted the run, ``"SIGINT"`` or ``"SIGTERM"`` (None:
            not interrupted, or stopped because another process was).
        select: what picked best.pt (``loss`` or ``sdr``); best_sdr, final_sdr: with ``sdr``, the
            valid split's GNSDR ``{stem: dB}`` of the best weights (at ``best_step``; their
            validation loss is ``best_val_loss``) and of the last validation.
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
    stopped_by: str | None = None
    select: str = "loss"
    best_sdr: dict | None = None
    final_sdr: dict | None = None

    def summary_lines(self) -> list[str]:
        """What the run did and where its files are, as ``stemforge train`` ends: one ``label:
        value`` line each, the values in one column; losses as metrics.csv writes them (6
        significant digits). model.pt is named only when it exists."""

        def loss(v):
            return "-" if v is None else f"{v:.6g}"

        rows = [("steps", f"{self.step} of {self.total_steps}")]
        if self.stopped_early is not None:
            rows.append(("stopped early", f"at step {self.stopped_early} (no new best validation loss)"))
        if self.interrupted:
            rows.append(("stopped by", self.stopped_by or "another process"))
        rows += [
            ("device", f"{self.device} x {self.world_size}"),
            ("data", {"memory": "resident", "remix": "fresh remixes"}.get(self.data_mode, "streamed")),
            ("train loss (last interval)", loss(self.final_train_loss)),
            ("validation loss (initial)", loss(self.initial_val_loss)),
            ("validation loss (latest)", loss(self.final_val_loss)),
            ("validation loss (best)", f"{loss(self.best_val_loss)} (step {self.best_step})"
             if self.best_val_loss is not None else "- (no validation)"),
        ]
        if self.select == "sdr":
            def gnsdr(d):
                return "-" if d is None else "  ".join(f"{stem} {v:.2f} dB" for stem, v in d.items())

            rows[-1] = ("validation loss (best)", f"{loss(self.best_val_loss)} (step {self.best_step}, picked by GNSDR)")
            rows += [("validation GNSDR (latest)", gnsdr(self.final_sdr)),
                     ("validation GNSDR (best)", f"{gnsdr(self.best_sdr)} (step {self.best_step})")]
        rows.append(("throughput", "-" if self.patches_per_s is None else f"{self.patches_per_s:.1f} patches/s"))
        model = Path(self.model_path)
        if not model.exists():
            rows.append(("model", f"none yet: no {model.name} (nor best.pt) in the run folder; {Path(self.last_checkpoint).name} "
                                  f"holds the weights at step {self.step}"))
        elif self.model_weights == "best":
            rows.append(("model (best)", str(model)))
        else:
            rows.append(("model (last)", f"{model}  (no validation: the weights at step {self.step}, not the best)"))
        rows += [("resume state", str(self.last_checkpoint)), ("metrics", str(self.metrics_path)),
                 ("loss curve", str(self.loss_plot))]
        if self.tensorboard_dir is not None:
            rows.append(("tensorboard", f"tensorboard --logdir {self.tensorboard_dir}"))
        width = max(len(label) for label, _ in rows) + 2
        return [f"{label + ':':<{width}}{value}" for label, value in rows]
