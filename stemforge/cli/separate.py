"""``stemforge separate``: songs -> vocals and accompaniment files (``stemforge evaluate`` is
:mod:`stemforge.cli.evaluate`; where each input's files go is :mod:`stemforge.separate.naming`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stemforge.cli.common import (
    EXIT_OK,
    EXIT_PARTIAL,
    Device,
    MaskPower,
    Overwrite,
    Threads,
    WienerIterations,
    cli_errors,
    err,
    format_table,
    out,
    separator_options,
)
from stemforge.console.failures import Failures, list_path
from stemforge.separate.naming import DEFAULT_TEMPLATE

FILENAME_HELP = (
    "Output path under OUTDIR; fields {track}, {stem} (vocals, accompaniment), {ext}. {track} is the "
    "input's name without its suffix, or the name of its folder when that name is generic (mixture, mix, "
    "original, song, ...: Artist - Title/mixture.wav -> 'Artist - Title'). Outputs stay under OUTDIR: "
    "no absolute path, no '..'."
)


#: Rows of the closing table (the separated files) at most.
TABLE_ROWS = 50


def register(app: typer.Typer) -> None:
    app.command("separate")(separate)


def _template(template: str) -> str:
    from stemforge.core.errors import OutputPathError
    from stemforge.separate.naming import check_template

    try:
        check_template(template)
    except OutputPathError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--filename {template!r}: "), param_hint="--filename") from None
    return template


def _format(fmt: str) -> str:
    if fmt not in ("wav", "flac"):
        raise typer.BadParameter("must be wav or flac", param_hint="--format")
    return fmt


def separate(
    model: Path = typer.Argument(..., help="Checkpoint (model.pt) written by train, import-chainer, import-spleeter or combine."),
    audio: List[Path] = typer.Argument(..., help="Audio files to separate (wav, flac, mp3, m4a, mp4...)."),
    outdir: Path = typer.Option(Path("separated"), "--outdir", "-o", help="Folder the stems go under."),
    fmt: str = typer.Option("wav", "--format", help="Output format: wav (32-bit float) or flac (24-bit).", callback=_format),
    filename: str = typer.Option(DEFAULT_TEMPLATE, "--filename", help=FILENAME_HELP, callback=_template),
    device: Device = "auto",
    hard_mask: bool = typer.Option(False, "--hard-mask", help="Binary mask (mask > 0.5) instead of the soft mask."),
    mask_power: MaskPower = None,
    wiener_iterations: WienerIterations = 0,
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Resample the stems to this rate (default: the input's)."),
    mono: bool = typer.Option(False, "--mono", help="Downmix the stems to mono."),
    force: Overwrite = False,
    threads: Threads = 0,
) -> None:
    """Separate songs into vocals and accompaniment with a U-Net checkpoint.

    The mask is estimated at the STFT geometry its checkpoint records (sample rate, n_fft, hop,
    channels: 16 kHz mono for a model trained on the default seed geometry, 44.1 kHz stereo for
    Spleeter's nets) and applied full band: the stems keep the input's sample rate and channels,
    and vocals + accompaniment equals the input. `--sample-rate 16000 --mono` gives the seed's
    16 kHz output. Two nets' masks make one ratio mask (--mask-power, which below 1 also softens
    one net's mask); --wiener-iterations adds the multichannel Wiener filter. Files go one by one;
    a file that fails is reported in one line and the others go on (exit code 1). Existing
    outputs are never overwritten without --force.

    Example: stemforge separate model.pt song1.mp3 song2.wav -o separated --format flac
    """
    if sample_rate is not None and sample_rate < 1000:
        raise typer.BadParameter("must be at least 1000 Hz", param_hint="--sample-rate")
    options = separator_options(hard_mask, mask_power, wiener_iterations)
    with cli_errors():
        import torch

        from stemforge.core import audio as audio_io
        from stemforge.separate.naming import check_outdir, plan_outputs
        from stemforge.separate.separator import STEMS, Separator

        check_outdir(outdir)  # a symbolic link loop or a file as -o: nothing can be done (exit 3), before the model
        if threads:
            torch.set_num_threads(threads)
        sep = Separator.from_checkpoint(model, device=device, **options)
        ck = sep.checkpoint
        err(f"model: {model} (target {'+'.join(ck.targets)}, width {ck.unet_config.width:g}, step {ck.step}, {ck.spectrogram_config.geometry()}) on {sep.device}")
        err(f"mask: {sep.post_filter}")
        # Every file's outputs are planned first (names, collisions, existing files, durations).
        plans = plan_outputs(outdir, filename, audio, STEMS, fmt, force=force, probe=audio_io.info)
        rows = [{"file": str(p.source), "duration_s": "", "status": "failed" if p.error else "", "x_realtime": "", "output": "", "error": p.error} for p in plans]
        failures = Failures(err, lambda: list_path(outdir, "separate"), "files")
        for row in rows:
            if row["error"]:
                failures.add(row["error"])
        _separate_all(sep, [(p, row) for p, row in zip(plans, rows) if not p.error], sample_rate, mono, failures)
    failed = [r for r in rows if r["status"] == "failed"]
    out("")
    done = [r for r in rows if r["status"] == "ok"]  # the failed files were each named once, above
    if done:
        out(format_table([{k: r[k] for k in ("file", "duration_s", "status", "x_realtime", "output")} for r in done[:TABLE_ROWS]]))
    if len(done) > TABLE_ROWS:
        out(f"(the first {TABLE_ROWS} of {len(done)} separated files shown)")
    out(f"separated {len(rows) - len(failed)} of {len(rows)} files into {outdir}")
    for line in failures.summary("the other files were separated"):
        err(line)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


def _separate_all(sep, jobs: list, sample_rate: Optional[int], mono: bool, failures) -> None:
    """Separate each planned file under one progress bar (seconds of audio), filling its row:
    ok with duration and speed, or failed with a one-line error (the others go on)."""
    from stemforge.console.progress import Progress
    from stemforge.core.errors import DiskFullError, StemforgeError

    bar = Progress("separate", round(sum(p.info.duration_s for p, _ in jobs), 1), "s audio", decimals=1)
    failures.show = bar.line
    try:
        for plan, row in jobs:
            src, duration, done_before = plan.source, plan.info.duration_s, bar.done
            bar.note(src.name)

            def progress(fraction: float, base=done_before, d=duration) -> None:
                bar.advance_to(round(base + fraction * d, 1))

            try:
                res = sep.separate_file(src, plan.paths, output_sample_rate=sample_rate, mono=mono, progress=progress)
            except DiskFullError as exc:  # the next files would find it full too: stop (exit 3)
                done = sum(1 for _, r in jobs if r["status"] == "ok")
                kept = f"kept the {done} file(s) separated before it; none of its stems was left: free space and run again"
                raise DiskFullError(exc.path, exc.reason, kept) from None
            except (StemforgeError, OSError, RuntimeError, ValueError, MemoryError) as exc:
                text = str(exc) if isinstance(exc, StemforgeError) else f"{type(exc).__name__}: {exc}"
                row.update(status="failed", error=text if text.startswith(str(src)) else f"{src}: {text}")
                failures.add(row["error"])
                progress(1.0)
                continue
            output = str(Path(next(iter(res.outputs.values()))).parent)
            row.update(status="ok", duration_s=round(res.duration_s, 1), x_realtime=round(res.speed, 1), output=output)
    finally:
        bar.close()
