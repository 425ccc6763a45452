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


def train(
    data_arg: Optional[Path] = typer.Argument(None, metavar="[DATA]", help=DATA_HELP, show_default=False),
    data: Optional[Path] = typer.Option(None, "--data", help="Same as DATA.", show_default=False),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Run folder (default: runs/<UTC time>; with --resume: the newest run under runs/).",
        show_default=False,
    ),
    target: Optional[str] = typer.Option(None, "--target", help="What the mask extracts: vocals or accompaniment. [default: vocals]", show_default=False),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps in total. [default: 10000]", show_default=False),
    epochs: Optional[float] = typer.Option(
        None, "--epochs", help="Instead of --steps: passes over the train split (one pass = as many crops as it holds non-overlapping 128-frame crops).",
        show_default=False,
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Crops per step (per process). [default: 64]", show_default=False),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate. [default: 0.001]", show_default=False),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16 | fp16 (autocast; fp16 with loss scaling). [default: fp32]", show_default=False),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model. [default: no]", show_default=False),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Loader processes when streaming (default: 1 on CPU, else cores/2, at most 8).", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt (exactly where it stopped; unspecified options keep the run's values)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seeds weights, crops and dropout. [default: 0]", show_default=False),
    width: Optional[float] = typer.Option(None, "--width", help="Channel multiplier of the U-Net (1.0: the seed's; 0.25: a fast CPU model). [default: 1.0]", show_default=False),
    kernel_size: Optional[int] = typer.Option(None, "--kernel-size", help="4 (the seed's code) or 5 (the paper). [default: 4]", show_default=False),
    in_memory: Optional[bool] = typer.Option(
        None, "--in-memory/--streaming",
        help="Hold the train magnitudes in GPU memory (or RAM) / stream crops from the shards. Default: in memory when they take at most half the free memory.",
        show_default=False,
    ),
    min_vocal_db: Optional[float] = typer.Option(None, "--min-vocal-db", help="Reject crops whose vocals are this many dB under the track's loudest vocal frame (e.g. -30).", show_default=False),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate every N steps. [default: 500]", show_default=False),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Write last.pt every N steps. [default: 500]", show_default=False),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="A metrics row every N steps. [default: 10]", show_default=False),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Write TensorBoard logs. [default: yes]", show_default=False),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic algorithms (slower on GPU). [default: no]", show_default=False),
) -> None:
    """Train the U-Net (Jansson et al. 2017) on a DataDir's train split; validate on its valid split.

    Writes into the run folder: last.pt (resume state), best.pt and model.pt (best validation
    loss; model.pt is what `stemforge separate` takes), metrics.csv, loss.png, tensorboard/.
    Ctrl-C writes last.pt and exits with code 130; --resume continues exactly there.
    Several GPUs or machines: torchrun --nproc-per-node N -m stemforge train ... (see docs/training.md).

    Example: stemforge train --out runs/vocals --steps 2000 --width 0.25 --device cpu

    Example: stemforge train stemforge-data --out runs/big --precision bf16 --batch-size 64
    """
    if data_arg is not None and data is not None and data_arg != data:
        raise typer.BadParameter("give the DataDir once (DATA or --data)", param_hint="--data")
    if steps is not None and epochs is not None:
        raise typer.BadParameter("give --steps or --epochs, not both", param_hint="--epochs")
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--val-every", val_every),
                        ("--checkpoint-every", checkpoint_every), ("--log-every", log_every)):
        if value is not None and value < 1:
            raise typer.BadParameter(f"must be >= 1, got {value}", param_hint=name)
    if target is not None and target not in ("vocals", "accompaniment"):
        raise typer.BadParameter(f"must be vocals or accompaniment, got {target!r}", param_hint="--target")
    if precision is not None and precision not in ("fp32", "bf16", "fp16"):
        raise typer.BadParameter(f"must be fp32, bf16 or fp16, got {precision!r}", param_hint="--precision")

    with cli_errors():
        from stemforge.core.errors import StemforgeError
        from stemforge.train.loop import distributed_env

        env = distributed_env()
        option = data_arg if data_arg is not None else data
        data_path = announce_data_dir(option) if env.is_main else resolve_data_dir(option)[0]
        if out_dir is None:
            if env.is_distributed and not resume:
                raise StemforgeError("under torchrun pass --out (every process must agree on the run folder)")
            out_dir = _default_out(resume)
        _run(
            data_path, out_dir, env, resume=resume, target=target, steps=steps, epochs=epochs, batch_size=batch_size,
            lr=lr, device=device, precision=precision, compile_=compile_, workers=workers, seed=seed, width=width,
            kernel_size=kernel_size, in_memory=in_memory, min_vocal_db=min_vocal_db, val_every=val_every,
            checkpoint_every=checkpoint_every, log_every=log_every, tensorboard=tensorboard, deterministic=deterministic,
        )


