"""Original/karaoke pairs: vocals derived by aligning each karaoke to its song and subtracting.

Layout::

    LIST.csv            header: original,karaoke[,artist][,title][,split][,track_id]
                        (paths relative to the CSV's folder; absolute paths are kept)
    -- or a folder --
    DIR/pairs.csv       when present, read as LIST.csv (this is what ``stemforge synth --layout pairs`` writes)
    DIR/originals/<name>.<ext>     otherwise: each original is paired with the karaoke of the
    DIR/karaoke/<name>.<ext>       same <name> (the file name without its extension; any
                                   format stemforge decodes, the two extensions may differ)

Each pair is aligned and its vocals derived as in :func:`stemforge.karaoke.align.derive` (offset,
gain, score; ``vocals = max(|O| - g |K|, 0)`` with the original's phase), then cut to the part
of the original the karaoke covers (:meth:`stemforge.karaoke.align.Derived.cropped`). Stored: mixture =
the original, accompaniment = the aligned, gain-corrected karaoke, vocals = the derived vocals,
all 16 kHz mono; ``vocals_kind`` is "derived" and ``mix_residual_db`` says how far the original
is from vocals + accompaniment (the bins where the karaoke is louder than the original).

Extra manifest columns (see docs/pairs.md): ``align_offset_s``, ``align_offset_samples`` (at
``source_sample_rate``, the original's), ``align_gain_db``, ``align_score``,
``align_coverage`` (fraction of the original covered), ``align_start_s``/``align_end_s`` (the
stored range in the original, seconds), ``align_min_score``, ``karaoke_path``,
``karaoke_sample_rate``; ``csv_line`` for the CSV form.

A pair scoring below ``min_score`` (a wrong pair, a different mix, an offset beyond
``max_offset_s``) fails with a one-line reason naming both files; so does a row whose file is
missing, an original without a karaoke of the same name, or the reverse. Ingest reports them
and goes on with the other pairs. ``min_score`` and ``max_offset_s`` enter every track's source
fingerprint: changing them redoes the stored pairs.

Names: ``artist``/``title`` from the CSV; in the folder form (and for CSV rows without them)
``<name>`` is read as ``Artist - Title`` when it holds " - ", else as the title.
``track_id``: the column when given, else ``artist - title``, else ``<name>``. Split: the
row's ``split`` (train/valid/test) when given; otherwise deterministic per song
(:func:`stemforge.recipes.splits.hash_split` of the song key with ``valid_fraction`` /
``test_fraction``), so adding pairs later never moves the earlier ones.
"""

from __future__ import annotations

from pathlib import Path

from stemforge.core.errors import AlignmentError, DatasetLayoutError, OptionError, StemforgeError
from stemforge.core.files import regular_file_problem
from stemforge.recipes.splits import check_fractions, hash_split
from stemforge.recipes.identity import song_key
from stemforge.recipes.base import SPLITS, StemRef, TrackSource, check_name
from stemforge.recipes.csv import ROW_PROBLEM, read_table

NAME = "pairs"
LAYOUT = __doc__
LIST_NAME = "pairs.csv"
ORIGINALS = "originals"
KARAOKE = "karaoke"
LOADER = "stemforge.recipes.karaoke:load_pair"
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
#: Default offset search range (s), as ``stemforge derive-vocals --max-offset``.
MAX_OFFSET_S = 30.0
#: Audio file extensions the folder form pairs up (what :func:`stemforge.core.audio.load` decodes).
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".mka", ".wma")
_SALT = "pairs-song-split-v1"


def _names_from(name: str) -> tuple[str, str]:
    """``"Artist - Title"`` -> (artist, title); a name without " - " is a title."""
    artist, sep, title = name.partition(" - ")
    if sep and artist.strip() and title.strip():
        return artist.strip(), title.strip()
    return "", name.strip()


def _default_min_score() -> float:
    from stemforge.karaoke.align import MIN_SCORE

    return MIN_SCORE


def _expected(root: Path) -> str:
    found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else []
    return (
        f"{root}: not a pairs folder: expected {LIST_NAME} (columns original,karaoke[,artist,title,split]) or "
        f"{ORIGINALS}/<name>.<ext> with {KARAOKE}/<name>.<ext>; found {found or 'nothing'}"
    )


