"""``stemforge combine``: a vocals checkpoint and an accompaniment checkpoint as one two-net
checkpoint; ``stemforge ensemble``: nets of one target as one checkpoint that averages their
masks; ``stemforge defaults``: the separation defaults a checkpoint carries."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stemforge.cli.common import OverwriteOutput, check_mask_power, cli_errors, out


def register(app: typer.Typer) -> None:
    app.command("combine")(combine)
    app.command("ensemble")(ensemble)
    app.command("defaults")(defaults)


def combine(
    vocals: Path = typer.Argument(..., help="Checkpoint of a vocals net (stemforge train --target vocals)."),
    accompaniment: Path = typer.Argument(
        ..., help="Checkpoint of an accompaniment net (stemforge train --target accompaniment)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Two-net checkpoint to write (e.g. both.pt)."),
    force: OverwriteOutput = False,
) -> None:
    """Put a vocals net and an accompaniment net into one checkpoint, as Jansson et al. train
    one net per target.

    Both must have been trained on the same spectrogram configuration and see the same bins and
    channels; training state (optimizer, RNG) is not carried over.

    Example: stemforge combine runs/vocals/model.pt runs/accompaniment/model.pt -o both.pt
    """
    with cli_errors():
        from stemforge.core.errors import CheckpointError
        from stemforge.model.checkpoint import combine_checkpoints, load_checkpoint

        if output.exists() and not force:
            raise CheckpointError(f"{output}: exists; pass --force to overwrite it")
        combine_checkpoints(vocals, accompaniment, output)
        summary = load_checkpoint(output).summary()
        out(
            f"wrote {output}: {summary['target']} nets, {summary['parameters']:,} parameters, "
            f"spectrogram config {summary['spectrogram_config']}"
        )


def ensemble(
    checkpoints: List[Path] = typer.Argument(
        ..., help="Two or more checkpoints of one target (stemforge train's model.pt; an ensemble's members are taken one by one)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Ensemble checkpoint to write (e.g. ensemble.pt)."),
    force: OverwriteOutput = False,
) -> None:
    """Put nets of one target into one checkpoint whose mask is the mean of theirs.

    Nets trained apart (other seeds, losses or widths) err partly independently, so their mean
    mask separates better than either (docs/separation.md, "Ensembles"); separating costs the
    sum of their times. They must have been trained on the same spectrogram configuration and see
    the same bins, channels and patch frames; widths may differ. separate, evaluate and serve take
    the result like any checkpoint; train --init does not.

    Example: stemforge ensemble runs/seed0/model.pt runs/seed1/model.pt -o ensemble.pt
    """
    with cli_errors():
        from stemforge.core.errors import CheckpointError
        from stemforge.model.checkpoint import ensemble_checkpoints, load_checkpoint

        if output.exists() and not force:
            raise CheckpointError(f"{output}: exists; pass --force to overwrite it")
        ensemble_checkpoints(checkpoints, output)
        summary = load_checkpoint(output).summary()
        out(
            f"wrote {output}: {summary['members']} {summary['target']} nets averaged, {summary['parameters']:,} parameters, "
            f"spectrogram config {summary['spectrogram_config']}"
        )


def defaults(
    model: Path = typer.Argument(..., help="A checkpoint (stemforge train's model.pt, an ensemble, two nets)."),
    mask_power: Optional[float] = typer.Option(
        None, "--mask-power", metavar="P", show_default=False, callback=check_mask_power,
        help="Store P as the mask power separate, evaluate and serve use when given no --mask-power (see their --help).",
    ),
    clear: bool = typer.Option(False, "--clear", help="Remove the stored defaults: the commands' own apply again."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Write the checkpoint with its new defaults here instead of rewriting MODEL."
    ),
    force: OverwriteOutput = False,
) -> None:
    """Show or set the separation defaults a checkpoint carries, so that the model separates as
    it was scored (a recipe that evaluated at --mask-power 0.5 stores 0.5 with its model.pt).

    Without --mask-power or --clear it prints them. An option given to separate, evaluate or
    serve overrides the stored value; with --wiener-iterations the stored power is not used.
    MODEL is rewritten in place (atomically, weights and training state unchanged) unless -o.

    Example: stemforge defaults runs/mir1k/model.pt --mask-power 0.5
    """
    if clear and mask_power is not None:
        raise typer.BadParameter("give --mask-power or --clear, not both", param_hint="--clear")
    if output is not None and mask_power is None and not clear:
        raise typer.BadParameter("needs --mask-power or --clear (without them the defaults are shown)", param_hint="--output")
    with cli_errors():
        from stemforge.core.errors import CheckpointError
        from stemforge.model.checkpoint import load_checkpoint, set_inference_defaults

        if mask_power is None and not clear:
            stored = load_checkpoint(model).inference
            out(f"{model}: " + (f"mask power {stored['mask_power']:g}" if stored else "no stored defaults (the commands' own apply)"))
            return
        if output is not None and output.exists() and not force:
            raise CheckpointError(f"{output}: exists; pass --force to overwrite it")
        written = set_inference_defaults(model, mask_power, output)
        out(f"wrote {written}: " + (f"mask power {mask_power:g} by default" if mask_power is not None else "no stored defaults"))
