"""MIR-1K: 1000 clips (4-13 s) of 110 karaoke songs sung by 19 amateur singers.

Layout::

    ROOT/
      Wavfile/<singer>_<song>_<clip>.wav          e.g. Wavfile/abjones_1_01.wav
      UndividedWavfile/<singer>_<song>.wav        the 110 songs before cutting into clips

Every wav is 16 kHz stereo PCM: the LEFT channel is the accompaniment (music), the RIGHT
channel is the singing voice. vocals = right, accompaniment = left, mixture = left + right
(derived; ``vocals_kind`` "channel"). ``unit="clips"`` (default when ``Wavfile/`` exists)
ingests the clips, ``unit="songs"`` the undivided songs; never both (they are the same audio).

Split: MIR-1K has no official split. Singer-level (a singer is never on two sides),
deterministic: the singers found are assigned whole, heaviest first, to approach
``valid_fraction`` and ``test_fraction`` of the files
(:func:`stemforge.recipes.splits.balanced_split`); the full corpus always gets the same split.
(Huang et al. 2014 train on the 175 clips of abjones and amy and test on the rest; pass
``split_rule="huang2014"`` for that.)
"""

from __future__ import annotations

from pathlib import Path

from stemforge.core.errors import DatasetLayoutError
from stemforge.recipes.splits import balanced_split, check_fractions
from stemforge.recipes.base import StemRef, TrackSource, check_choice

NAME = "mir1k"
LAYOUT = __doc__
LICENSE = "MIR-1K: research use (MIR Lab, National Tsing Hua University)"
UNITS = ("clips", "songs")
SPLIT_RULES = ("singers", "huang2014")
HUANG2014_TRAIN = ("abjones", "amy")
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
_SALT = "mir1k-singer-split-v1"
_FOLDERS = {"clips": "Wavfile", "songs": "UndividedWavfile"}


def parse_name(stem: str) -> tuple[str, str]:
    """``"abjones_1_01"`` -> (singer ``"abjones"``, song ``"1"``)."""
    parts = stem.split("_")
    return parts[0], (parts[1] if len(parts) > 1 else "")


def check_options(
    unit: str | None = None,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    split_rule: str = "singers",
) -> None:
    """OptionError naming the first option :func:`discover` refuses: ``unit`` not in
    :data:`UNITS` (None: clips when ``Wavfile/`` holds any), ``split_rule`` not in
    :data:`SPLIT_RULES`, bad fractions."""
    check_choice("unit", unit, UNITS)
    check_choice("split_rule", split_rule, SPLIT_RULES)
    check_fractions(valid_fraction, test_fraction)


def discover(
    root: str | Path,
    unit: str | None = None,
    valid_fraction: float = VALID_FRACTION,
    test_fraction: float = TEST_FRACTION,
    split_rule: str = "singers",
) -> list[TrackSource]:
    """Every clip (or undivided song) with its voice on the right channel."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: corpus root not found (or not a folder)")
    check_options(unit, valid_fraction, test_fraction, split_rule)
    if unit is None:
        unit = "clips" if any((root / "Wavfile").glob("*.wav")) else "songs"
    folder = root / _FOLDERS[unit]
    wavs = sorted(folder.glob("*.wav")) if folder.is_dir() else []
    if not wavs:
        found = sorted(p.name for p in root.iterdir())[:8]
        raise DatasetLayoutError(
            f"{root}: not a MIR-1K root: expected {_FOLDERS[unit]}/<singer>_<song>"
            f"{'_<clip>' if unit == 'clips' else ''}.wav (16 kHz stereo: left accompaniment, right voice); "
            f"found {found or 'nothing'}"
        )
    weights: dict[str, float] = {}
    for p in wavs:
        singer = parse_name(p.stem)[0]
        weights[singer] = weights.get(singer, 0.0) + 1.0
    if split_rule == "huang2014":
        splits = {s: ("train" if s.lower() in HUANG2014_TRAIN else "test") for s in weights}
    else:
        splits = balanced_split(weights, valid_fraction, test_fraction, salt=_SALT)
    tracks = []
    for p in wavs:
        singer, song = parse_name(p.stem)
        rel = str(p.relative_to(root))
        tracks.append(
            TrackSource(
                dataset=NAME,
                track_id=p.stem,
                root=str(root),
                artist=singer,
                title=f"song {song}" if song else p.stem,
                split=splits[singer],
                vocals=(StemRef(rel, channel=1),),
                accompaniment=(StemRef(rel, channel=0),),
                vocals_kind="channel",
                license=LICENSE,
                options=(("unit", unit),),
                extra=(("singer", singer), ("mir1k_unit", unit)),
                group=singer,
            )
        )
    return tracks


def fixed_split(split_rule: str = "singers", **_options) -> str | None:
    """Why the fraction options do not decide the split under these :func:`discover` options (a
    clause the ingest's no-valid-split warning starts with, so that it never recommends them),
    or None when they do."""
    if split_rule == "huang2014":
        return "the huang2014 split rule fixes the split (abjones and amy train, the other singers test; the fraction options do not apply)"
    return None
