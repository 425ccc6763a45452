"""``stemforge ingest <corpus> ROOT``: one command per corpus, all sharing one runner."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stemforge.cli.common import (
    DATA_HELP,
    EXIT_OK,
    EXIT_PARTIAL,
    announce_data_dir,
    cli_errors,
    err,
    format_table,
    out,
)

ingest_app = typer.Typer(
    help="Turn a corpus into normalized 16 kHz STFT magnitudes in a DataDir (one subcommand per corpus).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

OUT_OPTION = typer.Option(None, "--out", "--data", "-o", help=DATA_HELP, show_default=False)
WORKERS_OPTION = typer.Option(0, "--workers", "-j", help="Worker processes (0: one per core).")
FORCE_OPTION = typer.Option(False, "--force", help="Redo tracks that are already stored and unchanged.")


def run_ingest(corpus: str, root: Path, data: Optional[Path], workers: int, force: bool, **options) -> None:
    """Discover ``root`` with the corpus's recipe, ingest into the DataDir, print a summary.

    Exit code 0 when every track was stored (or unchanged/excluded), 1 when any track failed.
    """
    from tqdm import tqdm

    from stemforge.ingest import default_workers, ingest
    from stemforge.recipes import get_recipe
    from stemforge.store import DataDir

    path = announce_data_dir(data)
    with cli_errors():
        recipe = get_recipe(corpus)
        sources = recipe.discover(root, **options)
        datadir = DataDir.create(path)
        n_workers = workers or default_workers()
        bar = tqdm(total=len(sources), desc=f"ingest {corpus}", unit="track", dynamic_ncols=True, leave=True)

        def progress(event: str, uid: str, detail: str) -> None:
            if event == "planned":
                bar.set_postfix_str(f"{detail} to process")
                return
            if event == "failed":
                bar.write(f"failed: {detail}", file=__import__("sys").stderr)
            bar.update(1)

        try:
            report = ingest(datadir, sources, workers=n_workers, force=force, progress=progress, post_commit=_post_commit())
        finally:
            bar.close()
        _summary(datadir, report)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


def _post_commit():
    """Identity reconciliation across corpora, when the identity module provides it."""
    from stemforge import identity

    return getattr(identity, "reconcile_datadir", None)


def _summary(datadir, report) -> None:
    import pandas as pd

    df = datadir.reload()
    new = pd.DataFrame(report.ingested)
    rows = []
    for split in ("train", "valid", "test"):
        part = df[df["split"] == split]
        added = new[new["split"] == split] if len(new) else new
        rows.append(
            {
                "split": split,
                "added": len(added),
                "added_h": float(added["duration_s"].sum()) / 3600 if len(added) else 0.0,
                "tracks": len(part),
                "hours": float(part["duration_s"].sum()) / 3600,
            }
        )
    out("")
    out(format_table(rows))
    out(
        f"ingested {len(report.ingested)}, unchanged {len(report.unchanged)}, "
        f"excluded {len(report.excluded)}, failed {len(report.failed)}"
    )
    if report.excluded:
        out("excluded by rule:")
        for uid, why in report.excluded:
            out(f"  {uid}: {why}")
    if report.failed:
        err("failed (one line each; the other tracks were stored):")
        for uid, why in report.failed:
            err(f"  {why}")
    out(f"DataDir: {datadir.path.resolve()}")


@ingest_app.command("dsd100")
def ingest_dsd100(
    root: Path = typer.Argument(..., help="DSD100 root (holds Mixtures/ and Sources/)."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
) -> None:
    """Ingest DSD100 (Mixtures/{Dev,Test}/..., Sources/{Dev,Test}/...).

    vocals = vocals.wav, accompaniment = bass + drums + other; Test -> test, Dev -> train
    except five validation songs.

    Example: stemforge ingest dsd100 ~/corpora/DSD100 --out ./stemforge-data --workers 2
    """
    run_ingest("dsd100", root, data, workers, force)


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
