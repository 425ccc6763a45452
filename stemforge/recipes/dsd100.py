"""DSD100 (SiSEC 2016): 100 songs, 44.1 kHz stereo, four sources and the mixture.

Layout::

    ROOT/
      Mixtures/Dev/051 - Artist - Title/mixture.wav       (Dev: ids 051-100)
      Mixtures/Test/001 - Artist - Title/mixture.wav      (Test: ids 001-050)
      Sources/Dev/051 - Artist - Title/{bass,drums,other,vocals}.wav
      Sources/Test/...

vocals = vocals.wav; accompaniment = bass + drums + other; the stored mixture is mixture.wav
and ``mix_residual_db`` records how far it is from vocals + accompaniment.
Split: Test -> test; Dev -> train, except the songs of ``manifests/dsd100_tracks.csv`` marked
valid (the five Dev songs MUSDB18 also holds out for validation) -> valid.
"""

from __future__ import annotations

import re
from pathlib import Path

from stemforge.core.errors import DatasetLayoutError
from stemforge.recipes.identity import song_key
from stemforge.recipes.base import StemRef, TrackSource

NAME = "dsd100"
LAYOUT = __doc__
LICENSE = "DSD100: research use (SiSEC 2016)"
SOURCES = ("bass", "drums", "other", "vocals")
SUBSETS = {"Dev": "train", "Test": "test"}
_FOLDER = re.compile(r"^(?P<id>\d{3}) - (?P<artist>.+?) - (?P<title>.+)$")


def _valid_songs() -> set[str]:
    from stemforge.recipes.reference import reference_manifest

    ref = reference_manifest("dsd100_tracks")
    return {song_key(a, t) for a, t, s in zip(ref["artist"], ref["title"], ref["split"]) if s == "valid"}


def _expected(root: Path) -> str:
    found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else []
    return (
        f"{root}: not a DSD100 root: expected Mixtures/{{Dev,Test}}/'NNN - Artist - Title'/mixture.wav and "
        f"Sources/{{Dev,Test}}/.../{{bass,drums,other,vocals}}.wav; found {found or 'nothing'}"
    )


def check_options() -> None:
    """DSD100 takes no option (its split is the official one)."""


def discover(root: str | Path) -> list[TrackSource]:
    """Every song folder under ``Mixtures/{Dev,Test}``; broken songs come back with ``error`` set."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: corpus root not found (or not a folder)")
    if not (root / "Mixtures").is_dir() or not (root / "Sources").is_dir():
        raise DatasetLayoutError(_expected(root))
    valid = _valid_songs()
    tracks: list[TrackSource] = []
    for subset, split in SUBSETS.items():
        mix_dir = root / "Mixtures" / subset
        if not mix_dir.is_dir():
            continue
        for folder in sorted(p for p in mix_dir.iterdir() if p.is_dir()):
            m = _FOLDER.match(folder.name)
            artist, title = (m.group("artist"), m.group("title")) if m else ("", folder.name)
            song_split = "valid" if split == "train" and song_key(artist, title) in valid else split
            rel_src = Path("Sources") / subset / folder.name
            error = None
            if not any(folder.iterdir()):
                error = f"{folder}: empty song folder (no mixture.wav)"
            elif not (root / rel_src).is_dir():
                error = f"{root / rel_src}: sources folder missing for this song"
            else:
                for s in SOURCES:
                    if not (root / rel_src / f"{s}.wav").exists():
                        error = f"{root / rel_src / f'{s}.wav'}: missing stem"
                        break
            tracks.append(
                TrackSource(
                    dataset=NAME,
                    track_id=folder.name,
                    root=str(root),
                    artist=artist,
                    title=title,
                    split=song_split,
                    mixture=(StemRef(str(Path("Mixtures") / subset / folder.name / "mixture.wav")),),
                    vocals=(StemRef(str(rel_src / "vocals.wav")),),
                    accompaniment=tuple(StemRef(str(rel_src / f"{s}.wav")) for s in ("bass", "drums", "other")),
                    vocals_kind="stem",
                    license=LICENSE,
                    error=error,
                    extra=(("subset", subset),),
                )
            )
    if not tracks:
        raise DatasetLayoutError(_expected(root) + " (no song folder under Mixtures/Dev or Mixtures/Test)")
    return tracks
