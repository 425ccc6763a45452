"""``stemforge synth OUT``: write a synthetic corpus in the real on-disk layout of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stemforge.cli.common import cli_errors, out
from stemforge.synth import LAYOUTS  # the registry only: no numpy, `stemforge --help` stays fast

LAYOUT_NAMES = tuple(LAYOUTS)


def synth(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="Folder to write the corpus into (created if missing)."),
    layout: str = typer.Option("dsd100", "--layout", "-l", help=f"Corpus layout: {'|'.join(LAYOUT_NAMES)}."),
    songs: Optional[int] = typer.Option(
        None, "--songs", "-n", help="Number of songs (default 3; with --metadata-dir: every metadata file).", show_default=False
    ),
    seconds: float = typer.Option(10.0, "--seconds", "-s", help="Length of each song in seconds."),
    seed: int = typer.Option(0, "--seed", help="Random seed; song i uses numpy default_rng([seed, i])."),
    metadata_dir: Optional[Path] = typer.Option(
        None, "--metadata-dir", help="medleydb only: folder of real *_METADATA.yaml files to build the tree from."
    ),
    track_id: List[str] = typer.Option([], "--track-id", help="medleydb with --metadata-dir: only these track ids (repeatable)."),
) -> None:
    """Write a synthetic corpus (voice-like vocals, drums, bass, chords) in a real dataset's layout.

    Used by the tests, the demo and the benchmarks, because the real corpora are licensed.
    See docs/synth.md for what each layout writes.

    Example: stemforge synth /tmp/dsd --layout dsd100 --songs 4 --seconds 20 --seed 1
    """
    if songs is not None and songs < 1:
        raise typer.BadParameter(f"must be >= 1, got {songs}", param_hint="--songs")
    if not seconds > 0:
        raise typer.BadParameter(f"must be > 0, got {seconds}", param_hint="--seconds")
    if seed < 0:
        raise typer.BadParameter(f"must be >= 0, got {seed}", param_hint="--seed")
    if layout not in LAYOUT_NAMES:
        raise typer.BadParameter(f"unknown layout {layout!r}; layouts: {', '.join(LAYOUT_NAMES)}", param_hint="--layout")
    if (metadata_dir is not None or track_id) and layout != "medleydb":
        raise typer.BadParameter(f"--metadata-dir and --track-id apply to --layout medleydb only (got {layout})")
    if track_id and metadata_dir is None:
        raise typer.BadParameter("--track-id needs --metadata-dir", param_hint="--track-id")
    with cli_errors():
        from stemforge.console.progress import Progress
        from stemforge.synth.layouts import write_corpus

        options: dict = {}
        if metadata_dir is not None or track_id:
            options["metadata_dir"] = metadata_dir
            if track_id:
                options["track_ids"] = list(track_id)
            n_songs = songs or 0
            total = songs or (len(track_id) or None)
        else:
            n_songs = songs or 3
            total = n_songs
        seen: set[int] = set()
        with Progress(f"synth {layout}", total, "songs") as bar:  # unknown total (all of --metadata-dir): no progress

            def progress(record: dict) -> None:
                if record["index"] not in seen:
                    seen.add(record["index"])
                    bar.update(1)

            records = write_corpus(out_dir, layout, n_songs, seconds, seed, progress=progress, **options)
        n_written = len({r["index"] for r in records})
        audio_s = n_written * seconds
        out(f"synth: wrote {n_written} song{'' if n_written == 1 else 's'} ({audio_s:.1f} s of audio) in the {layout} layout to {out_dir.resolve()}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
