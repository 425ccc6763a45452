"""``stemforge combine``: a vocals checkpoint and an accompaniment checkpoint as one two-net
checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from stemforge.cli.common import OverwriteOutput, cli_errors, out


def register(app: typer.Typer) -> None:
    app.command("combine")(combine)


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
