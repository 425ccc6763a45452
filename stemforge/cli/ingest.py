"""``stemforge ingest <corpus> ROOT``: one command per corpus, all sharing one runner.

A corpus command is a function that declares ROOT and the recipe's own options; the
:func:`corpus_command` decorator adds the options every corpus takes (:data:`SHARED`: the
DataDir, workers, force, the geometry) after ROOT and, unless the corpus follows an official
split, the fraction options (:func:`fraction_options`) at the end, and runs :func:`run_ingest`. The
recipe checks its own options (``check_options``) before anything is opened.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Optional

import typer

from stemforge.cli.common import (
    MIN_SCORE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    DataOption,
    MaxOffset,
    MinScore,
    Workers,
    announce_data_dir,
    cli_errors,
    err,
    out,
    usage_errors,
)
from stemforge.core.config import requested_geometry  # no numpy: `--help` stays fast
from stemforge.core.errors import OptionError

#: Corpora whose split follows an official list; every other corpus takes --valid-fraction/--test-fraction.
OFFICIAL_SPLITS = ("dsd100", "musdb")
#: The fraction options' defaults (the recipes' VALID_FRACTION/TEST_FRACTION; tests hold them equal).
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15

ingest_app = typer.Typer(
    help=(
        "Turn a corpus into normalized STFT magnitudes in a DataDir (one subcommand per corpus).\n\n"
        "Geometry: --preset seed (16 kHz mono, the default), paper (8192 Hz mono) or fullband (44.1 kHz stereo).\n\n"
        "Splits: dsd100 and musdb follow their official lists (no fraction options). Every other corpus "
        "takes --valid-fraction and --test-fraction and assigns whole groups, deterministically: songs; "
        "artists for medleydb; singers for mir1k (whose --split-rule huang2014 fixes the split)."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _option(*decls: str, help: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(*decls, help=help, show_default=False, **kw)


#: The geometry options every ingest command takes (docs/recipes.md, "Geometry"); the presets
#: live in stemforge.core.config.PRESETS (written out here so that --help stays fast).
GEOMETRY = {
    "preset": Annotated[Optional[str], _option("--preset", help=(
        "Geometry: seed (16 kHz mono, n_fft 1024, hop 512: the default for a new DataDir), paper "
        "(8192 Hz mono, n_fft 1024, hop 768), fullband (44.1 kHz stereo, n_fft 4096, hop 1024). "
        "Without any geometry option an existing DataDir keeps its own."
    ))],
    "sample_rate": Annotated[Optional[int], _option("--sample-rate", help="Sample rate of the stored audio (Hz); replaces the preset's.")],
    "n_fft": Annotated[Optional[int], _option("--n-fft", help="STFT frame length (samples); replaces the preset's.")],
    "hop_length": Annotated[Optional[int], _option("--hop-length", help="STFT hop (samples, at most --n-fft); replaces the preset's.")],
    "channels": Annotated[Optional[int], _option("--channels", help="1 (mono: the channel mean) or 2 (stereo); replaces the preset's.")],
}
#: name -> (annotation, default) of the options every corpus command takes after ROOT.
SHARED = {
    "data": (DataOption, None),
    "workers": (Workers, 0),
    "force": (Annotated[bool, typer.Option("--force", help="Redo tracks that are already stored and unchanged.")], False),
    **{name: (annotation, None) for name, annotation in GEOMETRY.items()},
}


def fraction_options(group: str) -> dict:
    """The options a corpus without an official split takes last, ``name -> (annotation,
    default)``; ``group`` is what its split assigns whole (``song``, ``artist``, ``singer``)."""
    how = f"whole {group}s, deterministic; see docs/recipes.md"
    return {
        "valid_fraction": (Annotated[float, typer.Option(
            "--valid-fraction", help=f"Fraction of the tracks that go to valid ({how}); in [0, 1).")], VALID_FRACTION),
        "test_fraction": (Annotated[float, typer.Option(
            "--test-fraction", help=f"Fraction of the tracks that go to test ({how}); in [0, 1).")], TEST_FRACTION),
    }


def corpus_command(corpus: str, split_group: str = "song"):
    """Register the decorated function as ``stemforge ingest CORPUS``: its first parameter is
    ROOT and the others the recipe's options (named as the recipe's ``discover`` names them);
    :data:`SHARED` go after ROOT and :func:`fraction_options` (their help naming
    ``split_group``, what the split assigns whole) last unless ``corpus`` is in
    :data:`OFFICIAL_SPLITS`. The function's docstring is the command's help; its body is not run."""

    def register(declared):
        root, *own = inspect.signature(declared, eval_str=True).parameters.values()
        last = {} if corpus in OFFICIAL_SPLITS else fraction_options(split_group)
        params = [_keyword("ctx", typer.Context), _keyword(root.name, root.annotation)]
        params += [_keyword(name, annotation, default) for name, (annotation, default) in SHARED.items()]
        params += [_keyword(p.name, p.annotation, p.default) for p in own]
        params += [_keyword(name, annotation, default) for name, (annotation, default) in last.items()]

        def command(**given) -> None:
            geometry = {name: given.pop(name) for name in GEOMETRY}
            run_ingest(given.pop("ctx"), corpus, given.pop(root.name), given.pop("data"), given.pop("workers"), given.pop("force"), geometry, **given)

        command.__signature__ = inspect.Signature(params)
        command.__doc__, command.__name__ = declared.__doc__, declared.__name__
        ingest_app.command(corpus)(command)
        return declared

    return register


def _keyword(name: str, annotation: object, default: object = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def run_ingest(ctx: typer.Context, corpus: str, root: Path, data: Optional[Path], workers: int, force: bool, geometry: dict, **options) -> None:
    """Check the options (the recipe's ``check_options``, then the ``geometry`` options: usage
    errors, exit 2, before anything is opened), discover ``root`` with the corpus's recipe,
    ingest into the DataDir, print a summary.

    The geometry asked for (None without geometry options: a new DataDir gets the seed
    geometry, an existing one keeps its own) must equal an existing DataDir's config:
    ConfigMismatchError naming both otherwise (exit 3, nothing written). Exit code 0 when
    every track was stored (or unchanged/excluded), 1 when any track failed.
    """
    from stemforge.console.failures import DATADIR_LOGS, Failures, list_path
    from stemforge.console.progress import Progress
    from stemforge.ingest.engine import default_workers, ingest, open_for_ingest
    from stemforge.ingest.reconcile import reconcile_datadir
    from stemforge.ingest.summary import no_valid_split, summarize
    from stemforge.recipes import get_recipe

    recipe = get_recipe(corpus)
    with usage_errors(ctx):
        recipe.check_options(**options)
    try:  # a bad geometry: one line, exit 2, before anything is opened
        config = requested_geometry(**geometry)
    except OptionError as exc:
        err(f"error: --{exc.option.replace('_', '-')}: {exc.reason}")
        raise typer.Exit(EXIT_USAGE) from None
    path = announce_data_dir(data)
    with cli_errors():
        datadir, sources = open_for_ingest(path, config, lambda: recipe.discover(root, **options))
        err(f"geometry: {datadir.config.geometry()} (config {datadir.config.hash})")
        before = datadir.manifest[["uid", "split", "duplicate_of"]].copy()
        bar = Progress(f"ingest {corpus}", len(sources), "tracks")
        failures = Failures(bar.line, lambda: list_path(datadir.path / DATADIR_LOGS, f"ingest-{corpus}"), "tracks")

        def progress(event: str, uid: str, detail: str) -> None:
            if event == "planned":  # the others are unchanged, excluded or failed already
                if bar.tty:
                    bar.note(f"{detail} to process")
                else:
                    bar.line(f"ingest {corpus}: {detail} of {len(sources)} tracks to process")
                return
            if event == "damaged":  # redone: counted when done
                bar.line(f"redo (stored arrays damaged): {detail}")
                return
            if event == "failed":
                failures.add(detail)
            bar.update(1)

        try:
            report = ingest(datadir, sources, workers=workers or default_workers(), force=force, progress=progress, post_commit=reconcile_datadir)
        finally:
            bar.close()
        summarize(datadir.reload(), report, before, out, err)
        for line in failures.summary("the other tracks were stored"):
            err(line)
        out(f"DataDir: {datadir.path.resolve()}")
        for line in no_valid_split(datadir.select(), corpus, recipe, root, options, official=corpus in OFFICIAL_SPLITS):
            err(line)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_PARTIAL)


@corpus_command("dsd100")
def ingest_dsd100(root: Annotated[Path, typer.Argument(help="DSD100 root (holds Mixtures/ and Sources/).")]) -> None:
    """Ingest DSD100 (Mixtures/{Dev,Test}/..., Sources/{Dev,Test}/...).

    vocals = vocals.wav, accompaniment = bass + drums + other. Official split (no fraction
    options): Test -> test, Dev -> train except five validation songs.

    Example: stemforge ingest dsd100 ~/corpora/DSD100 --out ./stemforge-data --workers 2
    """


@corpus_command("medleydb", split_group="artist")
def ingest_medleydb(
    root: Annotated[Path, typer.Argument(help="MedleyDB root (holds Audio/<id>/...), or its Audio folder.")],
    versions: Annotated[Optional[str], typer.Option(
        "--versions", help="Comma-separated versions to ingest: V1,V2,EXTRA,BACH10,unknown (default: all found)."
    )] = None,
    exclude_bleed: Annotated[bool, typer.Option("--exclude-bleed", help="Skip tracks whose metadata says has_bleed: yes.")] = False,
    voices: Annotated[str, typer.Option(
        "--voices", help="singing: singers, vocalists, choir, rappers; all: also speakers, screamers, crowd, beatboxing."
    )] = "singing",
    mixture: Annotated[str, typer.Option(
        "--mixture", help="derived: vocals + accompaniment (the weighted stems); file: store <id>_MIX.wav."
    )] = "derived",
) -> None:
    """Ingest MedleyDB (Audio/<id>/<id>_MIX.wav, <id>_STEMS/, <id>_METADATA.yaml).

    vocals = the stems labelled as voices (weighted by the mixing coefficients), accompaniment
    = the other stems; instrumental tracks and tracks with a stem mixing voice and instruments
    are skipped (listed). Split: by artist (one artist never on two sides), deterministic.

    Example: stemforge ingest medleydb ~/corpora/MedleyDB --versions V1,V2 --exclude-bleed --out ./stemforge-data
    """


@corpus_command("ikala")
def ingest_ikala(root: Annotated[Path, typer.Argument(help="iKala root (holds Wavfile/).")]) -> None:
    """Ingest iKala (Wavfile/<song>_<section>.wav: left accompaniment, right voice, 44.1 kHz).

    mixture = left + right. Split: by song (chorus and verse together), deterministic.

    Example: stemforge ingest ikala ~/corpora/iKala --out ./stemforge-data
    """


@corpus_command("mir1k", split_group="singer")
def ingest_mir1k(
    root: Annotated[Path, typer.Argument(help="MIR-1K root (holds Wavfile/ and/or UndividedWavfile/).")],
    unit: Annotated[Optional[str], typer.Option("--unit", help="clips (Wavfile/, default when present) or songs (UndividedWavfile/).")] = None,
    split_rule: Annotated[str, typer.Option("--split-rule", help="singers (balanced by singer), huang2014 (abjones+amy train, their songs abjones_5+amy_9 valid, rest test) or huang2014-singer (amy train, abjones valid, rest test: an unseen singer validates).")] = "singers",
) -> None:
    """Ingest MIR-1K (16 kHz stereo: left accompaniment, right voice).

    mixture = left + right. Split: by singer (a singer never on two sides), deterministic;
    --split-rule huang2014 instead fixes the split as Huang et al. 2014 do (abjones and amy
    train, the other singers test; huang2014-singer: an unseen singer, abjones, validates),
    and the fraction options do not apply to it.

    Example: stemforge ingest mir1k ~/corpora/MIR-1K --unit clips --out ./stemforge-data
    """


@corpus_command("ccmixter")
def ingest_ccmixter(root: Annotated[Path, typer.Argument(help="ccMixter root (one folder per song).")]) -> None:
    """Ingest ccMixter (<song>/mix.wav, source-01.wav accompaniment, source-02.wav voice).

    Split: by song, deterministic.

    Example: stemforge ingest ccmixter ~/corpora/ccmixter_corpus --out ./stemforge-data
    """


@corpus_command("musdb")
def ingest_musdb(
    root: Annotated[Path, typer.Argument(help="MUSDB18 root (train/, test/ with .stem.mp4 files or HQ wav folders).")],
    fmt: Annotated[str, typer.Option("--format", help="auto (HQ folders when present, else .stem.mp4), stems or hq.")] = "auto",
) -> None:
    """Ingest MUSDB18 (.stem.mp4: 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals) or MUSDB18-HQ.

    vocals = vocals, accompaniment = drums + bass + other. Official split (no fraction
    options): test -> test; train -> train except the 14 official validation tracks -> valid.

    Example: stemforge ingest musdb ~/corpora/musdb18 --out ./stemforge-data --workers 2
    """


@corpus_command("csv")
def ingest_csv(
    csv_file: Annotated[Path, typer.Argument(help="CSV with columns mixture,vocals,accompaniment (any two), optional split,artist,title,track_id.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name of these rows (their uids are NAME:track_id).")] = "csv",
    length_tolerance: Annotated[int, typer.Option("--length-tolerance", min=0, help="Samples the files of one row may differ in length by.")] = 0,
) -> None:
    """Ingest your own list of songs: one CSV row per song, paths relative to the CSV.

    The list may name files anywhere: absolute paths and ../ are read as written (it is your
    own list, not a corpus's metadata, which is read only inside its root).

    Any two of mixture, vocals, accompaniment per row; the third is derived (e.g.
    accompaniment = mixture - vocals). Rows without a split get a deterministic one. A bad row
    is reported and skipped.

    Example: stemforge ingest csv ./my_songs.csv --name mysongs --out ./stemforge-data
    """


@corpus_command("pairs")
def ingest_pairs(
    list_or_dir: Annotated[Path, typer.Argument(
        help="CSV with columns original,karaoke[,artist,title,split,track_id], or a folder with pairs.csv or originals/ + karaoke/."
    )],
    name: Annotated[str, typer.Option("--name", help="Dataset name of these pairs (their uids are NAME:track_id).")] = "pairs",
    min_score: MinScore = MIN_SCORE,
    max_offset_s: MaxOffset = 30.0,
) -> None:
    """Ingest original/karaoke pairs: align each karaoke, derive the vocals, store the covered part.

    Each pair's offset, gain and fit score go into the manifest (align_* columns); a pair
    scoring below --min-score (a wrong pair, a different mix) or with a missing file is
    reported as failed in one line naming its files, the others are stored, and the exit code
    is 1. Rows without a split get a deterministic one. The list may name files anywhere:
    absolute paths and ../ are read as written. See docs/pairs.md.

    Example: stemforge ingest pairs ./karaoke_pairs.csv --min-score 0.5 --out ./stemforge-data
    """


def register(app: typer.Typer) -> None:
    app.add_typer(ingest_app, name="ingest")
