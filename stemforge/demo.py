"""The whole pipeline on the built-in procedural corpus (``stemforge demo``).

synthesize a DSD100-layout corpus and a few karaoke pairs -> ingest both -> augment the train
split with remixes -> train the narrow U-Net on the CPU for a bounded time -> separate a
held-out song (full band) -> evaluate on the test split against the mixture and the oracle mask.

Real corpora are licensed and cannot ship; the procedural corpus writes every real layout, so
the same code paths run on it as on MedleyDB or MUSDB18. The training run is resolved and
checked by :func:`stemforge.train.setup.resolve_run`, as every run is, and trained by
:func:`stemforge.train.loop.run` in one session: the number of steps that fills the budget is
measured first (:func:`_calibrate_steps`) and rounded so that the validations fall on exact
multiples of ``val_every`` (:func:`train_config`).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from stemforge.augment.remix import augment, train_hours
from stemforge.core import audio
from stemforge.core.errors import StemforgeError
from stemforge.core.text import format_table
from stemforge.evaluate.datadir import evaluate_datadir
from stemforge.evaluate.plots import separation_figure
from stemforge.ingest.engine import ingest
from stemforge.model.config import UNetConfig
from stemforge.model.unet import UNet, loss_fn
from stemforge.recipes import dsd100
from stemforge.recipes import karaoke as pairs_recipe
from stemforge.separate.separator import Separator
from stemforge.store import DataDir
from stemforge.synth.layouts import write_corpus
from stemforge.train.config import TrainConfig, TrainResult
from stemforge.train.loop import run
from stemforge.train.setup import resolve_run

#: Two synthetic Dev songs carry names from DSD100's validation list, so the valid split (used
#: for validation loss and the best checkpoint) is not empty; the rule that puts them there is
#: the real one.
VALID_NAMES = (("Leaf", "Summerghost"), ("Skelpolu", "Human Mistakes"))

#: The name of the first Test song (the one ``demo`` separates).
HELD_OUT_NAME = ("Stemforge Demo", "Held Out Song")

StageFn = Callable[[str, str], None]
#: Receives the training run's :class:`~stemforge.train.config.TrainEvent` values.
TrainProgressFn = Callable[[object], None]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. How long the defaults take, as measured, is said in one place:
    ``stemforge demo --help`` (:data:`stemforge.cli.demo.MEASURED`, from docs/benchmarks.md).

    ``minutes``: the training budget (wall clock, met in expectation: the step count is set from
    a timing of the bare model before training); ``songs``/``seconds``: the DSD100-layout
    corpus; ``pairs``: original/karaoke pairs (one of them deliberately wrong when >= 3);
    ``augment_factor``: the train split is grown to this many times its ingested hours;
    ``width``: U-Net width multiplier; ``batch_size``: crops per step; ``steps``: train exactly
    this many steps instead of filling ``minutes`` (deterministic: tests use it).
    """

    minutes: float = 4.0
    songs: int = 16
    seconds: float = 30.0
    pairs: int = 4
    augment_factor: float = 2.0
    width: float = 0.25
    batch_size: int = 16
    seed: int = 0
    workers: int = 2
    steps: int | None = None


@dataclass
class DemoResult:
    """Where the demo put things, and the figures it measured."""

    out: Path
    data: Path
    run: Path
    model: Path
    separated: dict[str, Path]
    figure: Path
    loss_plot: Path
    report: dict[str, Path]
    summary: object  # pandas DataFrame: method x stem -> gnsdr, sdr ...
    steps: int
    train_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (uid, reason) of refused pairs

    def sdr(self, method: str, stem: str = "vocals", column: str = "sdr_mean") -> float:
        s = self.summary
        row = s[(s["method"] == method) & (s["stem"] == stem)]
        return float(row[column].iloc[0]) if len(row) else float("nan")

    def summary_lines(self, metric_notes: tuple[str, ...] | list[str] = ()) -> list[str]:
        """What ``stemforge demo`` prints at the end: the test split's table (the model, the
        mixture, the oracle mask), ``metric_notes`` (what the metrics mean), the vocals SDRs,
        the notes, the training time, and where every output is."""
        rows = [
            {"method": r.method, "stem": r.stem, "SDR": r.sdr_mean, "NSDR(GNSDR)": r.gnsdr, "SIR": r.gsir, "SAR": r.gsar,
             "SDR frames": r.sdr_frames}
            for r in self.summary.itertuples()
        ]
        gain = self.sdr("model") - self.sdr("mixture")
        outputs = [*self.separated.items(), ("spectrograms", self.figure), ("loss curve", self.loss_plot), ("model", self.model),
                   *((f"evaluation {kind}", path) for kind, path in self.report.items()), ("DataDir", self.data)]
        return [
            "",
            "Test split (dB): the model, the mixture itself, and the oracle ideal ratio mask",
            format_table(rows),
            "SDR, SIR, SAR: whole track (BSS Eval v3; NSDR = SDR gain over the mixture); SDR frames: median over 1 s frames.",
            *metric_notes,
            f"\nvocals SDR: model {self.sdr('model'):.2f} dB, mixture {self.sdr('mixture'):.2f} dB "
            f"(model beats the mixture by {gain:.2f} dB), oracle {self.sdr('oracle'):.2f} dB",
            *self.notes,
            f"\ntrained {self.steps} steps in {self.train_seconds / 60:.1f} min",
            "outputs:",
            *(f"  {name:<14} {path}" for name, path in outputs),
        ]


