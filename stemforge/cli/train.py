"""``stemforge train [DATA] --out runs/NAME``: train the U-Net on a DataDir (see docs/training.md).

The options that set a :class:`~stemforge.train.config.TrainConfig` field are derived from the
field itself (its ``flag`` metadata: names and help; its default shown), so a field is declared
once, in :mod:`stemforge.train.config`; the others (the data, the run folder, what the run starts
from, the model's size) are declared here. What the run is, and every rule on combining options,
is :func:`stemforge.train.setup.resolve_run`'s; this module parses, prints, and maps errors to
exit codes. At its top it imports only the torch-free :mod:`stemforge.train.config`.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from stemforge.cli.common import (
    DATA_HELP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    announce_data_dir,
    cli_errors,
    err,
    out,
    resolve_data_dir,
)
from stemforge.core.errors import OptionError
from stemforge.train.config import TrainConfig, check_values, flags


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def _run_options(
    data_arg: Optional[Path] = typer.Argument(None, metavar="[DATA]", help=DATA_HELP, show_default=False),
    data: Optional[Path] = typer.Option(None, "--data", help="Same as DATA.", show_default=False),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Run folder (default: runs/<UTC time>-<pid>; with --resume: the newest run under runs/).",
        show_default=False,
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt (exactly where it stopped; unspecified options keep the run's values)."),
    any_world_size: bool = typer.Option(
        False, "--any-world-size", help="With --resume: continue a run made by another number of processes (the batches of the remaining steps change).",
    ),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Fine-tune: start from this checkpoint's weights (one net, or the --target net of a two-net one such as import-spleeter's); its geometry and architecture must fit.",
        show_default=False,
    ),
    target: Optional[str] = typer.Option(None, "--target", help="What the mask extracts: vocals or accompaniment (default: UNetConfig's; with --resume: the run's).", show_default=False),
    variant: Optional[str] = typer.Option(
        None, "--variant", help="The U-Net: seed (the seed's code, 4x4), paper (5x5) or spleeter (Spleeter's layer order) (default: seed; with --init or --resume: the checkpoint's).",
        show_default=False,
    ),
    width: Optional[float] = typer.Option(None, "--width", help="Channel multiplier of the U-Net (default: UNetConfig's; 1.0 is the seed's size, 0.25 a fast CPU model).", show_default=False),
    kernel_size: Optional[int] = typer.Option(None, "--kernel-size", help="Kernel size: 4 (the seed's code) or 5 (the paper) (default: UNetConfig's).", show_default=False),
    model_bins: Optional[int] = typer.Option(
        None, "--model-bins", help="Frequency bins the model sees, from its first bin (bin 1: DC dropped; 0 for --variant spleeter); a multiple of 64 (default: 512 at 16 kHz / n_fft 1024, 1024 at fullband, else n_fft/2).",
        show_default=False,
    ),
    epochs: Optional[float] = typer.Option(
        None, "--epochs", help="Instead of --steps: passes over the train split (one pass = as many crops as it holds non-overlapping crops).",
        show_default=False,
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps."),
) -> None:
    """Only its signature is used: the options of ``stemforge train`` that are not TrainConfig fields."""


#: UNetConfig fields set by an option above, and the option's name.
_UNET_OPTIONS = {"width": "--width", "kernel_size": "--kernel-size", "target": "--target", "n_bins": "--model-bins"}


def _config_parameters() -> list[inspect.Parameter]:
    """An option for each TrainConfig field that declares one (:func:`stemforge.train.config.flags`),
    None by default (not given: the run's, the checkpoint's or TrainConfig's value)."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f, flag in flags():
        kind = bool if flag.switch else next(t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None))
        option = typer.Option(None, *flag.option_names(f), help=flag.help_text(f), show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind]))
    return params


def train(**options: Any) -> None:
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
    given = {}
    for f, flag in flags():
        value = options.pop(f.name)
        if value is not None:
            given[f.name] = flag.switch[0 if value else 1] if flag.switch else value
    _train(given=given, **options)


