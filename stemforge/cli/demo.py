"""``stemforge demo``: the whole pipeline on the built-in procedural corpus."""

from __future__ import annotations

from pathlib import Path

import typer

from stemforge.cli.common import cli_errors, err, out
from stemforge.evaluate.protocols import METRICS_NOTE

#: How long the demo takes with the defaults, as measured (docs/benchmarks.md, "The demo"): the one
#: place this figure is written; `demo --help` says it and the README quotes it (a test holds them equal).
MEASURED = "about 4.8 minutes on 2 CPU cores, 4 of them the training budget (--minutes)"


def demo(
    out_dir: Path = typer.Option(Path("stemforge-demo"), "--out", "-o", help="Folder for corpora, DataDir, run and outputs."),
    minutes: float = typer.Option(4.0, "--minutes", "-m", help="Training budget in minutes (CPU)."),
    songs: int = typer.Option(16, "--songs", help="Songs in the synthetic DSD100-layout corpus."),
    seconds: float = typer.Option(30.0, "--seconds", help="Length of each synthetic song (s)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus, the remixes and the training."),
    workers: int = typer.Option(2, "--workers", "-j", help="Processes for ingest and augment."),
    steps: int = typer.Option(0, "--steps", help="Train exactly this many steps instead of filling --minutes (0: fill)."),
) -> None:
    """Synthesize a corpus and karaoke pairs, ingest, augment, train the narrow U-Net on the CPU for
    a few minutes, separate a held-out song, evaluate against the mixture and the oracle mask.

    With the defaults it takes {measured} (measured: docs/benchmarks.md). The training is one
    session whose steps fill --minutes as a timing of the model taken just before predicts.

    Example: stemforge demo --out stemforge-demo --minutes 4
    """
    from stemforge.console.progress import TrainProgress
    from stemforge.demo import DemoConfig, run_demo

    progress = TrainProgress(label="[train]")

    def stage(name: str, message: str) -> None:
        if name == "train":
            progress.close()  # the bar ends before the stage's closing line
        err(f"[{name}] {message}")

    config = DemoConfig(minutes=minutes, songs=songs, seconds=seconds, seed=seed, workers=workers, steps=steps or None)
    with cli_errors():
        try:
            result = run_demo(out_dir, config, stage, train_progress=progress)
        finally:
            progress.close()
    for line in result.summary_lines(METRICS_NOTE):
        out(line)


demo.__doc__ = demo.__doc__.replace("{measured}", MEASURED)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
