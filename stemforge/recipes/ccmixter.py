"""ccMixter (Liutkus et al. 2014): 50 full songs from ccmixter.org with separate voice.

Layout::

    ROOT/
      <song>/mix.wav
      <song>/source-01.wav      accompaniment
      <song>/source-02.wav      voice

44.1 kHz PCM; some songs are mono (every file of the song then is; they are downmixed like
the others). vocals = source-02.wav, accompaniment = source-01.wav, the stored mixture is
mix.wav (``mix_residual_db`` says how far it is from their sum). The song folder name is
taken as ``Artist - Title`` when it has a " - ", else as the title.

Split: ccMixter has no official split. Song-level, deterministic: the songs found are
assigned to approach ``valid_fraction`` and ``test_fraction``
(:func:`stemforge.recipes.splits.balanced_split`, ties broken by a hash of the folder name); the
full corpus always gets the same split.
"""

from __future__ import annotations

from pathlib import Path

from stemforge.core.errors import DatasetLayoutError
from stemforge.recipes.splits import balanced_split, check_fractions
from stemforge.recipes.base import StemRef, TrackSource

NAME = "ccmixter"
LAYOUT = __doc__
LICENSE = "ccMixter: Creative Commons (per song, see ccmixter.org)"
FILES = ("mix.wav", "source-01.wav", "source-02.wav")
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
_SALT = "ccmixter-song-split-v1"


def _is_song(p: Path) -> bool:
    return p.is_dir() and any((p / f).exists() for f in FILES)


def check_options(valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> None:
    """OptionError unless the fractions are each in [0, 1) and sum below 1."""
    check_fractions(valid_fraction, test_fraction)


def discover(root: str | Path, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> list[TrackSource]:
    """Every song folder holding ``mix.wav``/``source-0N.wav``; an incomplete one gets ``error``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: corpus root not found (or not a folder)")
    check_fractions(valid_fraction, test_fraction)
    songs = sorted(p for p in root.iterdir() if _is_song(p))
    if not songs:
        found = sorted(p.name for p in root.iterdir())[:8]
        raise DatasetLayoutError(
            f"{root}: not a ccMixter root: expected <song>/mix.wav, <song>/source-01.wav (accompaniment) and "
            f"<song>/source-02.wav (voice); found {found or 'nothing'}"
        )
    splits = balanced_split({p.name: 1.0 for p in songs}, valid_fraction, test_fraction, salt=_SALT)
    tracks = []
    for p in songs:
        artist, sep, title = p.name.partition(" - ")
        if not sep:
            artist, title = "", p.name
        missing = [f for f in FILES if not (p / f).exists()]
        tracks.append(
            TrackSource(
                dataset=NAME,
                track_id=p.name,
                root=str(root),
                artist=artist,
                title=title,
                split=splits[p.name],
                mixture=(StemRef(f"{p.name}/mix.wav"),),
                vocals=(StemRef(f"{p.name}/source-02.wav"),),
                accompaniment=(StemRef(f"{p.name}/source-01.wav"),),
                vocals_kind="stem",
                license=LICENSE,
                error=f"{p / missing[0]}: missing ({', '.join(missing)} not in the song folder)" if missing else None,
            )
        )
    return tracks
