"""The name of a song from the name of its audio file: one rule for the folder ``stemforge
separate`` writes a song's stems into (:func:`stemforge.separate.naming.track_name`) and the
names ``stemforge serve`` gives its downloads.

A file is named after itself without its audio suffix (``song.mp3`` -> ``song``,
``x.stem.mp4`` -> ``x``), except when that is a generic name that corpora give every song
(:data:`GENERIC_NAMES`: ``mixture``, ``mix``, ``original``, ``song``, ...): then the name of the
folder holding the file is the song's, so MUSDB18-HQ's ``Artist - Title/mixture.wav`` and
ccMixter's ``<song>/mix.wav`` are named after their song, not all ``mixture`` or ``mix``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: File stems (lower case) that name a role, not a song: the folder holding the file names it.
GENERIC_NAMES = frozenset(
    {"mixture", "mix", "mixed", "full_mix", "fullmix", "original", "song", "audio", "track", "input", "master", "stereo"}
)
#: Suffixes of two parts that are dropped whole (NI stems).
COMPOUND_SUFFIXES = (".stem.mp4", ".stem.m4a")


def song_name(file_name: str, folder: str | None = None) -> str:
    """The song's name of the audio file ``file_name`` (a name, no folder) held in the folder
    named ``folder`` (its last component; None or ``""`` when unknown): ``file_name`` without
    its suffix, or ``folder`` when that is generic (:data:`GENERIC_NAMES`, any case) and
    ``folder`` is a name (not ``.`` or ``..``)."""
    for suffix in COMPOUND_SUFFIXES:
        if file_name.lower().endswith(suffix):
            return file_name[: -len(suffix)]
    stem = PurePosixPath(file_name).stem
    if stem.lower() in GENERIC_NAMES and folder not in (None, "", ".", ".."):
        return folder
    return stem


__all__ = ["COMPOUND_SUFFIXES", "GENERIC_NAMES", "song_name"]
