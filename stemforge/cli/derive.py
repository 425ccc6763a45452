"""``stemforge derive-vocals ORIGINAL KARAOKE``: vocals from a song and its karaoke version."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stemforge.cli.common import MIN_SCORE, MaxOffset, MinScore, Overwrite, cli_errors, err, out


def register(app: typer.Typer) -> None:
    app.command("derive-vocals")(derive_vocals)


def derive_vocals(
    original: Path = typer.Argument(..., help="The song with vocals (any format stemforge decodes)."),
    karaoke: Path = typer.Argument(..., help="Its karaoke/instrumental version (any format, rate, channels)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Vocals file to write (default: ./<original name>.vocals.wav).", show_default=False
    ),
    accompaniment_out: Optional[Path] = typer.Option(
        None, "--accompaniment-out", help="Also write the aligned, gain-corrected karaoke here.", show_default=False
    ),
    report: Optional[Path] = typer.Option(
        None, "--report", help="Write offset, gain, score and verdict as JSON here.", show_default=False
    ),
    min_score: MinScore = MIN_SCORE,
    max_offset: MaxOffset = 30.0,
    force: Overwrite = False,
) -> None:
    """Align a karaoke version to its original and derive the vocals by magnitude subtraction.

    Measures the offset (the time in the karaoke at which the original starts), the gain that
    brings the karaoke to the original's level, and a fit score in [0, 1]; a pair scoring below
    --min-score (a wrong pair, a different mix) is refused with exit code 3 and nothing is
    written. Outputs are 16 kHz mono wav; where the karaoke does not cover the original they
    hold zeros. The input files are never overwritten.

    Example: stemforge derive-vocals song.flac song_karaoke.mp3 -o song.vocals.wav --report song.pair.json
    """
    threshold = float(min_score)
    vocals_path = output if output is not None else Path(f"{original.stem}.vocals.wav")
    with cli_errors():
        from stemforge.karaoke.align import derive_to_files

        derived, written = derive_to_files(original, karaoke, vocals_path, accompaniment_out, report,
                                           min_score=threshold, max_offset_s=max_offset, force=force)
    a = derived.alignment
    start, end = a.covered_s if a.covered_s is not None else (0.0, derived.duration_s)
    out(f"offset    {a.offset_s:+.6f} s ({a.offset_samples:+d} samples at {a.original_rate} Hz)")
    out(f"gain      {a.gain_db:+.2f} dB (applied to the karaoke)")
    out(f"score     {a.score:.3f} (minimum {threshold:.2f})")
    out(f"coverage  {start:.2f}-{end:.2f} s of {derived.duration_s:.2f} s")
    out("verdict   accepted")
    for role, path in written.items():
        err(f"wrote {role}: {path}")
    if report is not None:
        err(f"wrote report: {report}")