def figure_title(artist: str, title: str) -> str:
    """The spectrogram figure's title: the song, and that training never saw it (said once: the
    demo's held-out song is itself called "Held Out Song")."""
    return f"{artist} - {title} (test split: not trained on)"


def _calibrate_steps(unet_config, batch_size: int, seconds: float, seed: int) -> int:
    """How many training steps fit in ``seconds``: the median time of five steps of the bare
    model (after a warm-up step), with a quarter of ``seconds`` kept for what the steps do not
    include (batches, validation, checkpoints)."""
    g = torch.Generator().manual_seed(seed)
    model = UNet(unet_config, generator=g).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 1, unet_config.n_bins, 128, generator=g)
    y = x * 0.5

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x, generator=g), x, y)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step()  # warm-up
    per_step = sorted(step() for _ in range(5))[2]
    return max(MIN_STEPS, int(0.75 * seconds / per_step))


#: The fewest steps a budget-filling demo trains (a very slow machine still validates six times).
MIN_STEPS = 60


def run_demo(out: str | Path, config: DemoConfig | None = None, stage: StageFn | None = None,
             train_progress: TrainProgressFn | None = None) -> DemoResult:
    """Run every stage into ``out`` (created; an existing demo there is replaced stage by stage:
    corpora and DataDir are re-used when present, the training run is redone).

    ``stage(name, message)`` is called as each stage starts and ends; ``train_progress`` gets
    the training run's events (as ``train``'s ``progress``: one session, one ``data`` and one
    ``start`` event). Library code: no printing.
    """
    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    corpus, pairs_dir, data = out / "corpus-dsd100", out / "corpus-pairs", out / "data"
    stages = _Stages(stage)
    with stages.timed("synth", f"{cfg.songs} DSD100-layout songs of {cfg.seconds:.0f} s and {cfg.pairs} karaoke pairs"):
        if not (corpus / "Mixtures").is_dir():
            # songs 0 and 2 go to Dev (DSD100's rule in synth: even index -> Dev), song 1 to Test
            names = [VALID_NAMES[0], HELD_OUT_NAME, VALID_NAMES[1]][: cfg.songs]
            write_corpus(corpus, "dsd100", songs=cfg.songs, seconds=cfg.seconds, seed=cfg.seed, names=names)
        if cfg.pairs and not (pairs_dir / "pairs.csv").exists():
            write_corpus(pairs_dir, "pairs", songs=cfg.pairs, seconds=cfg.seconds, seed=cfg.seed + 1)
    with stages.timed("ingest", f"into {data}"):
        refused = _ingest(corpus, pairs_dir, data, cfg)
    notes = ["as expected, the one deliberately wrong karaoke pair was refused" for _ in refused]
    with stages.timed("augment", f"train split x{cfg.augment_factor:g} with cross-song remixes"):
        dd = DataDir.open(data)
        augment(dd, hours=cfg.augment_factor * train_hours(dd.manifest).ingested_h, seed=cfg.seed, workers=cfg.workers)
    with stages.timed("train", f"narrow U-Net (width {cfg.width:g}) for about {cfg.minutes:g} min on the CPU"):
        result = _train(data, out / "run", cfg, train_progress)
    with stages.timed("separate", "a held-out song, full band"):
        sep, separated, figure = _separate(out, corpus, data, result.model_path)
    with stages.timed("evaluate", "test split: model vs mixture vs oracle mask"):
        report = evaluate_datadir(sep, DataDir.open(data), split="test")
        paths = report.write(out / "evaluation.csv")
    return DemoResult(
        out=out,
        data=data,
        run=out / "run",
        model=result.model_path,
        separated=separated,
        figure=figure,
        loss_plot=result.loss_plot,
        report=paths,
        summary=report.summary,
        steps=result.step,
        train_seconds=stages.timings.get("train", 0.0),
        timings=stages.timings,
        notes=notes,
        refused=refused,
    )


