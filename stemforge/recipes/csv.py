"""A user's own list of songs: one CSV row per song, the simplest manifest there is.

Layout::

    LIST.csv            header: mixture,vocals,accompaniment[,split][,artist][,title][,track_id]
    any/where/song1/mixture.wav
    ...

Paths are relative to the CSV's folder (absolute paths are kept). Each row gives any two of
the three roles (or all three); the missing one is derived sample by sample at the files' own
rate:

* vocals + accompaniment: mixture = vocals + accompaniment (``vocals_kind`` "stem");
* mixture + vocals: accompaniment = mixture - vocals (``vocals_kind`` "stem");
* mixture + accompaniment: vocals = mixture - accompaniment (``vocals_kind`` "derived");
* all three: the mixture file is stored and ``mix_residual_db`` says how far it is from the sum.

Any format :func:`stemforge.core.audio.load` reads is accepted (wav, flac, mp3, ...); the files of
one row must share their sample rate, and their lengths may differ by ``length_tolerance``
samples (default 0; give some for lossy files).

Split: the row's ``split`` (train/valid/test) when given; otherwise deterministic per song
(:func:`stemforge.recipes.splits.hash_split` of the song key, ``valid_fraction``/``test_fraction``),
so adding rows later never moves the earlier ones. ``track_id``: the column when given, else
``artist - title``, else the first path without its suffix. ``name`` is the dataset name
(default "csv"); give each list its own name to keep their uids apart.

A bad row (fewer than two roles, a missing file, an unknown split) comes back with ``error``
set: ingest reports it and goes on with the other rows.
"""

from __future__ import annotations

import csv as _csv
import re
from pathlib import Path

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import DatasetLayoutError, OptionError, StemforgeError
from stemforge.core.files import regular_file_problem
from stemforge.recipes.splits import check_fractions, hash_split
from stemforge.recipes.identity import song_key
from stemforge.recipes.base import SPLITS, StemRef, TrackAudio, TrackSource, check_name, shown_text, text_problem
from stemforge.recipes.loading import load_roles

NAME = "csv"
LAYOUT = __doc__
ROLES = ("mixture", "vocals", "accompaniment")
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
LOADER = "stemforge.recipes.csv:load_csv_track"
_SALT = "csv-song-split-v1"


def _clean(value) -> str:
    return "" if value is None else str(value).strip()


#: The longest cell a list may hold, in characters. A file path is at most 4,096 bytes on Linux
#: (PATH_MAX) and a name far shorter, so a longer cell is a mistake (a whole file pasted into
#: one cell, a missing closing quote): it refuses its own row, not the list.
MAX_CELL_CHARS = 16 * 1024
#: Columns that are stored as names (manifest columns, shard attributes): checked with
#: :func:`stemforge.recipes.base.text_problem` (no NUL, no control character, valid UTF-8).
TEXT_COLUMNS = ("track_id", "id", "artist", "title", "license", "split")
#: The key under which :func:`read_table` gives a row's problem (no header holds a NUL).
ROW_PROBLEM = "\x00problem"


