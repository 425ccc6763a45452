"""``stemforge evaluate``: BSS Eval of checkpoints and of other systems' stems, under one of three
protocols (labelled in every report):

* ``datadir`` (default): the DataDir's stored references at its geometry (16 kHz mono for the
  seed geometry): NSDR/GNSDR as Jansson et al. report them on iKala and MedleyDB;
* ``musdb18``: MUSDB18's original 44.1 kHz stereo tracks, BSS Eval v4 as museval: the numbers
  that sit beside published MUSDB18 tables (Open-Unmix, Spleeter, Demucs);
* ``references``: the same scoring for one's own songs' reference stems.

Which protocol a request is, its methods, and the columns and legend of its table are
:mod:`stemforge.evaluate.protocols`'; this module parses, prints, and maps errors to exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stemforge.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    Device,
    MaskPower,
    Threads,
    WienerIterations,
    announce_data_dir,
    cli_errors,
    err,
    format_table,
    out,
    separator_options,
)
from stemforge.console.failures import Failures
from stemforge.core.errors import OptionError
from stemforge.evaluate.protocols import legend, resolve_protocol, summary_columns  # no numpy at the top


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    paths: List[Path] = typer.Argument(
        None,
        help="datadir protocol: MODEL [DATA]. musdb18 and references: zero or more MODELs (several methods with --compare).",
        metavar="MODEL",
        show_default=False,
    ),
    protocol: Optional[str] = typer.Option(
        None,
        "--protocol",
        help="datadir (the DataDir's references), musdb18 (the original MUSDB18 tracks) or references (your reference "
        "folder); default: references with --reference-dir, musdb18 with --root, else datadir.",
        show_default=False,
    ),
    root: Optional[Path] = typer.Option(None, "--root", help="musdb18: the MUSDB18 (.stem.mp4) or MUSDB18-HQ folder holding train/ and test/."),
    reference_dir: Optional[Path] = typer.Option(
        None, "--reference-dir", help="references: REFS/<song>/{vocals,accompaniment}.wav [+ mixture.wav] (or REFS/vocals.wav: one song)."
    ),
    subset: str = typer.Option("test", "--subset", help="musdb18: MUSDB18's subset, test or train."),
    tracks: Optional[int] = typer.Option(None, "--tracks", help="musdb18, references: only the first N tracks (by name)."),
    estimates: Optional[List[Path]] = typer.Option(
        None,
        "--estimates",
        help="musdb18, references: stems on disk, the folders `stemforge separate -o DIR` writes (DIR/<track>/vocals.wav, "
        "accompaniment.wav) or museval's DIR/test/<track>/ (repeatable).",
    ),
    filename: Optional[str] = typer.Option(
        None, "--filename", help="--estimates: the --filename template they were written with by `stemforge separate` (default {track}/{stem}.{ext}).",
        show_default=False,
    ),
    compare: bool = typer.Option(False, "--compare", help="musdb18, references: several MODELs and/or --estimates in one table and one chart."),
    split: str = typer.Option("test", "--split", help="datadir: the split to evaluate: train, valid, test or all."),
    output: Path = typer.Option(Path("report.csv"), "--output", "-o", help="Per-track CSV; the JSON and the PNG chart go beside it."),
    device: Device = "auto",
    hard_mask: bool = typer.Option(False, "--hard-mask", help="Evaluate the binary mask (mask > 0.5)."),
    mask_power: MaskPower = None,
    wiener_iterations: WienerIterations = 0,
    limit: Optional[int] = typer.Option(None, "--limit", help="datadir: evaluate at most this many tracks."),
    threads: Threads = 0,
    frames: bool = typer.Option(False, "--frames", help="datadir: also the frame-wise BSS Eval v4 medians (1 s frames, as museval); slower."),
    workers: int = typer.Option(0, "--workers", "-j", help="datadir: processes scoring tracks at once (0: one per core on the CPU, 1 on a GPU)."),
) -> None:
    """BSS Eval of checkpoints (and of other systems' stems) against the mixture and the oracle mask.

    datadir protocol (default; "16 kHz mono, DataDir references" at the seed geometry): per
    track of the split, the stored vocals and accompaniment are the references and their sum
    the input; GNSDR/GSIR/GSAR of whole-track BSS Eval v3 (mir_eval's bss_eval_sources) and v2
    gain-only, frame medians with --frames. musdb18 protocol: each original MUSDB18 track is
    separated at 44.1 kHz stereo (or its stems read from --estimates) and scored with BSS Eval
    v4 exactly as museval (1 s frames, median over frames, then over tracks): comparable with
    published MUSDB18 tables. references: the same scoring for your own songs' reference
    stems (--reference-dir) against --estimates and/or MODELs. All add the mixture (the floor)
    and the ideal ratio mask (the ceiling) as rows. Writes the per-track CSV, a JSON with the
    summary and a chart PNG (musdb18, references: also museval-style per-track JSON).

    Example: stemforge evaluate model.pt ./stemforge-data --split test -o eval/report.csv

    Example: stemforge evaluate spleeter.pt --root ~/musdb18 --tracks 5

    Example: stemforge separate model.pt ~/musdb18/test/*.stem.mp4 -o sep && stemforge evaluate --root ~/musdb18 --estimates sep

    Example: stemforge evaluate --reference-dir refs --estimates sep -o eval/mine.csv

    Example: stemforge evaluate a.pt b.pt --estimates demucs-out --compare --root ~/musdb18
    """
    paths = list(paths or [])
    estimates = list(estimates or [])
    options = separator_options(hard_mask, mask_power, wiener_iterations)
    try:  # which protocol, and whether every option is one it takes: a usage error (2) before anything is opened
        protocol = resolve_protocol(
            protocol, models=paths, estimates=estimates, root=root, reference_dir=reference_dir, subset=subset, tracks=tracks,
            filename=filename, compare=compare, split=split, limit=limit, frames=frames, workers=workers,
        )
    except OptionError as exc:
        raise typer.BadParameter(exc.reason, param_hint=exc.option) from None
    if protocol == "datadir":
        _evaluate_datadir(paths[0], paths[1] if len(paths) > 1 else None, split, output, device, options, limit, threads, frames, workers)
        return
    _evaluate_tracks(protocol, paths, estimates, root if protocol == "musdb18" else reference_dir, subset, tracks, filename, output, device, options, threads)


def _evaluate_datadir(model, data, split, output, device, options, limit, threads, frames=False, workers=0) -> None:
    from stemforge.console.progress import Progress

    path = announce_data_dir(data)
    with cli_errors():
        import torch

        from stemforge.evaluate.datadir import evaluate_datadir
        from stemforge.evaluate.protocols import datadir_tracks, label_datadir_report
        from stemforge.separate.separator import Separator
        from stemforge.store import DataDir

        if threads:
            torch.set_num_threads(threads)
        datadir = DataDir.open(path)
        n = datadir_tracks(datadir, split)
        sep = Separator.from_checkpoint(model, device=device, **options)
        if not workers:
            from stemforge.ingest.engine import default_workers

            workers = 1 if str(sep.device).startswith("cuda") else default_workers()
        bar = Progress(f"evaluate {split}", min(n, limit) if limit else n, "tracks")
        failures = Failures(bar.line, lambda: _failed_list(output), "tracks")

        def progress(event: str, done: int, total: int) -> None:
            if event.startswith("failed:"):  # failed:<uid>:<reason>
                uid, why = event[len("failed:") :].split(":", 1)
                failures.add(f"{uid}: {why.strip()}")
            bar.update(1)

        try:
            report = evaluate_datadir(sep, datadir, split=split, limit=limit, frames=frames, workers=workers, progress=progress)
        finally:
            bar.close()
        label_datadir_report(report, datadir, model, split)
        paths = report.write(output)
    _print_report(report, summary_columns("datadir", frames), legend("datadir", frames), paths, failures)


def _evaluate_tracks(protocol, models, estimates, root, subset, tracks, filename, output, device, options, threads) -> None:
    """The musdb18 protocol on MUSDB18's tracks under ``root``, or the references protocol on
    the songs of the reference folder ``root``: BSS Eval v4 as museval."""
    from stemforge.console.progress import Progress

    with cli_errors():
        import torch

        from stemforge.evaluate import musdb18, references
        from stemforge.evaluate.protocols import count_tracks, methods

        if threads:
            torch.set_num_threads(threads)
        scored = methods(protocol, models, estimates, root, filename, device, **options)
        n, desc = count_tracks(protocol, root, subset, tracks)
        bar = Progress(desc, n, "tracks")
        failures = Failures(bar.line, lambda: _failed_list(output), "separations")
        track = ""

        def progress(event: str, done: int, total: int, fraction: float) -> None:
            nonlocal track
            if event.startswith("track:"):
                track = event[len("track:") :]
                bar.note(track)
            elif event.startswith("separate:"):  # which method, how far into this track
                bar.note(f"{track} ({event[len('separate:') :]} {fraction:.0%})")
            elif event.startswith("failed:"):  # failed:<method>:<track>:<reason>
                method, track_name, why = event[len("failed:") :].split(":", 2)
                failures.add(f"{track_name}: {why.strip()}" if method == "*" else f"{method} / {track_name}: {why.strip()}")
            elif event.startswith("done:"):
                bar.update(1)

        try:
            if protocol == "musdb18":
                report = musdb18.evaluate_musdb18(scored, root, subset, limit=tracks, progress=progress)
            else:
                report = references.evaluate_references(scored, root, limit=tracks, progress=progress)
        finally:
            bar.close()
        written = report.write(output)
    _print_report(report, summary_columns(protocol), legend(protocol), written, failures)


def _failed_list(output: Path) -> Path:
    """Beside the report: ``report.csv`` -> ``report-<UTC time>-failed.txt``."""
    from stemforge.console.failures import list_path

    return list_path(output.parent, f"{output.stem}")


def _print_report(report, columns: list[str], legend: list[str], written: dict, failures) -> None:
    """The protocol's label, the summary table, its legend, the files written, how many failed
    (each was named once, as it happened: :class:`~stemforge.console.failures.Failures`); then exit
    1 when anything failed, else 0."""
    out("")
    out(report.meta["label"])
    out(format_table([{c: r[c] for c in columns} for r in report.summary.to_dict(orient="records")], columns))
    for line in legend:
        out(line)
    for kind, p in written.items():
        out(f"wrote {kind}: {p}")
    for line in failures.summary("the others were scored"):
        err(line)
    raise typer.Exit(EXIT_PARTIAL if len(failures) else EXIT_OK)
