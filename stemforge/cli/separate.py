"""``stemforge separate`` (songs -> vocals and accompaniment files) and ``stemforge evaluate``
(BSS Eval of a checkpoint on a DataDir split, with the mixture and oracle-mask references)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stemforge.cli.common import (
    DATA_HELP,
    EXIT_OK,
    EXIT_PARTIAL,
    announce_data_dir,
    check_device,
    cli_errors,
    err,
    format_table,
    out,
)

from stemforge.separate.naming import DEFAULT_TEMPLATE

FILENAME_HELP = (
    "Output path under OUTDIR; fields {track}, {stem} (vocals, accompaniment), {ext}. {track} is the "
    "input's name without its suffix, or the name of its folder when that name is generic (mixture, mix, "
    "original, song, ...: Artist - Title/mixture.wav -> 'Artist - Title'). Outputs stay under OUTDIR: "
    "no absolute path, no '..'."
)


def register(app: typer.Typer) -> None:
    app.command("separate")(separate)
    app.command("evaluate")(evaluate)


def _check_device(device: str) -> str:
    return check_device(device)


def _check_template(template: str) -> None:
    from stemforge.core.errors import OutputPathError
    from stemforge.separate.naming import check_template

    try:
        check_template(template)
    except OutputPathError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--filename {template!r}: "), param_hint="--filename") from None


def separate(
    model: Path = typer.Argument(..., help="Checkpoint (model.pt) written by train or import-chainer."),
    audio: List[Path] = typer.Argument(..., help="Audio files to separate (wav, flac, mp3, m4a, mp4...)."),
    outdir: Path = typer.Option(Path("separated"), "--outdir", "-o", help="Folder the stems go under."),
    fmt: str = typer.Option("wav", "--format", help="Output format: wav (32-bit float) or flac (24-bit)."),
    filename: str = typer.Option(DEFAULT_TEMPLATE, "--filename", help=FILENAME_HELP),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu, cuda or cuda:N."),
    hard_mask: bool = typer.Option(False, "--hard-mask", help="Binary mask (mask > 0.5) instead of the soft mask."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Resample the stems to this rate (default: the input's)."),
    mono: bool = typer.Option(False, "--mono", help="Downmix the stems to mono."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: its default)."),
) -> None:
    """Separate songs into vocals and accompaniment with a U-Net checkpoint.

    The mask is estimated at the model's 16 kHz mono STFT and applied full band: the stems keep
    the input's sample rate and channels, and vocals + accompaniment equals the input.
    `--sample-rate 16000 --mono` gives the seed's 16 kHz output. Files are processed one by
    one; a file that fails is reported in one line and the others go on (exit code 1). Existing
    outputs are never overwritten without --force.

    Example: stemforge separate model.pt song1.mp3 song2.wav -o separated --format flac
    """
    from tqdm import tqdm

    if fmt not in ("wav", "flac"):
        raise typer.BadParameter("must be wav or flac", param_hint="--format")
    _check_template(filename)
    _check_device(device)
    if sample_rate is not None and sample_rate < 1000:
        raise typer.BadParameter("must be at least 1000 Hz", param_hint="--sample-rate")
    _check_threads(threads)
    with cli_errors():
        import torch

        from stemforge.core import audio as audio_io
        from stemforge.core.errors import StemforgeError
        from stemforge.separate.naming import output_paths
        from stemforge.separate.separator import STEMS, Separator

        if threads:
            torch.set_num_threads(threads)
        sep = Separator.from_checkpoint(model, device=device, hard_mask=hard_mask)
        ck = sep.checkpoint
        err(f"model: {model} (target {ck.target}, width {ck.unet_config.width:g}, step {ck.step}) on {sep.device}")

        # Plan every file first: output paths, collisions, existing files, durations.
        jobs = []
        rows: list[dict] = []
        claimed: dict[Path, Path] = {}
        for src in audio:
            row = {"file": str(src), "duration_s": "", "status": "", "x_realtime": "", "output": ""}
            rows.append(row)
            problem = None
            try:
                paths = output_paths(outdir, filename, src, STEMS, fmt)
            except StemforgeError as exc:
                paths, problem = {}, str(exc)
            for p in paths.values():
                if p in claimed:
                    problem = f"its output {p} is also the output of {claimed[p]} (use --filename)"
                elif p.exists() and not force:
                    problem = f"{p} exists (use --force to overwrite)"
                if problem:
                    break
            if problem is None:
                try:
                    inf = audio_io.info(src)
                except StemforgeError as exc:
                    problem = str(exc)
            if problem:
                row["status"] = "failed"
                row["error"] = problem if problem.startswith(str(src)) else f"{src}: {problem}"
                continue
            for p in paths.values():
                claimed[p] = src
            jobs.append((src, paths, inf.duration_s, row))

        total = sum(d for _, _, d, _ in jobs)
        for row in rows:
            if row["status"] == "failed":
                err(f"failed: {row['error']}")
        bar = tqdm(total=round(total, 1), desc="separate", unit="s audio", dynamic_ncols=True, leave=True)
        try:
            for src, paths, duration, row in jobs:
                done_before = bar.n
                bar.set_postfix_str(src.name[:40])

                def progress(fraction: float, base=done_before, d=duration) -> None:
                    bar.update(round(base + fraction * d, 1) - bar.n)

                try:
                    res = sep.separate_file(src, paths, output_sample_rate=sample_rate, mono=mono, progress=progress)
                except (StemforgeError, OSError, RuntimeError, ValueError, MemoryError) as exc:
                    text = str(exc) if isinstance(exc, StemforgeError) else f"{type(exc).__name__}: {exc}"
                    row["status"] = "failed"
                    row["error"] = text if text.startswith(str(src)) else f"{src}: {text}"
                    bar.write(f"failed: {row['error']}", file=__import__("sys").stderr)
                    progress(1.0)
                    continue
                row.update(
                    status="ok",
                    duration_s=round(res.duration_s, 1),
                    x_realtime=round(res.speed, 1),
                    output=str(Path(next(iter(res.outputs.values()))).parent),
                )
        finally:
            bar.close()
    failed = [r for r in rows if r["status"] == "failed"]
    out("")
    out(format_table([{k: r[k] for k in ("file", "duration_s", "status", "x_realtime", "output")} for r in rows]))
    out(f"separated {len(rows) - len(failed)} of {len(rows)} files into {outdir}")
    if failed:
        err("failed (one line each):")
        for r in failed:
            err(f"  {r['error']}")
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


def _check_threads(threads: int) -> None:
    if threads < 0:
        raise typer.BadParameter(f"must be 0 (PyTorch's default) or more, got {threads}", param_hint="--threads")


def _empty_split_message(datadir, split: str) -> str:
    """No track in ``split``: which splits the DataDir holds and how to choose one."""
    held = datadir.select()["split"].value_counts()
    have = [name for name in ("train", "valid", "test") if name in held]
    if not have:
        return f"{datadir.path}: the DataDir holds no track to evaluate (ingest a corpus first)"
    counts = ", ".join(f"{name} {held[name]}" for name in have)
    return (
        f"{datadir.path}: no track in split {split!r}; it holds {counts} track(s): "
        f"choose one with --split {have[-1]} (or --split all)"
    )


def evaluate(
    model: Path = typer.Argument(..., help="Checkpoint (model.pt) to evaluate."),
    data: Optional[Path] = typer.Argument(None, help=DATA_HELP, show_default=False),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, valid, test or all."),
    output: Path = typer.Option(Path("report.csv"), "--output", "-o", help="Per-track CSV; the JSON and the PNG chart go beside it."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when available), cpu, cuda or cuda:N."),
    hard_mask: bool = typer.Option(False, "--hard-mask", help="Evaluate the binary mask (mask > 0.5)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many tracks."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for PyTorch (0: its default)."),
) -> None:
    """BSS Eval (SDR, SIR, SAR; NSDR, GNSDR; museval-style frame medians) of a checkpoint.

    Per track of the split: the stored 16 kHz vocals and accompaniment are the references and
    their sum the input. Scored side by side: the model, the mixture itself (the floor) and the
    ideal ratio mask |V|/(|V|+|A|) at the DataDir's STFT (the ceiling of a magnitude mask).
    Writes the per-track CSV, a JSON with the summary and a bar chart PNG.

    Example: stemforge evaluate model.pt ./stemforge-data --split test -o eval/report.csv
    """
    from tqdm import tqdm

    if split not in ("train", "valid", "test", "all"):
        raise typer.BadParameter("must be train, valid, test or all", param_hint="--split")
    _check_device(device)
    if limit is not None and limit < 1:
        raise typer.BadParameter(f"must be at least 1, got {limit}", param_hint="--limit")
    _check_threads(threads)
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
        sep = Separator.from_checkpoint(model, device=device, hard_mask=hard_mask)
        bar = tqdm(total=min(n, limit) if limit else n, desc=f"evaluate {split}", unit="track", dynamic_ncols=True)

        def progress(event: str, done: int, total: int) -> None:
            if event.startswith("failed:"):
                bar.write(f"failed: {event[len('failed:'):]}", file=__import__("sys").stderr)
            bar.update(1)

        try:
            report = evaluate_datadir(sep, datadir, split=split, limit=limit, progress=progress)
        finally:
            bar.close()
        report.meta["title"] = f"{model.name} on {split} ({report.meta['tracks']} tracks)"
        paths = report.write(output)
    cols = ["method", "stem", "tracks", "gnsdr", "gsir", "gsar", "sdr_frames", "sir_frames", "sar_frames"]
    out("")
    out(format_table([{c: r[c] for c in cols} for r in report.summary.to_dict(orient="records")], cols))
    out("gnsdr/gsir/gsar: duration-weighted means of whole-track NSDR/SIR/SAR (dB); *_frames: median over tracks of")
    out("the median over 1 s frames (BSS Eval v4, as museval). mixture = the input as estimate; oracle = ideal ratio mask.")
    for kind, p in paths.items():
        out(f"wrote {kind}: {p}")
    if report.failed:
        err(f"failed ({len(report.failed)} tracks, one line each):")
        for uid, why in report.failed:
            err(f"  {uid}: {why}")
    raise typer.Exit(EXIT_PARTIAL if report.failed else EXIT_OK)
