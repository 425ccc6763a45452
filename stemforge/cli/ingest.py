"""``stemforge ingest <corpus> ROOT``: one command per corpus, all sharing one runner."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stemforge.cli.common import (
    DATA_HELP,
    MIN_SCORE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    announce_data_dir,
    cli_errors,
    err,
    format_table,
    out,
)

#: Corpora whose split follows an official list; every other corpus takes --valid-fraction/--test-fraction.
OFFICIAL_SPLITS = ("dsd100", "musdb")
#: The fraction options' defaults (the recipes' VALID_FRACTION/TEST_FRACTION; tests hold them equal).
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15

ingest_app = typer.Typer(
    help=(
        "Turn a corpus into normalized STFT magnitudes in a DataDir (one subcommand per corpus), at a "
        "geometry: --preset seed (16 kHz mono, the default), paper (8192 Hz mono) or fullband (44.1 kHz stereo).\n\n"
        "Splits are by song. dsd100 and musdb follow their official lists (no fraction options); every "
        "other corpus takes --valid-fraction and --test-fraction, assigned whole and deterministically "
        "(by song; by artist for medleydb, by singer for mir1k)."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)

OUT_OPTION = typer.Option(None, "--out", "--data", "-o", help=DATA_HELP, show_default=False)
WORKERS_OPTION = typer.Option(0, "--workers", "-j", min=0, help="Worker processes (0: one per core).")
FORCE_OPTION = typer.Option(False, "--force", help="Redo tracks that are already stored and unchanged.")
#: The geometry options every ingest command takes (docs/recipes.md, "Geometry"); the presets
#: live in stemforge.core.config.PRESETS (written out here so that --help stays fast).
PRESET_OPTION = typer.Option(
    None,
    "--preset",
    help=(
        "Geometry: seed (16 kHz mono, n_fft 1024, hop 512: the default for a new DataDir), paper "
        "(8192 Hz mono, n_fft 1024, hop 768), fullband (44.1 kHz stereo, n_fft 4096, hop 1024). "
        "Without any geometry option an existing DataDir keeps its own."
    ),
    show_default=False,
)
SAMPLE_RATE_OPTION = typer.Option(None, "--sample-rate", help="Sample rate of the stored audio (Hz); replaces the preset's.", show_default=False)
N_FFT_OPTION = typer.Option(None, "--n-fft", help="STFT frame length (samples); replaces the preset's.", show_default=False)
HOP_LENGTH_OPTION = typer.Option(None, "--hop-length", help="STFT hop (samples, at most --n-fft); replaces the preset's.", show_default=False)
CHANNELS_OPTION = typer.Option(None, "--channels", help="1 (mono: the channel mean) or 2 (stereo); replaces the preset's.", show_default=False)


def _geometry(preset: Optional[str], sample_rate: Optional[int], n_fft: Optional[int], hop_length: Optional[int], channels: Optional[int]):
    """The SpectrogramConfig the geometry options ask for (the preset, default seed, with the
    other options replacing its values), or None when none is given (a new DataDir is seed, an
    existing one keeps its geometry). A bad value is a one-line usage error (exit 2), before
    anything is opened; the library (SpectrogramConfig) says what is wrong."""
    from stemforge.core.config import DEFAULT_PRESET, PRESETS, SpectrogramConfig
    from stemforge.core.errors import StemforgeError

    given = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "channels": channels}
    overrides = {k: v for k, v in given.items() if v is not None}
    if preset is None and not overrides:
        return None
    if preset is not None and preset not in PRESETS:
        _usage_error("--preset", f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    try:
        return SpectrogramConfig.preset(preset or DEFAULT_PRESET, **overrides)
    except StemforgeError as exc:
        text = str(exc).removeprefix("SpectrogramConfig: ")
        bad = next((k for k in overrides if k in text), "hop_length")
        _usage_error("--" + bad.replace("_", "-"), text)


def _usage_error(option: str, message: str):
    """One line on stderr, exit 2 (a usage error: nothing opened, nothing written)."""
    err(f"error: {option}: {message}")
    raise typer.Exit(EXIT_USAGE)


def run_ingest(corpus: str, root: Path, data: Optional[Path], workers: int, force: bool, geometry=None, **options) -> None:
    """Discover ``root`` with the corpus's recipe, ingest into the DataDir, print a summary.

    ``geometry`` (a SpectrogramConfig, or None: a new DataDir gets the seed geometry, an
    existing one keeps its own) must equal an existing DataDir's config: ConfigMismatchError
    naming both otherwise (exit 3, nothing written). Exit code 0 when every track was stored
    (or unchanged/excluded), 1 when any track failed. The options were checked by the
    subcommand (usage errors, exit 2) before this opens anything.
    """
    from tqdm import tqdm

    from stemforge.ingest.engine import default_workers, ingest
    from stemforge.recipes import get_recipe
    from stemforge.store import DataDir
    from stemforge.store.datadir import META_NAME

    path = announce_data_dir(data)
    with cli_errors():
        existing = (path / META_NAME).exists()
        if existing and geometry is not None:
            DataDir.open(path, geometry)  # another geometry: ConfigMismatchError before the corpus is read
        recipe = get_recipe(corpus)
        sources = recipe.discover(root, **options)
        if geometry is None and existing:
            datadir = DataDir.open(path)  # no geometry asked for: the DataDir's own
        else:
            datadir = DataDir.create(path, geometry)
        err(f"geometry: {datadir.config.geometry()} (config {datadir.config.hash})")
        before = datadir.manifest[["uid", "split", "duplicate_of"]].copy()
        n_workers = workers or default_workers()
        bar = tqdm(total=len(sources), desc=f"ingest {corpus}", unit="track", dynamic_ncols=True, leave=True)

        def progress(event: str, uid: str, detail: str) -> None:
            if event == "planned":
                bar.set_postfix_str(f"{detail} to process")
                return
            if event == "damaged":  # redone: counted when done
                bar.write(f"redo (stored arrays damaged): {detail}", file=__import__("sys").stderr)
                return
            if event == "failed":
                bar.write(f"failed: {detail}", file=__import__("sys").stderr)
            bar.update(1)

        try:
            report = ingest(datadir, sources, workers=n_workers, force=force, progress=progress, post_commit=_post_commit())
        finally:
            bar.close()
        _summary(datadir, report, before)
        for line in _no_valid_split(datadir, corpus, recipe, root, options):
            err(line)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


def _check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """Usage error (exit 2) unless both fractions are in [0, 1) and sum below 1."""
    for hint, v in (("--valid-fraction", valid_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 <= v < 1.0:
            raise typer.BadParameter(f"must be in [0, 1), got {v}", param_hint=hint)
    if valid_fraction + test_fraction >= 1.0:
        raise typer.BadParameter(
            f"--valid-fraction + --test-fraction must stay below 1, got {valid_fraction + test_fraction:g}",
            param_hint="--valid-fraction",
        )


def _check_choice(value: Optional[str], allowed: tuple[str, ...], hint: str) -> None:
    if value is not None and value not in allowed:
        raise typer.BadParameter(f"must be one of {', '.join(allowed)}, got {value!r}", param_hint=hint)


#: --valid-fraction values tried when a DataDir has no valid split, to suggest one that works.
_TRY_FRACTIONS = (0.15, 0.2, 0.25, 0.34, 0.5)


def _no_valid_split(datadir, corpus: str, recipe, root: Path, options: dict) -> list[str]:
    """Warning lines when the DataDir holds no valid track (training would have no validation):
    what to do, with a --valid-fraction that gives these songs a valid split when one exists."""
    df = datadir.select()
    if not len(df) or (df["split"] == "valid").any():
        return []
    counts = df["split"].value_counts()
    held = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in ("train", "valid", "test"))
    lines = [
        f"warning: this DataDir has NO VALID SPLIT ({held} tracks): `stemforge train` will have no "
        "validation loss and can keep only its last checkpoint, not its best."
    ]
    if corpus in OFFICIAL_SPLITS:
        lines.append(f"  {corpus} follows its official split: ingest more of its songs (or another corpus with a valid split).")
        return lines
    found = None
    test_fraction = float(options.get("test_fraction", TEST_FRACTION))
    current = float(options.get("valid_fraction", VALID_FRACTION))
    for fraction in _TRY_FRACTIONS:
        if fraction <= current or fraction + test_fraction >= 1.0:
            continue
        try:
            trial = recipe.discover(root, **{**options, "valid_fraction": fraction})
        except Exception:  # only a suggestion: the ingest itself already succeeded
            break
        n_valid = sum(1 for t in trial if t.split == "valid" and not t.skip_reason and not t.error)
        if n_valid:
            found = (fraction, n_valid, sum(1 for t in trial if not t.skip_reason and not t.error))
            break
    lines.append("  ingest more songs, or re-run this ingest with a larger --valid-fraction and --force")
    if found:
        f, n_valid, n = found
        lines[-1] += f": --valid-fraction {f:g} --force puts {n_valid} of these {n} songs in valid."
    else:
        lines[-1] += (
            f" (no --valid-fraction up to {_TRY_FRACTIONS[-1]:g} puts one of these songs in valid: the assignment is "
            "deterministic by song, so add songs)."
        )
    return lines


def _post_commit():
    """Identity reconciliation across corpora (aliases, strictest split, duplicates)."""
    from stemforge.ingest.reconcile import reconcile_datadir

    return reconcile_datadir


def _reason_kind(reason: str) -> str:
    """The rule an exclusion reason names: the text before its first ':' ("instrumental", ...)."""
    head = reason.split(":", 1)[0].strip()
    return head if head and len(head) <= 40 and "/" not in head else "other"


def _summary(datadir, report, before=None) -> None:
    """Split table, counts, excluded tracks grouped by rule, failures, and what identity
    reconciliation changed in rows stored before this run (split moves, duplicates)."""
    import pandas as pd

    df = datadir.reload()
    new = pd.DataFrame(report.ingested)
    new_uids = set(new["uid"]) if len(new) else set()
    rows = []
    is_dup = df["duplicate_of"].notna() & (df["duplicate_of"] != "")
    for split in ("train", "valid", "test"):
        part = df[df["split"] == split]
        added = df[df["uid"].isin(new_uids) & (df["split"] == split)]
        rows.append(
            {
                "split": split,
                "added": len(added),
                "added_h": float(added["duration_s"].sum()) / 3600 if len(added) else 0.0,
                "tracks": len(part),
                "duplicates": int(is_dup[part.index].sum()),
                "hours": float(part["duration_s"].sum()) / 3600,
            }
        )
    out("")
    out(format_table(rows))
    out(
        f"ingested {len(report.ingested)}, unchanged {len(report.unchanged)}, "
        f"excluded {len(report.excluded)}, failed {len(report.failed)}"
    )
    mixed = [r["uid"] for r in report.ingested if isinstance(r.get("stem_channels"), str) and r["stem_channels"]]
    if mixed:
        shown = ", ".join(mixed[:5]) + (f" and {len(mixed) - 5} more" if len(mixed) > 5 else "")
        track = "track had" if len(mixed) == 1 else "tracks had"
        out(f"{len(mixed)} {track} files of different channel counts, each file downmixed on its own (column stem_channels): {shown}")
    if report.excluded:
        kinds: dict[str, list[tuple[str, str]]] = {}
        for uid, why in report.excluded:
            kinds.setdefault(_reason_kind(why), []).append((uid, why))
        out("excluded by rule: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items(), key=lambda kv: -len(kv[1]))))
        for kind, items in sorted(kinds.items()):
            shown = items if len(items) <= 12 else items[:10]
            for uid, why in shown:
                out(f"  {uid}: {why}")
            if len(shown) < len(items):
                out(f"  ... and {len(items) - len(shown)} more {kind}")
    # rows stored before this run that identity reconciliation changed
    if before is not None and len(before):
        old = before.set_index("uid")
        cur = df.set_index("uid")
        common = [u for u in old.index if u in cur.index and u not in new_uids]
        moved = [(u, old.at[u, "split"], cur.at[u, "split"]) for u in common if old.at[u, "split"] != cur.at[u, "split"]]
        if moved:
            out(f"moved to a stricter split ({len(moved)} stored row(s); the same song is held out in another corpus):")
            for u, a, b in moved:
                out(f"  {u}: {a} -> {b}")
    dups = df[df["duplicate_of"].notna() & (df["duplicate_of"] != "")]
    if len(dups):
        involved = dups[dups["uid"].isin(new_uids) | dups["duplicate_of"].isin(new_uids)]
        if len(involved):
            out(f"duplicates of songs stored by another corpus ({len(involved)}; kept, marked duplicate_of, left out of training):")
            for r in involved.head(20).itertuples():
                out(f"  {r.uid} -> {r.duplicate_of}")
            if len(involved) > 20:
                out(f"  ... and {len(involved) - 20} more (stemforge info lists them all)")
    from stemforge.store.lineage import stale_remixes

    stale = stale_remixes(df)
    if stale:
        err(
            f"{len(stale)} remix row(s) now have a parent outside train (moved by identity reconciliation); "
            "the next `stemforge augment` drops and replaces them"
        )
    from stemforge.store.check import leakage

    for line in leakage(df):
        err(f"leak: {line}")
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
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
) -> None:
    """Ingest DSD100 (Mixtures/{Dev,Test}/..., Sources/{Dev,Test}/...).

    vocals = vocals.wav, accompaniment = bass + drums + other. Official split (no fraction
    options): Test -> test, Dev -> train except five validation songs.

    Example: stemforge ingest dsd100 ~/corpora/DSD100 --out ./stemforge-data --workers 2
    """
    run_ingest("dsd100", root, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels))


FRACTION_HELP = "assigned whole by song, deterministic; see docs/recipes.md"
VALID_OPTION = typer.Option(
    VALID_FRACTION, "--valid-fraction", help=f"Fraction of the songs that go to valid ({FRACTION_HELP}); in [0, 1)."
)
TEST_OPTION = typer.Option(
    TEST_FRACTION, "--test-fraction", help=f"Fraction of the songs that go to test ({FRACTION_HELP}); in [0, 1)."
)


@ingest_app.command("medleydb")
def ingest_medleydb(
    root: Path = typer.Argument(..., help="MedleyDB root (holds Audio/<id>/...), or its Audio folder."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    versions: Optional[str] = typer.Option(
        None, "--versions", help="Comma-separated versions to ingest: V1,V2,EXTRA,BACH10,unknown (default: all found)."
    ),
    exclude_bleed: bool = typer.Option(False, "--exclude-bleed", help="Skip tracks whose metadata says has_bleed: yes."),
    voices: str = typer.Option(
        "singing", "--voices", help="singing: singers, vocalists, choir, rappers; all: also speakers, screamers, crowd, beatboxing."
    ),
    mixture: str = typer.Option(
        "derived", "--mixture", help="derived: vocals + accompaniment (the weighted stems); file: store <id>_MIX.wav."
    ),
    valid_fraction: float = VALID_OPTION,
    test_fraction: float = TEST_OPTION,
) -> None:
    """Ingest MedleyDB (Audio/<id>/<id>_MIX.wav, <id>_STEMS/, <id>_METADATA.yaml).

    vocals = the stems labelled as voices (weighted by the mixing coefficients), accompaniment
    = the other stems; instrumental tracks and tracks with a stem mixing voice and instruments
    are skipped (listed). Split: by artist (one artist never on two sides), deterministic.

    Example: stemforge ingest medleydb ~/corpora/MedleyDB --versions V1,V2 --exclude-bleed --out ./stemforge-data
    """
    from stemforge.recipes.medleydb import MIXTURE_MODES, VERSIONS, VOICE_MODES

    _check_choice(voices, VOICE_MODES, "--voices")
    _check_choice(mixture, MIXTURE_MODES, "--mixture")
    for v in (versions or "").split(","):
        if v.strip() and v.strip().lower() not in {x.lower() for x in VERSIONS}:
            raise typer.BadParameter(f"unknown version {v.strip()!r}; known: {', '.join(VERSIONS)}", param_hint="--versions")
    _check_fractions(valid_fraction, test_fraction)
    run_ingest(
        "medleydb", root, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), versions=versions, exclude_bleed=exclude_bleed, voices=voices,
        mixture=mixture, valid_fraction=valid_fraction, test_fraction=test_fraction,
    )


@ingest_app.command("ikala")
def ingest_ikala(
    root: Path = typer.Argument(..., help="iKala root (holds Wavfile/)."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    valid_fraction: float = VALID_OPTION,
    test_fraction: float = TEST_OPTION,
) -> None:
    """Ingest iKala (Wavfile/<song>_<section>.wav: left accompaniment, right voice, 44.1 kHz).

    mixture = left + right. Split: by song (chorus and verse together), deterministic.

    Example: stemforge ingest ikala ~/corpora/iKala --out ./stemforge-data
    """
    _check_fractions(valid_fraction, test_fraction)
    run_ingest("ikala", root, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), valid_fraction=valid_fraction, test_fraction=test_fraction)


@ingest_app.command("mir1k")
def ingest_mir1k(
    root: Path = typer.Argument(..., help="MIR-1K root (holds Wavfile/ and/or UndividedWavfile/)."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    unit: Optional[str] = typer.Option(None, "--unit", help="clips (Wavfile/, default when present) or songs (UndividedWavfile/)."),
    split_rule: str = typer.Option("singers", "--split-rule", help="singers (balanced by singer) or huang2014 (abjones+amy train, their songs abjones_5+amy_9 valid, rest test)."),
    valid_fraction: float = VALID_OPTION,
    test_fraction: float = TEST_OPTION,
) -> None:
    """Ingest MIR-1K (16 kHz stereo: left accompaniment, right voice).

    mixture = left + right. Split: by singer (a singer never on two sides), deterministic.

    Example: stemforge ingest mir1k ~/corpora/MIR-1K --unit clips --out ./stemforge-data
    """
    from stemforge.recipes.mir1k import SPLIT_RULES, UNITS

    _check_choice(unit, UNITS, "--unit")
    _check_choice(split_rule, SPLIT_RULES, "--split-rule")
    _check_fractions(valid_fraction, test_fraction)
    run_ingest(
        "mir1k", root, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), unit=unit, split_rule=split_rule,
        valid_fraction=valid_fraction, test_fraction=test_fraction,
    )


@ingest_app.command("ccmixter")
def ingest_ccmixter(
    root: Path = typer.Argument(..., help="ccMixter root (one folder per song)."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    valid_fraction: float = VALID_OPTION,
    test_fraction: float = TEST_OPTION,
) -> None:
    """Ingest ccMixter (<song>/mix.wav, source-01.wav accompaniment, source-02.wav voice).

    Split: by song, deterministic.

    Example: stemforge ingest ccmixter ~/corpora/ccmixter_corpus --out ./stemforge-data
    """
    _check_fractions(valid_fraction, test_fraction)
    run_ingest("ccmixter", root, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), valid_fraction=valid_fraction, test_fraction=test_fraction)


@ingest_app.command("musdb")
def ingest_musdb(
    root: Path = typer.Argument(..., help="MUSDB18 root (train/, test/ with .stem.mp4 files or HQ wav folders)."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    fmt: str = typer.Option("auto", "--format", help="auto (HQ folders when present, else .stem.mp4), stems or hq."),
) -> None:
    """Ingest MUSDB18 (.stem.mp4: 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals) or MUSDB18-HQ.

    vocals = vocals, accompaniment = drums + bass + other. Official split (no fraction
    options): test -> test; train -> train except the 14 official validation tracks -> valid.

    Example: stemforge ingest musdb ~/corpora/musdb18 --out ./stemforge-data --workers 2
    """
    from stemforge.recipes.musdb import FORMATS

    _check_choice(fmt, FORMATS, "--format")
    run_ingest("musdb", root, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), fmt=fmt)


@ingest_app.command("csv")
def ingest_csv(
    csv_file: Path = typer.Argument(..., help="CSV with columns mixture,vocals,accompaniment (any two), optional split,artist,title,track_id."),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    name: str = typer.Option("csv", "--name", help="Dataset name of these rows (their uids are NAME:track_id)."),
    length_tolerance: int = typer.Option(0, "--length-tolerance", min=0, help="Samples the files of one row may differ in length by."),
    valid_fraction: float = VALID_OPTION,
    test_fraction: float = TEST_OPTION,
) -> None:
    """Ingest your own list of songs: one CSV row per song, paths relative to the CSV.

    The list may name files anywhere: absolute paths and ../ are read as written (it is your
    own list, not a corpus's metadata, which is read only inside its root).

    Any two of mixture, vocals, accompaniment per row; the third is derived (e.g.
    accompaniment = mixture - vocals). Rows without a split get a deterministic one. A bad row
    is reported and skipped.

    Example: stemforge ingest csv ./my_songs.csv --name mysongs --out ./stemforge-data
    """
    _check_name(name)
    _check_fractions(valid_fraction, test_fraction)
    run_ingest(
        "csv", csv_file, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), name=name, length_tolerance=length_tolerance,
        valid_fraction=valid_fraction, test_fraction=test_fraction,
    )


@ingest_app.command("pairs")
def ingest_pairs(
    list_or_dir: Path = typer.Argument(
        ..., help="CSV with columns original,karaoke[,artist,title,split,track_id], or a folder with pairs.csv or originals/ + karaoke/."
    ),
    data: Optional[Path] = OUT_OPTION,
    workers: int = WORKERS_OPTION,
    force: bool = FORCE_OPTION,
    preset: Optional[str] = PRESET_OPTION,
    sample_rate: Optional[int] = SAMPLE_RATE_OPTION,
    n_fft: Optional[int] = N_FFT_OPTION,
    hop_length: Optional[int] = HOP_LENGTH_OPTION,
    channels: Optional[int] = CHANNELS_OPTION,
    name: str = typer.Option("pairs", "--name", help="Dataset name of these pairs (their uids are NAME:track_id)."),
    min_score: float = typer.Option(
        MIN_SCORE, "--min-score", min=0.0, max=1.0, help="Refuse pairs whose fit score (0-1) is below this."
    ),
    max_offset: float = typer.Option(30.0, "--max-offset", help="Search offsets up to this many seconds either way."),
    valid_fraction: float = VALID_OPTION,
    test_fraction: float = TEST_OPTION,
) -> None:
    """Ingest original/karaoke pairs: align each karaoke, derive the vocals, store the covered part.

    Each pair's offset, gain and fit score go into the manifest (align_* columns); a pair
    scoring below --min-score (a wrong pair, a different mix) or with a missing file is
    reported as failed in one line naming its files, the others are stored, and the exit code
    is 1. Rows without a split get a deterministic one. The list may name files anywhere:
    absolute paths and ../ are read as written. See docs/pairs.md.

    Example: stemforge ingest pairs ./karaoke_pairs.csv --min-score 0.5 --out ./stemforge-data
    """
    _check_name(name)
    if not max_offset > 0:
        raise typer.BadParameter(f"must be > 0 seconds, got {max_offset}", param_hint="--max-offset")
    _check_fractions(valid_fraction, test_fraction)
    run_ingest(
        "pairs", list_or_dir, data, workers, force, _geometry(preset, sample_rate, n_fft, hop_length, channels), name=name, min_score=min_score, max_offset_s=max_offset,
        valid_fraction=valid_fraction, test_fraction=test_fraction,
    )


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise typer.BadParameter(f"use letters, digits, '_', '-', '.' only, got {name!r}", param_hint="--name")


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
