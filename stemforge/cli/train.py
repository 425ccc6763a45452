"""``stemforge train [DATA] --out runs/NAME``: train the U-Net on a DataDir (see docs/training.md)."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Optional

import typer

from stemforge.cli.common import (
    DATA_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    announce_data_dir,
    cli_errors,
    err,
    format_table,
    out,
    resolve_data_dir,
)
from stemforge.train.config import TrainConfig  # torch-free: its defaults show in --help

RUNS_DIR = "runs"


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _default_out(resume: bool) -> Path:
    """``runs/<UTC timestamp>`` for a new run; for ``--resume``, the newest run under ``runs/``."""
    from stemforge.core.errors import StemforgeError

    if resume:
        runs = sorted(Path(RUNS_DIR).glob("*/last.pt"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise StemforgeError(f"--resume without --out: no run under ./{RUNS_DIR}/ to resume (pass --out)")
        return runs[-1].parent
    return Path(RUNS_DIR) / _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


#: TrainConfig's defaults, shown in --help (the one place they are defined is TrainConfig).
_D = TrainConfig()


def _default(value) -> str:
    return f" [default: {value}]"


def train(
    data_arg: Optional[Path] = typer.Argument(None, metavar="[DATA]", help=DATA_HELP, show_default=False),
    data: Optional[Path] = typer.Option(None, "--data", help="Same as DATA.", show_default=False),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Run folder (default: runs/<UTC time>; with --resume: the newest run under runs/).",
        show_default=False,
    ),
    target: Optional[str] = typer.Option(None, "--target", help="What the mask extracts: vocals or accompaniment (default: UNetConfig's; with --resume: the run's).", show_default=False),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps in total." + _default(_D.steps), show_default=False),
    epochs: Optional[float] = typer.Option(
        None, "--epochs", help="Instead of --steps: passes over the train split (one pass = as many crops as it holds non-overlapping crops).",
        show_default=False,
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Crops per step (per process)." + _default(_D.batch_size), show_default=False),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate." + _default(f"{_D.lr:g}"), show_default=False),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16 | fp16 (autocast; fp16 with loss scaling)." + _default(_D.precision), show_default=False),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model." + _default("yes" if _D.compile else "no"), show_default=False),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Loader processes when streaming (default: 1 on CPU, else cores/2, at most 8).", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt (exactly where it stopped; unspecified options keep the run's values)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds weights, crops and dropout." + _default(_D.seed), show_default=False),
    variant: Optional[str] = typer.Option(
        None, "--variant", help="The U-Net: seed (the seed's code, 4x4), paper (5x5) or spleeter (Spleeter's layer order) (default: seed; with --init or --resume: the checkpoint's).",
        show_default=False,
    ),
    model_bins: Optional[int] = typer.Option(
        None, "--model-bins", help="Frequency bins the model sees, from its first bin (bin 1: DC dropped; 0 for --variant spleeter); a multiple of 64 (default: 512 at 16 kHz / n_fft 1024, 1024 at fullband, else n_fft/2).",
        show_default=False,
    ),
    patch_frames: Optional[int] = typer.Option(
        None, "--patch-frames", help="Frames per training crop, a multiple of 64 (default: the geometry's, 128 at seed/paper, 512 at fullband; with --resume: the run's).",
        show_default=False,
    ),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Fine-tune: start from this checkpoint's weights (one net, or the --target net of a two-net one such as import-spleeter's); its geometry and architecture must fit.",
        show_default=False,
    ),
    lr_schedule: Optional[str] = typer.Option(
        None, "--lr-schedule", help="constant | plateau (halve the rate after --patience validations without a new best) | cosine (to 0 at --steps)." + _default(_D.lr_schedule),
        show_default=False,
    ),
    patience: Optional[int] = typer.Option(None, "--patience", help="Validations without a new best before plateau halves the rate." + _default(_D.patience), show_default=False),
    freeze_bn: Optional[bool] = typer.Option(
        None, "--freeze-bn/--no-freeze-bn", help="Keep the BatchNorm running statistics fixed (default: yes with --init, else no).", show_default=False,
    ),
    early_stop: Optional[int] = typer.Option(None, "--early-stop", help="Stop after N validations in a row without a new best validation loss (default: never).", show_default=False),
    width: Optional[float] = typer.Option(None, "--width", help="Channel multiplier of the U-Net (default: UNetConfig's; 1.0 is the seed's size, 0.25 a fast CPU model).", show_default=False),
    kernel_size: Optional[int] = typer.Option(None, "--kernel-size", help="Kernel size: 4 (the seed's code) or 5 (the paper) (default: UNetConfig's).", show_default=False),
    in_memory: Optional[bool] = typer.Option(
        None, "--in-memory/--streaming",
        help="Hold the train magnitudes in GPU memory (or RAM) / stream crops from the shards. Default: in memory when they take at most half the free memory.",
        show_default=False,
    ),
    min_vocal_db: Optional[float] = typer.Option(None, "--min-vocal-db", help="Reject crops whose vocals are this many dB under the track's loudest vocal frame (e.g. -30).", show_default=False),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate every N steps." + _default(_D.val_every), show_default=False),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Write last.pt every N steps." + _default(_D.checkpoint_every), show_default=False),
    log_every: Optional[int] = typer.Option(
        None, "--log-every", help="A metrics row, and a progress line when stderr is not a terminal, every N steps." + _default(_D.log_every),
        show_default=False,
    ),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Write TensorBoard logs." + _default("yes" if _D.tensorboard else "no"), show_default=False),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic algorithms (slower on GPU)." + _default("yes" if _D.deterministic else "no"), show_default=False),
) -> None:
    """Train the U-Net (Jansson et al. 2017) on a DataDir's train split; validate on its valid split.

    Writes into the run folder: last.pt (resume state), best.pt and model.pt (best validation
    loss; model.pt is what `stemforge separate` takes; without a valid split model.pt is the
    last weights and there is no best.pt), metrics.csv, loss.png, tensorboard/.
    Progress: a live bar on a terminal; one line every --log-every steps in a log file.
    Ctrl-C writes last.pt and exits with code 130; --resume continues exactly there.
    Several GPUs or machines: torchrun --nproc-per-node N -m stemforge train ... (see docs/training.md).

    Example: stemforge train --out runs/vocals --steps 2000 --width 0.25 --device cpu

    Example: stemforge train stemforge-data --out runs/big --precision bf16 --batch-size 64 > train.log 2>&1
    """
    if data_arg is not None and data is not None and data_arg != data:
        raise typer.BadParameter("give the DataDir once (DATA or --data)", param_hint="--data")
    if steps is not None and epochs is not None:
        raise typer.BadParameter("give --steps or --epochs, not both", param_hint="--epochs")
    given = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision, "compile": compile_,
        "workers": workers, "min_vocal_db": min_vocal_db, "val_every": val_every,
        "checkpoint_every": checkpoint_every, "log_every": log_every, "tensorboard": tensorboard,
        "deterministic": deterministic, "patch_frames": patch_frames, "lr_schedule": lr_schedule,
        "patience": patience, "early_stop": early_stop, "freeze_bn": freeze_bn,
    }
    if in_memory is not None:
        given["data_mode"] = "memory" if in_memory else "streaming"
    unet_given = {"width": width, "kernel_size": kernel_size, "target": target, "n_bins": model_bins}
    given = {k: v for k, v in given.items() if v is not None}
    unet_given = {k: v for k, v in unet_given.items() if v is not None}
    _check_options(given, unet_given, epochs, device)
    if init is not None and resume:
        raise typer.BadParameter("--init starts a new run; --resume continues the run's last.pt: give one", param_hint="--init")
    if variant is not None:
        from stemforge.model.config import PRESETS

        if variant not in PRESETS:
            raise typer.BadParameter(f"choose one of {', '.join(PRESETS)}, not {variant!r}", param_hint="--variant")
        if init is not None or resume:
            raise typer.BadParameter(
                f"the architecture comes from the checkpoint with {'--init' if init is not None else '--resume'}", param_hint="--variant"
            )
    if init is not None and not init.is_file():
        raise typer.BadParameter(f"{init}: no such file", param_hint="--init")

    with cli_errors():
        from stemforge.core.errors import StemforgeError
        from stemforge.train.distributed import distributed_env

        env = distributed_env()
        option = data_arg if data_arg is not None else data
        data_path = announce_data_dir(option) if env.is_main else resolve_data_dir(option)[0]
        if out_dir is None:
            if env.is_distributed and not resume:
                raise StemforgeError("under torchrun pass --out (every process must agree on the run folder)")
            out_dir = _default_out(resume)
        _run(data_path, out_dir, env, resume=resume, given=given, unet_given=unet_given, epochs=epochs, device=device,
             variant=variant, init=init)


_OPTION_NAMES = {"compile": "--compile", "data_mode": "--in-memory", "kernel_size": "--kernel-size", "n_bins": "--model-bins"}


def _check_options(given: dict, unet_given: dict, epochs: float | None, device: str) -> None:
    """The library's own checks (TrainConfig, UNetConfig, the device name), made on the given
    values before anything is opened, so that a bad value is a usage error (exit 2) naming
    its option."""
    from stemforge.core.errors import StemforgeError
    from stemforge.train.config import check_epochs

    def option(name: str) -> str:
        return _OPTION_NAMES.get(name, "--" + name.replace("_", "-"))

    for name, value in given.items():  # one at a time, so that the message names the option
        try:
            TrainConfig(**{name: value})
        except StemforgeError as exc:
            raise typer.BadParameter(str(exc), param_hint=option(name)) from None
    if epochs is not None:
        try:
            check_epochs(epochs)
        except StemforgeError as exc:
            raise typer.BadParameter(str(exc), param_hint="--epochs") from None
    from stemforge.core.device import resolve_device

    try:
        resolve_device(device)
    except StemforgeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None
    if unet_given:
        from stemforge.model.config import UNetConfig

        for name, value in unet_given.items():
            try:
                UNetConfig(**{name: value})
            except StemforgeError as exc:
                raise typer.BadParameter(str(exc), param_hint=option(name)) from None


def _run(data_path: Path, out_dir: Path, env, *, resume: bool, given: dict, unet_given: dict, epochs, device,
         variant: str | None = None, init: Path | None = None) -> None:
    from stemforge.cli.progress import TrainProgress
    from stemforge.model.unet import UNet, count_parameters
    from stemforge.store import DataDir
    from stemforge.train.loop import run
    from stemforge.train.setup import resolve_run

    datadir = DataDir.open(data_path)
    new_variant = None if (resume or init is not None) else (variant or "seed")
    spec = resolve_run(datadir, out_dir, resume=resume, init=init, variant=new_variant, overrides=given,
                       unet_overrides=unet_given, epochs=epochs, device=device)
    cfg, unet = spec.train_config, spec.unet_config
    main = env.is_main
    if main:
        n_params = count_parameters(UNet(unet))
        what = f"resuming at step {spec.start_step}" if resume else "new run"
        err(f"run: {out_dir.resolve()} ({what})")
        if init is not None:
            err(f"init: the {unet.target} net of {init}")
        err(
            f"model: U-Net {unet.variant} width {unet.width:g}, kernel {unet.kernel_size}, target {unet.target}, "
            f"{unet.channels} channel(s) x bins {unet.first_bin}..{unet.first_bin + unet.n_bins - 1} x {unet.patch_frames} frames, "
            f"{n_params:,} parameters; "
            f"{cfg.steps} steps of {cfg.batch_size} crops x {env.world_size} process(es), lr {cfg.lr:g}, {cfg.precision}, seed {cfg.seed}"
        )
    progress = TrainProgress()
    try:
        result = run(spec, progress=progress if main else None)
    finally:
        progress.close()
    if not main:
        raise typer.Exit(EXIT_INTERRUPTED if result.interrupted else EXIT_OK)
    _summary(result)
    if result.interrupted:
        err(f"interrupted: continue with  stemforge train {datadir.path} --out {out_dir} --resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK)


def _summary(result) -> None:
    def loss(v):
        return "-" if v is None else f"{v:.5f}"

    rows = [
        {"what": "steps", "value": f"{result.step} of {result.total_steps}"},
        {"what": "device", "value": f"{result.device} x {result.world_size}"},
        {"what": "data", "value": "resident" if result.data_mode == "memory" else "streamed"},
        {"what": "train loss (last interval)", "value": loss(result.final_train_loss)},
        {"what": "validation loss: initial", "value": loss(result.initial_val_loss)},
        {"what": "validation loss: latest", "value": loss(result.final_val_loss)},
        {"what": "validation loss: best", "value": f"{loss(result.best_val_loss)} (step {result.best_step})" if result.best_val_loss is not None else "- (no validation)"},
        {"what": "throughput", "value": "-" if result.patches_per_s is None else f"{result.patches_per_s:.1f} patches/s"},
    ]
    if result.stopped_early is not None:
        rows.insert(1, {"what": "stopped early", "value": f"at step {result.stopped_early} (no new best validation loss)"})
    out(format_table(rows, ["what", "value"]))
    if result.model_weights == "best":
        out(f"model (best):  {result.model_path}")
    else:
        out(f"model (last):  {result.model_path}  (no validation: the weights at step {result.step}, not the best)")
    out(f"resume state:  {result.last_checkpoint}")
    out(f"metrics:       {result.metrics_path}")
    out(f"loss curve:    {result.loss_plot}")
    if result.tensorboard_dir is not None:
        out(f"tensorboard:   tensorboard --logdir {result.tensorboard_dir}")
