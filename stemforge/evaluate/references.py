"""Scoring stems against references on disk, for songs outside MUSDB18:
``stemforge evaluate --reference-dir REFS --estimates EST`` (and/or MODELs).

Layout of REFS (one folder per song, the layout ``stemforge separate`` writes its stems in)::

    REFS/<song>/vocals.<ext>            the true vocals
    REFS/<song>/accompaniment.<ext>     the true accompaniment
    REFS/<song>/mixture.<ext>           optional: the input (else vocals + accompaniment)

or REFS itself holding those files (one song, named after REFS). ``<ext>``: wav, flac, mp3,
m4a or ogg. The files of a song must share their sample rate, channels and length (exactly for
lossless files, within 2048 samples when one is lossy: MP3/AAC/Vorbis padding; any rate and
channel count: each song is scored at its own). Estimates are found as for the MUSDB18
protocol (:class:`~stemforge.evaluate.musdb18.EstimatesDir`): ``EST/<song>/vocals.wav`` and
``accompaniment.wav``, i.e. what ``stemforge separate ... -o EST`` writes for
``REFS/<song>/mixture.wav`` (a generic file name takes its folder's name), or EST itself
holding them when REFS is one song.

The scoring is the MUSDB18 protocol's (:mod:`stemforge.evaluate.musdb18`): BSS Eval v4 as
``museval.evaluate`` (image mode, 1 s windows and hop), per-song median over windows, median
over songs, with the ``mixture`` (floor) and ``oracle`` (ideal ratio mask, ceiling) rows, and
the same report files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stemforge.core.errors import DatasetLayoutError
from stemforge.evaluate.musdb18 import (
    FRAME_SECONDS,
    STEM_SUFFIXES,
    EstimatesDir,
    Method,
    MusdbReport,
    MusdbTrack,
    ProgressFn,
    evaluate_tracks,
)

PROTOCOL = "references"
PROTOCOL_LABEL = (
    "Reference folder: your references and estimates, BSS Eval v4 as museval (image mode, 1 s windows, median over "
    "frames, then over songs): the MUSDB18 protocol's metric, comparable with published MUSDB18 tables only on MUSDB18's songs"
)
DATASET = "references"
ROLES = ("mixture", "vocals", "accompaniment")
#: Samples the files of one song may differ by: 0 for lossless files; two codec frames when a
#: file is lossy (MP3, AAC and Vorbis decoders pad differently), the longer ones then trimmed.
LOSSY_SUFFIXES = (".mp3", ".m4a", ".ogg")
LOSSY_TOLERANCE = 2048


def _role_file(folder: Path, role: str) -> Path | None:
    for ext in STEM_SUFFIXES:
        p = folder / f"{role}{ext}"
        if p.is_file():
            return p
    return None


def is_song_folder(folder: str | Path) -> bool:
    """Whether ``folder`` itself holds a song's references (a vocals or accompaniment file)."""
    folder = Path(folder)
    return any(_role_file(folder, role) is not None for role in ("vocals", "accompaniment"))


def find_songs(root: str | Path, limit: int | None = None) -> list[MusdbTrack]:
    """The songs of a reference folder (sorted by name; at most ``limit``): every sub-folder
    holding a ``vocals.*`` or ``accompaniment.*`` file, or ``root`` itself when it holds them.

    A song folder without both stems gives a track whose ``source.error`` names the missing
    file (it fails in one line, the others are scored). Raises DatasetLayoutError, with the
    expected layout, when ``root`` is not a folder or holds no song.
    """
    from stemforge.recipes.base import StemRef, TrackSource

    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: reference folder not found (expected REFS/<song>/vocals.wav and accompaniment.wav)")
    if is_song_folder(root):
        folders = [root]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_song_folder(p))
    if not folders:
        found = sorted(p.name for p in root.iterdir())[:8]
        raise DatasetLayoutError(
            f"{root}: no song found: expected REFS/<song>/vocals.wav and accompaniment.wav (optionally mixture.wav; "
            f"or REFS/vocals.wav for one song); found {found or 'nothing'}"
        )
    tracks = []
    for folder in folders[: int(limit)] if limit is not None else folders:
        files = {role: _role_file(folder, role) for role in ROLES}
        missing = [role for role in ("vocals", "accompaniment") if files[role] is None]
        error = None
        if missing:
            error = f"{folder / (missing[0] + '.wav')}: missing reference ({missing[0]}; a song's folder holds vocals and accompaniment)"
        refs = {role: (StemRef(p.name),) if p is not None else () for role, p in files.items()}
        source = TrackSource(
            dataset=DATASET,
            track_id=folder.name,
            root=str(folder),
            mixture=refs["mixture"],
            vocals=refs["vocals"],
            accompaniment=refs["accompaniment"],
            error=error,
            length_tolerance=LOSSY_TOLERANCE if any(p is not None and p.suffix.lower() in LOSSY_SUFFIXES for p in files.values()) else 0,
        )
        tracks.append(MusdbTrack(name=folder.name, subset="", split="test", source=source, dataset=DATASET))
    return tracks


def estimates_dir(root: str | Path, references: str | Path, name: str | None = None, template: str | None = None) -> EstimatesDir:
    """The :class:`EstimatesDir` of ``root`` for the songs of ``references``: when the
    references are one song (REFS holds the stems), ``root`` may hold that song's stems itself."""
    return EstimatesDir(root, name=name, template=template, single=is_song_folder(references))


def evaluate_references(
    methods: list[Method],
    root: str | Path,
    *,
    limit: int | None = None,
    floor_and_ceiling: bool = True,
    frame_seconds: float = FRAME_SECONDS,
    progress: ProgressFn | None = None,
) -> MusdbReport:
    """Score every method on the songs of the reference folder ``root`` (:func:`find_songs`)
    with BSS Eval v4 as museval; see :func:`stemforge.evaluate.musdb18.evaluate_musdb18` for
    ``methods``, ``progress`` and the failures. Raises StemforgeError when nothing was scored."""
    tracks = find_songs(root, limit)
    meta: dict[str, Any] = {
        "protocol": PROTOCOL,
        "label": PROTOCOL_LABEL,
        "root": str(Path(root).resolve()),
        "subset": "",
        "title": f"{Path(root).name}: median over songs of per-song median (BSS Eval v4)",
    }
    return evaluate_tracks(methods, tracks, meta, floor_and_ceiling=floor_and_ceiling, frame_seconds=frame_seconds, progress=progress)
