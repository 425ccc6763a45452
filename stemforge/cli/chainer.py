"""``stemforge import-chainer``: the seed article's Chainer weights as a stemforge checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from stemforge.cli.common import OverwriteOutput, cli_errors, err, out


def register(app: typer.Typer) -> None:
    app.command("import-chainer")(import_chainer)


def import_chainer(
    source: Path = typer.Argument(..., help="Chainer weights written by chainer.serializers.save_npz (e.g. unet.model)."),
    output: Path = typer.Option(..., "--output", "-o", help="Checkpoint to write (e.g. model.pt)."),
    target: str = typer.Option("vocals", "--target", help="What the mask extracts: vocals or accompaniment."),
    force: OverwriteOutput = False,
) -> None:
    """Convert the seed's Chainer U-Net weights into a stemforge checkpoint.

    The kernel size and channel counts are read from the weights; the checkpoint records the
    default spectrogram configuration (16 kHz, n_fft 1024, hop 512), which is the seed's.

    Example: stemforge import-chainer unet.model -o model.pt
    """
    from stemforge.model import TARGETS

    if target not in TARGETS:
        raise typer.BadParameter(f"must be one of {', '.join(TARGETS)}", param_hint="--target")
    with cli_errors():
        from stemforge.core.errors import CheckpointError
        from stemforge.model.chainer import convert_chainer_npz
        from stemforge.model.checkpoint import load_checkpoint

        if output.exists() and not force:
            raise CheckpointError(f"{output}: exists; pass --force to overwrite it")
        convert_chainer_npz(source, output, target=target)
        summary = load_checkpoint(output).summary()
        err(f"read {source}")
        out(
            f"wrote {output}: target {summary['target']}, kernel {summary['kernel_size']}, "
            f"width {summary['width']}, {summary['parameters']:,} parameters, "
            f"spectrogram config {summary['spectrogram_config']}"
        )
