"""iKala: 252 clips of 30 s (a chorus or a verse) of 177 Chinese pop songs (by song id).

Layout::

    ROOT/
      Wavfile/<song id>_<section>.wav        e.g. Wavfile/10161_chorus.wav

Every wav is 44.1 kHz stereo PCM: the LEFT channel is the accompaniment, the RIGHT channel is
the voice. vocals = right channel, accompaniment = left channel, mixture = left + right
(derived, the way the iKala papers mix; ``vocals_kind`` "channel"). Other folders of the
distribution (PitchLabel, Lyrics) are not read.

Split: iKala has no official split. Song-level (the chorus and the verse of one song always
share a split), deterministic: the songs of ``manifests/ikala_tracks.csv`` plus any other song
found are assigned whole, heaviest first, to approach ``valid_fraction`` and
``test_fraction`` of the clips (:func:`stemforge.recipes.splits.balanced_split`), so a partial copy
gets the same splits as the full corpus.
"""

from __future__ import annotations

from pathlib import Path

from stemforge.core.errors import DatasetLayoutError
from stemforge.recipes.splits import balanced_split, check_fractions
from stemforge.recipes.base import StemRef, TrackSource

NAME = "ikala"
LAYOUT = __doc__
LICENSE = "iKala: research use (iKala Interactive Media / MIR Lab)"
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
_SALT = "ikala-song-split-v1"


def song_id(clip_id: str) -> str:
    """``"10161_chorus"`` -> ``"10161"`` (the clip id itself when it has no section)."""
    return clip_id.partition("_")[0] if "_" in clip_id else clip_id


def song_splits(found: list[str], valid_fraction: float, test_fraction: float) -> dict[str, str]:
    """Song id -> split over the reference clips plus the clips ``found``."""
    from stemforge.recipes.reference import reference_manifest

    clips = set(reference_manifest("ikala_tracks")["clip_id"]) | set(found)
    weights: dict[str, float] = {}
    for c in clips:
        weights[song_id(c)] = weights.get(song_id(c), 0.0) + 1.0
    return balanced_split(weights, valid_fraction, test_fraction, salt=_SALT)


def check_options(valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> None:
    """OptionError unless the fractions are each in [0, 1) and sum below 1."""
    check_fractions(valid_fraction, test_fraction)


def discover(root: str | Path, valid_fraction: float = VALID_FRACTION, test_fraction: float = TEST_FRACTION) -> list[TrackSource]:
    """Every ``Wavfile/*.wav`` clip, with its voice on the right channel."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: corpus root not found (or not a folder)")
    check_fractions(valid_fraction, test_fraction)
    wav_dir = root / "Wavfile"
    wavs = sorted(wav_dir.glob("*.wav")) if wav_dir.is_dir() else []
    if not wavs:
        found = sorted(p.name for p in root.iterdir())[:8]
        raise DatasetLayoutError(
            f"{root}: not an iKala root: expected Wavfile/<songid>_<section>.wav (stereo: left accompaniment, "
            f"right voice); found {found or 'nothing'}"
        )
    splits = song_splits([p.stem for p in wavs], valid_fraction, test_fraction)
    tracks = []
    for p in wavs:
        rel = str(p.relative_to(root))
        sid = song_id(p.stem)
        tracks.append(
            TrackSource(
                dataset=NAME,
                track_id=p.stem,
                root=str(root),
                artist="",
                title=f"iKala {sid}",
                split=splits[sid],
                vocals=(StemRef(rel, channel=1),),
                accompaniment=(StemRef(rel, channel=0),),
                vocals_kind="channel",
                license=LICENSE,
                extra=(("section", p.stem.partition("_")[2]),),
                group=sid,
            )
        )
    return tracks
