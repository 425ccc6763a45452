"""``stemforge augment``: grow the train split to a target size with cross-song remixes."""

from __future__ import annotations

import math
from typing import Optional

import typer

from stemforge.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    DataArgument,
    DataOption,
    Workers,
    announce_data_dir,
    cli_errors,
    err,
    out,
    usage_errors,
)


def _gain_range(text: str) -> tuple[float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) == 1:
            v = float(parts[0])
            return (v, v)
        if len(parts) == 2:
            return (float(parts[0]), float(parts[1]))
    except ValueError:
        pass
    err(f"error: --vocal-gain-db expects LOW,HIGH in dB (e.g. -3,3 or --vocal-gain-db=-6,0), got {text!r}")
    raise typer.Exit(EXIT_USAGE)


def augment(
    ctx: typer.Context,
    data: DataArgument = None,
    data_option: DataOption = None,
    hours: float = typer.Option(
        ..., "--hours", help="Target size of the TRAIN split after the run, in hours (ingested + remixes), not hours to add."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the remix plan (same seed + same DataDir = byte-identical remixes)."),
    segment_seconds: Optional[float] = typer.Option(
        None,
        "--segment-seconds",
        help="Length of every remix (s); shorter train tracks are not used. Default: 10, or one training patch of the DataDir's geometry when longer (12 at fullband).",
        show_default=False,
    ),
    vocal_gain_db: str = typer.Option("-3,3", "--vocal-gain-db", help="LOW,HIGH: gain of the vocals drawn uniformly in this range (dB)."),
    pitch_semitones: float = typer.Option(
        0.0, "--pitch-semitones", help="N: shift the vocals by a pitch drawn uniformly in [-N, N] semitones (0: off)."
    ),
    min_vocal_activity: float = typer.Option(
        0.5, "--min-vocal-activity", help="Fraction of voiced frames the chosen vocal segment must have (0-1]."
    ),
    workers: Workers = 0,
) -> None:
    """Add cross-song remixes (the vocals of one train song over the accompaniment of another)
    until the train split totals --hours hours.

    --hours is the size of the train split AFTER the run, ingested tracks and remixes together:
    with 2 h of train songs, --hours 6 adds 4 h of remixes; a second run with --hours 6 does
    nothing, one with --hours 8 adds only the 2 h missing. Only train tracks are used (never
    valid/test, duplicates or remixes); vocals and accompaniment always come from two different
    songs; the vocal segment is one where the voice is active. The same --seed on the same
    DataDir gives byte-identical remixes. A killed run keeps what it committed.

    Example: stemforge augment --hours 17

    Example: stemforge augment ./stemforge-data --hours 6 --seed 1 --pitch-semitones 2 --workers 2
    """
    from stemforge.augment.remix import AugmentOptions, augment as run, default_segment_seconds
    from stemforge.console.failures import DATADIR_LOGS, Failures, list_path
    from stemforge.console.progress import Progress
    from stemforge.ingest.engine import default_workers
    from stemforge.store import DataDir

    if data is not None and data_option is not None and data != data_option:
        err(f"error: two DataDirs given ({data} and --data {data_option}); give one")
        raise typer.Exit(EXIT_USAGE)
    # Every argument is checked before the DataDir is looked up: a bad one is a usage error (2).
    if not (math.isfinite(hours) and hours >= 0):
        raise typer.BadParameter(f"must be a non-negative number of hours, got {hours}", param_hint="--hours")
    if seed < 0:
        raise typer.BadParameter(f"must be >= 0, got {seed}", param_hint="--seed")
    values = {"vocal_gain_db": _gain_range(vocal_gain_db), "pitch_semitones": pitch_semitones, "min_vocal_activity": min_vocal_activity}
    with usage_errors(ctx):  # --segment-seconds not given: the geometry's default, once the DataDir is open
        AugmentOptions(**values, **({} if segment_seconds is None else {"segment_seconds": segment_seconds}))
    path = announce_data_dir(data if data is not None else data_option)
    with cli_errors():
        datadir = DataDir.open(path)
        seconds = default_segment_seconds(datadir.config) if segment_seconds is None else segment_seconds
        options = AugmentOptions(**values, segment_seconds=seconds)
        bar = Progress("augment", None, "remixes")
        failures = Failures(bar.line, lambda: list_path(datadir.path / DATADIR_LOGS, "augment"), "remixes")

        def progress(event: str, uid: str, detail: str) -> None:
            if event == "dropped":
                bar.line(f"dropped stale remix {uid}: {detail}")
                return
            if event == "planned":
                if int(detail):
                    bar.set_total(int(detail))
                return
            if event == "failed":
                failures.add(detail)
            bar.update(1)

        try:
            report = run(
                datadir, hours, seed=seed, options=options, workers=workers or default_workers(), progress=progress,
                on_estimate=lambda e: [bar.line(line) for line in e.lines()],
            )
        finally:
            bar.close()
    for line in report.summary_lines():
        out(line)
    for line in failures.summary("the other remixes were stored"):
        err(line)
    out(f"DataDir: {datadir.path.resolve()}")
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


def register(app: typer.Typer) -> None:
    app.command("augment")(augment)