def _cell_problem(column: str, value: str) -> str | None:
    if len(value) > MAX_CELL_CHARS:
        return f"column {column!r} holds {len(value):,} characters, more than the {MAX_CELL_CHARS:,} a cell may hold"
    if "\x00" in value or column in TEXT_COLUMNS:
        problem = text_problem(value)
        if problem:
            return f"column {column!r}: {shown_text(value)} {problem}"
    return None


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A list file's lower-cased header and its rows (dicts of stripped strings; BOM tolerated).

    A row with a cell that cannot be used (longer than :data:`MAX_CELL_CHARS`, a NUL byte, a
    name column with a control character) has its first problem, one line naming the column,
    under :data:`ROW_PROBLEM`, and its bad cells emptied; the other rows are read as usual.
    Shared by the ``csv`` and ``pairs`` recipes. DatasetLayoutError when unreadable.
    """
    limit = _csv.field_size_limit()
    try:
        # the csv module refuses a cell over its limit (128 KiB) for the whole file: lift it for
        # this read (restored below), so that a long cell refuses only its row
        _csv.field_size_limit(max(limit, path.stat().st_size + 1))
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = _csv.DictReader(f)
            header = [_clean(h).lower() for h in (reader.fieldnames or [])]
            rows = []
            for r in reader:
                row: dict[str, str] = {}
                for k, v in r.items():
                    if k is None:
                        continue
                    key, value = _clean(k).lower(), _clean(v)
                    problem = _cell_problem(key, value)
                    if problem:
                        row.setdefault(ROW_PROBLEM, problem)
                        value = ""
                    row[key] = value
                rows.append(row)
    except (OSError, UnicodeDecodeError, _csv.Error) as exc:
        raise DatasetLayoutError(f"{path}: not a readable CSV file ({exc})") from None
    finally:
        _csv.field_size_limit(limit)
    return header, rows


def check_options(
    name: str = NAME, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION, length_tolerance: int = 0
) -> None:
    """OptionError naming the first option :func:`discover` refuses: a dataset ``name`` that is
    not letters, digits, '_', '-', '.'; bad fractions; a negative ``length_tolerance``."""
    check_name(name)
    check_fractions(valid_fraction, test_fraction)
    if not int(length_tolerance) >= 0:
        raise OptionError("length_tolerance", f"must be 0 or more samples, got {length_tolerance}")


def discover(
    root: str | Path,
    name: str = NAME,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    length_tolerance: int = 0,
) -> list[TrackSource]:
    """One TrackSource per data row of the CSV file ``root``."""
    path = Path(root)
    check_options(name, valid_fraction, test_fraction, length_tolerance)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".csv")[:8]
        raise DatasetLayoutError(
            f"{path}: a folder; expected a CSV file with columns mixture,vocals,accompaniment (any two) and "
            f"optional split,artist,title,track_id{f'; CSV files there: {found}' if found else ''}"
        )
    problem = regular_file_problem(path, kind="CSV file", missing="CSV file not found")
    if problem:  # a FIFO is refused before it is opened (opening one blocks)
        raise DatasetLayoutError(f"{path}: {problem}")
    header, rows = read_table(path)
    roles = [r for r in ROLES if r in header]
    if len(roles) < 2:
        raise DatasetLayoutError(
            f"{path}: expected a header with at least two of mixture,vocals,accompaniment (plus optional "
            f"split,artist,title,track_id); found columns {header or 'none'}"
        )
    base = path.parent
    tracks: list[TrackSource] = []
    used: set[str] = set()
    for line, row in enumerate(rows, start=2):
        given = {r: row.get(r, "") for r in ROLES if row.get(r, "")}
        artist, title = row.get("artist", ""), row.get("title", "")
        first = next(iter(given.values()), f"row{line}")
        tid = row.get("track_id") or row.get("id") or (f"{artist} - {title}" if artist and title else title)
        if not tid:
            tid = re.sub(r"\.[^./]*$", "", first)
        tid, i = tid, 1
        unique = tid
        while unique in used:
            i += 1
            unique = f"{tid}~{i}"
        used.add(unique)
        error = f"{path}:{line}: {row[ROW_PROBLEM]}" if ROW_PROBLEM in row else None
        if error is None and len(given) < 2:
            error = f"{path}:{line}: needs two of mixture, vocals, accompaniment; has {', '.join(given) or 'none'}"
        for role, rel in given.items():
            problem = None if error is not None else regular_file_problem(base / rel, kind="audio file")
            if problem:
                error = f"{base / rel}: {problem} ({role} of {path.name} line {line})"
        split = row.get("split", "").lower()
        if split and split not in SPLITS:
            error = error or f"{path}:{line}: split {row['split']!r} is not one of train, valid, test"
        if not split:
            split = hash_split(song_key(artist, title or unique), valid_fraction, test_fraction, _SALT)
        derive = next((r for r in ROLES if r not in given), "") if len(given) == 2 else ""
        refs = {r: (StemRef(v),) for r, v in given.items()}
        loader = "stems" if derive in ("", "mixture") else LOADER
        tracks.append(
            TrackSource(
                dataset=name,
                track_id=unique,
                root=str(base),
                artist=artist,
                title=title or unique,
                split=split if split in SPLITS else "train",
                mixture=refs.get("mixture", ()),
                vocals=refs.get("vocals", ()),
                accompaniment=refs.get("accompaniment", ()),
                vocals_kind="derived" if derive == "vocals" else "stem",
                license=row.get("license", ""),
                loader=loader,
                options=(("derive", derive),) if derive else (),
                extra=(("derived_role", derive or "none"), ("csv_line", line)),
                error=error,
                length_tolerance=int(length_tolerance),
            )
        )
    if not tracks:
        raise DatasetLayoutError(f"{path}: the CSV has a header but no row")
    return tracks


def load_csv_track(source: TrackSource, config: SpectrogramConfig) -> TrackAudio:
    """Loader for rows that give the mixture and one stem: the other stem = mixture - stem.

    The subtraction happens at the files' own rate, before resampling to ``config.sample_rate``
    (both are linear, so this equals subtracting afterwards; see
    :func:`stemforge.recipes.loading.track_audio`). Returns a TrackAudio with ``mixture=None``:
    the stored mixture is vocals + accompaniment, which is the mixture file itself.
    """
    derive = dict(source.options).get("derive", "")
    given = source.vocals if derive == "accompaniment" else source.accompaniment
    if not source.mixture or not given or derive not in ("vocals", "accompaniment"):
        raise StemforgeError(f"{source.uid}: load_csv_track needs the mixture and one stem (derive={derive!r})")
    track = load_roles(source, config)
    track.extra["derived_role"] = derive
    return track
