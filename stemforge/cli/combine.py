"""``stemforge combine``: a vocals checkpoint and an accompaniment checkpoint as one two-net
checkpoint; ``stemforge ensemble``: nets of one target as one checkpoint that averages their
masks."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from stemforge.cli.common import OverwriteOutput, cli_errors, out


def register(app: typer.Typer) -> None:
    app.command("combine")(combine)
    app.command("ensemble")(ensemble)


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