def _run(data_path: Path, out_dir: Path, env, *, resume: bool, target, steps, epochs, batch_size, lr, device, precision,
         compile_, workers, seed, width, kernel_size, in_memory, min_vocal_db, val_every, checkpoint_every, log_every,
         tensorboard, deterministic) -> None:
    import dataclasses
    import sys

    from tqdm import tqdm

    from stemforge.store import DataDir
    from stemforge.train.loop import TrainConfig, resume_configs, steps_for_epochs
    from stemforge.train.loop import train as train_run
    from stemforge.train.model import UNet, UNetConfig, count_parameters

    datadir = DataDir.open(data_path)
    given = {
        "batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision, "compile": compile_,
        "workers": workers, "min_vocal_db": min_vocal_db, "val_every": val_every,
        "checkpoint_every": checkpoint_every, "log_every": log_every, "tensorboard": tensorboard,
        "deterministic": deterministic,
    }
    if in_memory is not None:
        given["data_mode"] = "memory" if in_memory else "streaming"
    unet_given = {"width": width, "kernel_size": kernel_size, "target": target}
    if resume:
        base_cfg, base_unet, at_step = resume_configs(out_dir)
    else:
        base_cfg, base_unet, at_step = TrainConfig(), UNetConfig(), 0
    cfg = dataclasses.replace(base_cfg, **{k: v for k, v in given.items() if v is not None})
    unet = dataclasses.replace(base_unet, **{k: v for k, v in unet_given.items() if v is not None})
    if epochs is not None:
        total = steps_for_epochs(datadir, epochs, cfg.batch_size, cfg.patch_frames, env.world_size, cfg.min_vocal_db)
        cfg = dataclasses.replace(cfg, steps=total)
    elif steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)

    main = env.is_main
    if main:
        n_params = count_parameters(UNet(unet))
        what = f"resuming at step {at_step}" if resume else "new run"
        err(f"run: {out_dir.resolve()} ({what})")
        err(
            f"model: U-Net width {unet.width:g}, kernel {unet.kernel_size}, target {unet.target}, {n_params:,} parameters; "
            f"{cfg.steps} steps of {cfg.batch_size} crops x {env.world_size} process(es), lr {cfg.lr:g}, {cfg.precision}, seed {cfg.seed}"
        )
    bar = tqdm(total=cfg.steps, initial=at_step, unit="step", desc="train", dynamic_ncols=True, disable=not main or None, file=sys.stderr)
    shown: dict[str, str] = {}

    def progress(event) -> None:
        if event.kind == "data":
            bar.write(f"data: {event.message}", file=sys.stderr)
        elif event.kind == "start":
            bar.n = event.step
            bar.refresh()
        elif event.kind == "step":
            bar.update(event.step - bar.n)
            if event.train_loss is not None:
                shown["loss"] = f"{event.train_loss:.5f}"
                shown["patches/s"] = f"{event.patches_per_s:.0f}"
                bar.set_postfix(shown, refresh=False)
        elif event.kind == "validation":
            shown["val"] = f"{event.val_loss:.5f}"
            bar.set_postfix(shown, refresh=True)
        elif event.kind == "interrupted":
            bar.write(f"interrupted at step {event.step}: wrote {event.path}", file=sys.stderr)

    try:
        result = train_run(datadir, out_dir, cfg, unet, progress=progress, device=device, resume=resume)
    finally:
        bar.close()
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
        {"what": "validation loss: best", "value": f"{loss(result.best_val_loss)} (step {result.best_step})" if result.best_val_loss is not None else "- (no valid split)"},
        {"what": "throughput", "value": "-" if result.patches_per_s is None else f"{result.patches_per_s:.1f} patches/s"},
    ]
    out(format_table(rows, ["what", "value"]))
    out(f"model (best):  {result.model_path}")
    out(f"resume state:  {result.last_checkpoint}")
    out(f"metrics:       {result.metrics_path}")
    out(f"loss curve:    {result.loss_plot}")
    if result.tensorboard_dir is not None:
        out(f"tensorboard:   tensorboard --logdir {result.tensorboard_dir}")