train.__signature__ = inspect.Signature(
    [*inspect.signature(_run_options, eval_str=True).parameters.values(), *_config_parameters()]
)


def _train(*, data_arg: Path | None, data: Path | None, out_dir: Path | None, resume: bool, init: Path | None,
           target: str | None, variant: str | None, width: float | None, kernel_size: int | None,
           model_bins: int | None, epochs: float | None, device: str, given: dict[str, Any],
           any_world_size: bool = False) -> None:
    if data_arg is not None and data is not None and data_arg != data:
        raise typer.BadParameter("give the DataDir once (DATA or --data)", param_hint="--data")
    unet_given = {k: v for k, v in {"width": width, "kernel_size": kernel_size, "target": target, "n_bins": model_bins}.items()
                  if v is not None}
    _check_options(given, unet_given, epochs, device)
    from stemforge.train.setup import RequestError, check_request  # torch from here on

    try:
        check_request(resume=resume, init=init, variant=variant, epochs=epochs, steps_given="steps" in given)
    except RequestError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.option) from None
    with cli_errors():
        from stemforge.train.distributed import distributed_env

        env = distributed_env()
        option = data_arg if data_arg is not None else data
        data_path = announce_data_dir(option) if env.is_main else resolve_data_dir(option)[0]
        if out_dir is None:
            from stemforge.train.rundir import default_run_dir

            out_dir = default_run_dir(resume, distributed=env.is_distributed)
        _run(data_path, out_dir, env, resume=resume, given=given, unet_given=unet_given, epochs=epochs, device=device,
             variant=variant, init=init, any_world_size=any_world_size)


def _check_options(given: dict, unet_given: dict, epochs: float | None, device: str) -> None:
    """A bad value is a usage error (exit 2) naming its option, before anything is opened
    (:func:`stemforge.train.config.check_values`)."""
    try:
        check_values(given, unet_given, epochs, device)
    except OptionError as exc:
        hints = {**{f.name: flag.hint(f) for f, flag in flags()}, "epochs": "--epochs", "device": "--device"}
        hint = _UNET_OPTIONS[exc.option] if exc.option in unet_given else hints[exc.option]
        raise typer.BadParameter(exc.reason, param_hint=hint) from None


def _run(data_path: Path, out_dir: Path, env, *, resume: bool, given: dict, unet_given: dict, epochs, device,
         variant: str | None = None, init: Path | None = None, any_world_size: bool = False) -> None:
    from stemforge.console.progress import TrainProgress
    from stemforge.store import DataDir
    from stemforge.train.distributed import launch_command
    from stemforge.train.loop import run
    from stemforge.train.setup import resolve_run

    datadir = DataDir.open(data_path)
    new_variant = None if (resume or init is not None) else (variant or "seed")
    spec = resolve_run(datadir, out_dir, resume=resume, init=init, variant=new_variant, overrides=given,
                       unet_overrides=unet_given, epochs=epochs, device=device, any_world_size=any_world_size)
    main = env.is_main
    if main:
        for line in spec.summary_lines(init):
            err(line)
    scorer = None
    if spec.train_config.select == "sdr":
        from stemforge.evaluate.validation import SdrScorer

        scorer = SdrScorer(datadir, split="valid", target=spec.unet_config.target)
    progress = TrainProgress()
    try:
        result = run(spec, progress=progress if main else None, scorer=scorer)
    finally:
        progress.close()
    terminated = result.stopped_by == "SIGTERM"
    code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED if result.interrupted else EXIT_OK
    if not main:
        raise typer.Exit(code)
    for line in result.summary_lines():
        out(line)
    if result.interrupted:
        command = f"{launch_command(env.world_size, env.local_world_size)} {datadir.path} --out {out_dir} --resume"
        err(f"{'terminated' if terminated else 'interrupted'}: continue with  {command}")
    raise typer.Exit(code)