def check_options(
    name: str = NAME,
    min_score: float | None = None,
    max_offset_s: float = MAX_OFFSET_S,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> None:
    """OptionError naming the first option :func:`discover` refuses: a dataset ``name`` that is
    not letters, digits, '_', '-', '.'; ``min_score`` outside [0, 1]; ``max_offset_s`` not
    above 0; bad fractions."""
    check_name(name)
    if min_score is not None and not 0.0 <= float(min_score) <= 1.0:
        raise OptionError("min_score", f"must be in [0, 1], got {min_score}")
    if not float(max_offset_s) > 0.0:
        raise OptionError("max_offset_s", f"must be > 0 seconds, got {max_offset_s}")
    check_fractions(valid_fraction, test_fraction)


def discover(
    root: str | Path,
    name: str = NAME,
    min_score: float | None = None,
    max_offset_s: float = MAX_OFFSET_S,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> list[TrackSource]:
    """One TrackSource per pair of the CSV file ``root``, or of the folder ``root`` (see Layout).

    ``name`` is the dataset name (uids are ``name:track_id``); ``min_score`` (default
    :data:`stemforge.karaoke.align.MIN_SCORE`) and ``max_offset_s`` are handed to the loader and enter
    the fingerprint. Only looks at the file system (no decoding). Raises DatasetLayoutError
    when ``root`` is neither form; a bad pair comes back with ``error`` set.
    """
    path = Path(root)
    check_options(name, min_score, max_offset_s, valid_fraction, test_fraction)
    threshold = _default_min_score() if min_score is None else float(min_score)
    options = (("min_score", repr(threshold)), ("max_offset_s", repr(float(max_offset_s))))
    if path.is_file():
        entries = _read_list(path)
        base = path.parent
    elif path.is_dir():
        if (path / LIST_NAME).is_file():
            entries = _read_list(path / LIST_NAME)
        elif (path / ORIGINALS).is_dir() and (path / KARAOKE).is_dir():
            entries = _scan_folders(path)
        else:
            raise DatasetLayoutError(_expected(path))
        base = path
    else:  # missing, a symbolic link loop, a FIFO (never opened: it would block), a device
        raise DatasetLayoutError(f"{path}: {regular_file_problem(path, kind='pairs list', missing='pairs list or folder not found')}")

    tracks: list[TrackSource] = []
    used: set[str] = set()
    for e in entries:
        original, karaoke = e["original"], e["karaoke"]
        stem = Path(original or karaoke).stem
        artist, title = e.get("artist", ""), e.get("title", "")
        if not artist and not title:
            artist, title = _names_from(stem)
        tid = e.get("track_id") or (f"{artist} - {title}" if artist and title else title) or stem or f"row{e.get('line')}"
        unique, i = tid, 1
        while unique in used:
            i += 1
            unique = f"{tid}~{i}"
        used.add(unique)
        error = e.get("error")
        where = f"{e['list'].name} line {e['line']}" if e.get("line") else f"pair {stem!r}"
        for role, rel in (("original", original), ("karaoke", karaoke)):
            problem = regular_file_problem(base / rel, kind="audio file") if error is None and rel else None
            if problem:
                error = f"{base / rel}: {problem} ({role} of {where})"
        split = e.get("split", "").lower()
        if error is None and split and split not in SPLITS:
            error = f"{e['list']}:{e['line']}: split {e['split']!r} is not one of train, valid, test"
        if not split or split not in SPLITS:
            split = hash_split(song_key(artist, title or unique), valid_fraction, test_fraction, _SALT)
        extra: list[tuple[str, object]] = [("karaoke_path", karaoke), ("align_min_score", threshold)]
        if e.get("line"):
            extra.append(("csv_line", e["line"]))
        tracks.append(
            TrackSource(
                dataset=name,
                track_id=unique,
                root=str(base),
                artist=artist,
                title=title or unique,
                split=split,
                mixture=(StemRef(original),) if original else (),
                accompaniment=(StemRef(karaoke),) if karaoke else (),
                vocals_kind="derived",
                license=e.get("license", ""),
                loader=LOADER,
                options=options,
                extra=tuple(extra),
                error=error,
            )
        )
    if not tracks:
        raise DatasetLayoutError(f"{path}: no pair found (an empty list, or empty {ORIGINALS}/ and {KARAOKE}/ folders)")
    return tracks


def _read_list(path: Path) -> list[dict]:
    """Rows of a pairs CSV as dicts (original, karaoke, artist, title, split, track_id, line, list)."""
    header, rows = read_table(path)
    if "original" not in header or "karaoke" not in header:
        raise DatasetLayoutError(
            f"{path}: expected a header with columns original,karaoke (plus optional artist,title,split,track_id); "
            f"found columns {header or 'none'}"
        )
    entries = []
    for line, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue  # blank line
        e = dict(row, line=line, list=path)
        missing = [c for c in ("original", "karaoke") if not row.get(c)]
        if ROW_PROBLEM in row:  # a cell too long, a NUL byte, a control character in a name
            e["error"] = f"{path}:{line}: {row[ROW_PROBLEM]}"
        elif missing:
            e["error"] = f"{path}:{line}: no {' and no '.join(missing)} file given"
        entries.append(e)
    return entries


def _audio_files(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS:
            found.setdefault(p.stem, []).append(p)
    return found


def _scan_folders(root: Path) -> list[dict]:
    """Pairs of ``originals/<name>.*`` and ``karaoke/<name>.*`` by name; unmatched files are errors."""
    originals = _audio_files(root / ORIGINALS)
    karaoke = _audio_files(root / KARAOKE)
    entries = []
    for stem in sorted(set(originals) | set(karaoke)):
        o, k = originals.get(stem, []), karaoke.get(stem, [])
        e = {
            "original": str(o[0].relative_to(root)) if o else "",
            "karaoke": str(k[0].relative_to(root)) if k else "",
        }
        if len(o) > 1 or len(k) > 1:
            many = o if len(o) > 1 else k
            e["error"] = f"{many[0].parent}: several files named {stem!r} ({', '.join(p.name for p in many)}); keep one"
        elif not k:
            e["error"] = f"{o[0]}: no karaoke of the same name in {root / KARAOKE}"
        elif not o:
            e["error"] = f"{k[0]}: no original of the same name in {root / ORIGINALS}"
        entries.append(e)
    return entries


def load_pair(source: TrackSource, config):
    """Loader of a pair: decode both files, align, derive the vocals, keep the covered range.

    ``source.mixture[0]`` is the original, ``source.accompaniment[0]`` the karaoke;
    ``source.options`` carries ``min_score`` and ``max_offset_s``. Returns a
    :class:`~stemforge.recipes.base.TrackAudio` with ``[samples]`` (``[2, samples]`` at a
    stereo geometry, each channel derived with the downmix's alignment) vocals (derived),
    accompaniment (the aligned karaoke times its gain) and mixture (the original), cut to
    the range the karaoke covers, and the alignment figures in ``extra``. Raises
    AlignmentError (message naming both files) for a pair that does not fit, AudioError for a
    file that cannot be decoded.
    """
    from stemforge.core import audio
    from stemforge.recipes.base import TrackAudio
    from stemforge.karaoke.align import derive

    root = Path(source.root)
    if not source.mixture or not source.accompaniment:
        raise StemforgeError(f"{source.uid}: load_pair needs the original (mixture) and the karaoke (accompaniment)")
    opts = dict(source.options)
    min_score = float(opts.get("min_score", _default_min_score()))
    max_offset_s = float(opts.get("max_offset_s", MAX_OFFSET_S))
    o_ref, k_ref = source.mixture[0], source.accompaniment[0]
    o_path, k_path = root / o_ref.path, root / k_ref.path
    original, o_rate, o_channels = audio.load_mono(o_path, o_ref.stream, o_ref.channel)
    karaoke, k_rate, _ = audio.load_mono(k_path, k_ref.stream, k_ref.channel)
    try:
        d = derive(original, o_rate, karaoke, k_rate, config, min_score=min_score, max_offset_s=max_offset_s)
    except AlignmentError as exc:
        raise AlignmentError(f"{o_path} (karaoke {k_path}): {exc}") from None
    a = d.alignment
    start, stop = d.covered
    c = d.cropped()
    vocals, accompaniment, mixture = c.vocals, c.accompaniment, c.mixture
    if config.channels == 2:  # stereo geometry: each channel derived with the alignment of the downmix
        vocals, accompaniment, mixture = _derive_stereo(o_path, o_ref, k_path, k_ref, config, a, (start, stop))
    return TrackAudio(
        vocals=vocals,
        accompaniment=accompaniment,
        mixture=mixture,
        source_sample_rate=int(o_rate),
        source_channels=int(o_channels),
        extra={
            "align_offset_s": a.offset_s,
            "align_offset_samples": a.offset_samples,
            "align_gain_db": a.gain_db,
            "align_score": a.score,
            "align_coverage": d.coverage,
            "align_start_s": start / d.sample_rate,
            "align_end_s": stop / d.sample_rate,
            "karaoke_sample_rate": int(k_rate),
        },
    )


def _derive_stereo(o_path, o_ref, k_path, k_ref, config, alignment, covered):
    """``[2, n]`` vocals, accompaniment and mixture of a pair at a stereo geometry, cut to
    ``covered``: the offset and gain measured on the mono downmix (:func:`load_pair`) applied
    to each channel of the original and the karaoke (a mono file is put on both channels;
    :func:`stemforge.recipes.loading.fit_channels`)."""
    import numpy as np

    from stemforge.core import audio
    from stemforge.karaoke.align import derive
    from stemforge.recipes.loading import fit_channels

    def channels(path, ref):
        data, rate = audio.load(path, stream=ref.stream)
        if ref.channel is not None:
            data = data[ref.channel : ref.channel + 1]
        return fit_channels(data, 2, path), rate

    o, o_rate = channels(o_path, o_ref)
    k, k_rate = channels(k_path, k_ref)
    parts = [derive(o[i], o_rate, k[i], k_rate, config, alignment=alignment) for i in range(2)]
    a, b = covered
    return tuple(np.stack([getattr(p, name)[a:b] for p in parts]) for name in ("vocals", "accompaniment", "mixture"))