class _Stages:
    """Tells ``stage`` when each stage starts and ends, and times it."""

    def __init__(self, stage: StageFn | None):
        self.note = stage or (lambda *_: None)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, name: str, message: str) -> Iterator[None]:
        self.note(name, message)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = time.perf_counter() - t0
        self.note(name, f"done in {self.timings[name]:.1f} s")


def _ingest(corpus: Path, pairs_dir: Path, data: Path, cfg: DemoConfig) -> list[tuple[str, str]]:
    """Ingest the DSD100-layout corpus (every song must go in) and the karaoke pairs; returns
    the refused pairs ``(uid, reason)``."""
    dd = DataDir.create(data)
    rep = ingest(dd, dsd100.discover(corpus), workers=cfg.workers)
    if rep.failed:
        raise StemforgeError(f"demo corpus failed to ingest: {rep.failed}")
    if not cfg.pairs:
        return []
    return [(uid, why) for uid, why in ingest(dd, pairs_recipe.discover(pairs_dir), workers=cfg.workers).failed]


def train_config(steps: int, cfg: DemoConfig, exact: bool = False) -> TrainConfig:
    """The TrainConfig of the demo's run of about ``steps`` steps: six validations (and the one
    of the untrained model), three checkpoints, sixty metrics rows. Unless ``exact``, ``steps``
    is rounded down to a multiple of 60 (at least 60) so that every validation falls on a
    multiple of ``val_every`` (10 log intervals) and the last one on the last step; with
    ``exact`` (``DemoConfig.steps``) the run has ``steps`` steps and validates at the multiples
    of ``max(1, steps // 6)`` and at its end."""
    if exact:
        val_every = max(1, steps // 6)
        log_every = max(1, val_every // 10)
    else:
        log_every = max(1, steps // 60)
        val_every = 10 * log_every
        steps = 6 * val_every
    return TrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        lr=1e-3,
        seed=cfg.seed,
        data_mode="memory",
        val_every=val_every,
        checkpoint_every=2 * val_every,
        log_every=log_every,
        val_crops=64,
        tensorboard=False,
    )


def _train(data: Path, run_dir: Path, cfg: DemoConfig, progress: TrainProgressFn | None) -> TrainResult:
    """Train the narrow model into ``run_dir`` (replaced) in one session: exactly ``cfg.steps``
    steps when given, else the steps that fill ``cfg.minutes`` as timed on the bare model
    (:func:`_calibrate_steps`), rounded by :func:`train_config`."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    unet_config = UNetConfig(width=cfg.width, target="vocals")
    steps = cfg.steps or _calibrate_steps(unet_config, cfg.batch_size, cfg.minutes * 60.0, cfg.seed)
    spec = resolve_run(DataDir.open(data), run_dir, train_config(steps, cfg, exact=bool(cfg.steps)), unet_config,
                       device="cpu")
    return run(spec, progress)


def _separate(out: Path, corpus: Path, data: Path, model: Path) -> tuple[Separator, dict[str, Path], Path]:
    """Separate the held-out test song with ``model``: the Separator, the files written
    (mixture and stems) and the spectrogram figure."""
    test = DataDir.open(data).select(split="test", dataset="dsd100")
    held = test[test["title"] == HELD_OUT_NAME[1]]
    row = (held if len(held) else test).iloc[0]
    sep = Separator.from_checkpoint(model, device="cpu")
    mix, sr = audio.load(corpus / row["source_path"])
    stems = sep.separate(mix, sr)
    sep_dir = out / "separated" / row["track_id"]
    separated = {"mixture": audio.write(sep_dir / "mixture.wav", mix, sr)}
    for name, y in stems.items():
        separated[name] = audio.write(sep_dir / f"{name}.wav", y, sr)
    mask = sep.estimate_mask(audio.resample(audio.to_mono(mix), sr, sep.config.sample_rate))
    source = next(t for t in dsd100.discover(corpus) if t.track_id == row["track_id"])
    true_vocals, _ = audio.load(Path(source.root) / source.vocals[0].path)
    figure = separation_figure(
        out / "spectrograms.png", mix, stems["vocals"], stems["accompaniment"], sr, mask=mask,
        mask_config=sep.config, title=figure_title(row["artist"], row["title"]), true_vocals=true_vocals,
    )
    return sep, separated, figure
