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
    format_table,
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
                on_estimate=lambda e: [bar.line(line) for line in _estimate_lines(e)],
            )
        finally:
            bar.close()
    _summary(datadir, report, failures)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _estimate_lines(e) -> list[str]:
    """What the run is about to write, said before it writes (stemforge.augment.remix.AugmentEstimate)."""
    from stemforge.augment.remix import REUSE_WARNING

    lines = [
        f"augment: {e.remixes:,} remixes of {e.segment_s:g} s to write ({e.remixes * e.segment_s / 3600:.2f} h): "
        f"about {_size(e.bytes)}, with {_size(e.free_bytes)} free on the DataDir's disk",
        f"augment: {e.vocal_sources} vocal and {e.accompaniment_sources} accompaniment source track(s) "
        f"({e.vocal_source_s / 60:.1f} and {e.accompaniment_source_s / 60:.1f} min); each is used about "
        f"{e.vocal_uses:,.1f} times as vocals and {e.accompaniment_uses:,.1f} times as accompaniment, each second of "
        f"their audio in about {e.vocal_reuse:,.1f} and {e.accompaniment_reuse:,.1f} remixes",
    ]
    if e.heavy_reuse:
        lines.append(
            f"warning: each second of source audio goes into about {e.reuse:,.0f} remixes (more than {REUSE_WARNING:g}): "
            "these hours are mostly the same audio again; ingest more songs, or ask for fewer --hours"
        )
    return lines


def _summary(datadir, report, failures) -> None:
    b, a = report.before, report.after
    out("")
    if report.dropped:
        out(f"dropped {len(report.dropped)} stale remix(es) whose parents are no longer train tracks")
    if not report.added and not report.failed and b.total_h >= report.target_h - 1e-9:
        out(f"train split already holds {b.total_h:.2f} h (>= {report.target_h:.2f} h): nothing to do")
        out(f"DataDir: {datadir.path.resolve()}")
        return
    rows = [
        {"train": "before", "ingested_h": b.ingested_h, "remix_h": b.remix_h, "total_h": b.total_h},
        {"train": "added", "ingested_h": 0.0, "remix_h": report.added_h, "total_h": report.added_h},
        {"train": "after", "ingested_h": a.ingested_h, "remix_h": a.remix_h, "total_h": a.total_h},
    ]
    out(format_table(rows))
    out("")
    usage = [{"role": role, **u} for role, u in report.usage.items()]
    if usage:
        out(format_table(usage, ["role", "sources", "min", "max", "mean"]))
        out("")
    out(
        f"plan {report.plan_id}: {report.planned} remixes for {report.target_h:.2f} h, "
        f"{report.already} already stored, {len(report.added)} added ({report.added_h:.2f} h), "
        f"{len(report.failed)} failed"
    )
    out(
        f"sources: {report.sources} train tracks, {report.too_short} shorter than a segment, "
        f"{report.no_voice} without a voiced segment (accompaniment only)"
    )
    out(f"train split: had {b.total_h:.2f} h, added {report.added_h:.2f} h, now {a.total_h:.2f} h (target {report.target_h:.2f} h)")
    for line in failures.summary("the other remixes were stored"):
        err(line)
    out(f"DataDir: {datadir.path.resolve()}")


def register(app: typer.Typer) -> None:
    app.command("augment")(augment)
