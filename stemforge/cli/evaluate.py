"""``stemforge evaluate``: BSS Eval of checkpoints and of other systems' stems, under one of two
protocols (labelled in every report):

* ``datadir`` (default): the DataDir's stored references at its geometry (16 kHz mono for the
  seed geometry): NSDR/GNSDR as Jansson et al. report them on iKala and MedleyDB;
* ``musdb18``: MUSDB18's original 44.1 kHz stereo tracks, BSS Eval v4 as museval: the numbers
  that sit beside published MUSDB18 tables (Open-Unmix, Spleeter, Demucs).
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

PROTOCOLS = ("datadir", "musdb18", "references")

#: Printed under every table of SIR/SAR/ISR (evaluate, demo): why frame-wise SIR/SAR/ISR can look wrong although
#: they are museval's values (docs/separation.md, "Reading the metrics").
METRICS_NOTE = [
    "Reading SIR/SAR/ISR: SDR compares an estimate with its reference directly; SIR (the other stem leaking in), SAR",
    "(artifacts) and ISR (distortion of the stem) split its error with 512-tap filters fitted to the references.",
    "Whole-track SIR/SAR (BSS Eval v3) are stable. The frame-wise ones (v4 image mode, as museval) use the fitted",
    "filters themselves, which band-limited references leave ill-determined (a resampled DataDir holds nothing above",
    "0.94 of its Nyquist, MUSDB18's AAC stems almost nothing above 16 kHz): frame-wise SIR/SAR/ISR can then be",
    "arbitrary, even below SDR, while SDR stays right. museval gives the same numbers (the tests check): compare",
    "methods by SDR and NSDR. Each frame-wise column is a median on its own (per track over frames, then over tracks).",
]


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def _empty_split_message(datadir, split: str) -> str:
    """Why a split has nothing to evaluate, which splits the DataDir holds, how to pick one."""
    held = datadir.select()["split"].value_counts()
    have = [name for name in ("train", "valid", "test") if name in held]
    if not have:
        return f"{datadir.path}: the DataDir holds no track to evaluate (ingest a corpus first)"
    counts = ", ".join(f"{name} {held[name]}" for name in have)
    return (
        f"{datadir.path}: no track in split {split!r}; it holds {counts} track(s): "
        f"choose one with --split {have[-1]} (or --split all)"
    )


def method_names(models: list[Path]) -> list[str]:
    """Row names for checkpoints: the file's stem, with its folder when two stems collide
    (``runs/a/model.pt`` and ``runs/b/model.pt`` -> ``a/model``, ``b/model``)."""
    stems = [p.stem for p in models]
    return [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in models]


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
    if protocol is None:
        protocol = "references" if reference_dir is not None else "musdb18" if root is not None else "datadir"
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}", param_hint="--protocol")
    if limit is not None and limit < 1:
        raise typer.BadParameter(f"must be at least 1, got {limit}", param_hint="--limit")
    if workers < 0:
        raise typer.BadParameter(f"must be 0 (one per core) or more, got {workers}", param_hint="--workers")
    if filename is not None:
        _check_filename(filename, estimates)
    if protocol == "datadir":
        if root is not None or reference_dir is not None or estimates or compare or tracks is not None or subset != "test":
            raise typer.BadParameter(
                "--root, --reference-dir, --subset, --tracks, --estimates and --compare belong to --protocol musdb18 or references",
                param_hint="--protocol",
            )
        if not 1 <= len(paths) <= 2:
            raise typer.BadParameter("the datadir protocol takes MODEL [DATA]", param_hint="MODEL [DATA]")
        if split not in ("train", "valid", "test", "all"):
            raise typer.BadParameter("must be train, valid, test or all", param_hint="--split")
        _evaluate_datadir(paths[0], paths[1] if len(paths) > 1 else None, split, output, device, options, limit, threads, frames, workers)
        return
    if protocol == "musdb18":
        if root is None:
            raise typer.BadParameter("the musdb18 protocol needs the MUSDB18 folder", param_hint="--root")
        if reference_dir is not None:
            raise typer.BadParameter("--reference-dir is the references protocol's; MUSDB18 is read from --root", param_hint="--reference-dir")
        if subset not in ("test", "train"):
            raise typer.BadParameter(f"must be test or train, got {subset!r}", param_hint="--subset")
    else:
        if reference_dir is None:
            raise typer.BadParameter("the references protocol needs the folder of reference stems", param_hint="--reference-dir")
        if root is not None or subset != "test":
            raise typer.BadParameter("--root and --subset are the musdb18 protocol's", param_hint="--reference-dir")
    if tracks is not None and tracks < 1:
        raise typer.BadParameter(f"must be at least 1, got {tracks}", param_hint="--tracks")
    if split != "test" or limit is not None or frames or workers:
        raise typer.BadParameter(
            "--split, --limit, --frames and --workers belong to the datadir protocol (use --tracks)", param_hint="--protocol"
        )
    n_methods = len(paths) + len(estimates)
    if n_methods == 0:
        raise typer.BadParameter("give a MODEL or --estimates DIR", param_hint="MODEL")
    if n_methods > 1 and not compare:
        raise typer.BadParameter(f"{n_methods} methods given: add --compare to score them in one table", param_hint="--compare")
    _evaluate_tracks(protocol, paths, estimates, root if protocol == "musdb18" else reference_dir, subset, tracks, filename, output, device, options, threads)


def _check_filename(filename: str, estimates: list) -> None:
    """``--filename``: only with ``--estimates``, and a template ``separate`` accepts."""
    from stemforge.core.errors import OutputPathError
    from stemforge.separate.naming import check_template

    if not estimates:
        raise typer.BadParameter("names where --estimates are: give --estimates DIR", param_hint="--filename")
    try:
        check_template(filename)
    except OutputPathError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--filename {filename!r}: "), param_hint="--filename") from None


def _evaluate_datadir(model, data, split, output, device, options, limit, threads, frames=False, workers=0) -> None:
    from stemforge.console.progress import Progress

    path = announce_data_dir(data)
    with cli_errors():
        import torch

        from stemforge.core.errors import StemforgeError
        from stemforge.evaluate.datadir import evaluate_datadir
        from stemforge.separate.separator import Separator
        from stemforge.store import DataDir

        if threads:
            torch.set_num_threads(threads)
        datadir = DataDir.open(path)
        n = len(datadir.select(split=None if split == "all" else split))
        if n == 0:
            raise StemforgeError(_empty_split_message(datadir, split))
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
        report.meta["protocol"] = "datadir"
        report.meta["label"] = (
            f"DataDir protocol: {report.meta['sample_rate'] / 1000:g} kHz {'mono' if datadir.config.channels == 1 else 'stereo'}, "
            "DataDir references (not comparable with MUSDB18 tables)"
        )
        report.meta["title"] = f"{model.name} on {split} ({report.meta['tracks']} tracks)"
        paths = report.write(output)
    columns = ["method", "stem", "tracks", "gnsdr", "gsir", "gsar", "gnsdr_v2", "gsir_v2", "gsar_v2"]
    legend = [
        "gnsdr/gsir/gsar: duration-weighted means over tracks of whole-track NSDR/SIR/SAR (dB), NSDR = SDR(estimate) -",
        "SDR(mixture); BSS Eval v3: mir_eval's bss_eval_sources (512-tap distortion filters, whole track, vocals and",
        "accompaniment together). *_v2: BSS Eval v2 gain-only (bss_decomp_gain, also in Huang et al.'s MIR-1K code).",
    ]
    if frames:
        columns += ["sdr_frames", "sir_frames", "sar_frames"]
        legend.append("*_frames: median over tracks of the median over 1 s frames (BSS Eval v4, as museval).")
    legend.append("mixture = the input as both estimates; oracle = ideal ratio mask at the DataDir's STFT.")
    if frames:  # how to read the frame-wise SIR/SAR, where they are printed
        legend += METRICS_NOTE
    _print_report(
        report,
        columns,
        legend,
        paths,
        failures,
    )


def _evaluate_tracks(protocol, models, estimates, root, subset, tracks, filename, output, device, options, threads) -> None:
    """The musdb18 protocol on MUSDB18's tracks under ``root``, or the references protocol on
    the songs of the reference folder ``root``: BSS Eval v4 as museval."""
    from stemforge.console.progress import Progress

    with cli_errors():
        import torch

        from stemforge.evaluate import musdb18, references
        from stemforge.separate.separator import Separator

        if threads:
            torch.set_num_threads(threads)
        methods = []
        for name, path in zip(method_names(models), models):
            methods.append(musdb18.model_method(Separator.from_checkpoint(path, device=device, **options), name=name))
        for folder in estimates:
            if protocol == "musdb18":
                methods.append(musdb18.EstimatesDir(folder, template=filename).method())
            else:
                methods.append(references.estimates_dir(folder, root, template=filename).method())
        if protocol == "musdb18":
            n, desc = len(musdb18.find_tracks(root, subset, tracks)), f"musdb18 {subset}"
        else:
            n, desc = len(references.find_songs(root, tracks)), "references"
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
                report = musdb18.evaluate_musdb18(methods, root, subset, limit=tracks, progress=progress)
            else:
                report = references.evaluate_references(methods, root, limit=tracks, progress=progress)
        finally:
            bar.close()
        written = report.write(output)
    _print_report(
        report,
        ["method", "stem", "tracks", "sdr", "sir", "sar", "isr"],
        [
            "medians over tracks of each track's median over 1 s frames (dB); mixture = the input as both stems (floor);",
            "oracle = ideal ratio mask |V|/(|V|+|A|) on the 4096/1024 Hann STFT at 44.1 kHz, per channel (ceiling).",
            *METRICS_NOTE,
        ],
        written,
        failures,
    )


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
