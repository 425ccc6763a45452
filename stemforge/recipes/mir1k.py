"""MIR-1K: 1000 clips (4-13 s) of 110 karaoke songs sung by 19 amateur singers.

Layout::

    ROOT/
      Wavfile/<singer>_<song>_<clip>.wav          e.g. Wavfile/abjones_1_01.wav
      UndividedWavfile/<singer>_<song>.wav        the 110 songs before cutting into clips

Every wav is 16 kHz stereo PCM: the LEFT channel is the accompaniment (music), the RIGHT
channel is the singing voice. vocals = right, accompaniment = left, mixture = left + right
(derived; ``vocals_kind`` "channel"). A clip that is not 16 kHz stereo is not a MIR-1K clip
(a mono file has no voice channel; another rate is a converted copy): :func:`load_clip` refuses
it with the file and the reason, and the ingest stores the other clips. ``unit="clips"`` (default when ``Wavfile/`` exists)
ingests the clips, ``unit="songs"`` the undivided songs; never both (they are the same audio).

Split: MIR-1K has no official split. Two rules:

* ``split_rule="singers"`` (default): singer-level (a singer is never on two sides),
  deterministic: the singers found are assigned whole, heaviest first, to approach
  ``valid_fraction`` and ``test_fraction`` of the files
  (:func:`stemforge.recipes.splits.balanced_split`); the full corpus always gets the same split.
* ``split_rule="huang2014"``: the standard protocol of Huang et al. (ICASSP 2014; IEEE/ACM
  TASLP 2015) and the papers that compare with it: the singers abjones and amy train (175
  clips), every other singer is test (825 clips of the whole corpus). The validation split is
  taken from the training singers only, by song: the whole songs ``abjones_5`` and ``amy_9``
  (:data:`HUANG2014_VALID_SONGS`; 9 clips each: 18 clips, 137 s, 10 % of the training singers'
  1416 s), which hold Huang et al.'s four development clips abjones_5_08, abjones_5_09,
  amy_9_08 and amy_9_09. Whole songs rather than those four clips, so that no song is on two
  sides (the leak check holds the song key ``<singer> - song <n>`` to one split) and validation
  has more than 30 s of audio; train keeps the other 157 clips (1279 s). The test split is
  untouched. The protocol fixes the split, so ``valid_fraction``/``test_fraction`` other than
  their defaults are refused with this rule.
* ``split_rule="huang2014-singer"``: the same test split, but validation is a whole training
  singer: abjones (43 clips, 325 s) is valid and amy (132 clips, 1091 s) trains. The test split
  asks how a model sings for *unseen* singers, which validation songs of the training singers
  cannot tell (they are optimistic); a held-out singer can, at the cost of training on one
  singer. For choosing options (an ablation), not for the final model.
"""

from __future__ import annotations

from pathlib import Path

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, DatasetLayoutError, OptionError
from stemforge.recipes.base import StemRef, TrackAudio, TrackSource, check_choice
from stemforge.recipes.splits import balanced_split, check_fractions

NAME = "mir1k"
LAYOUT = __doc__
LICENSE = "MIR-1K: research use (MIR Lab, National Tsing Hua University)"
UNITS = ("clips", "songs")
SPLIT_RULES = ("singers", "huang2014", "huang2014-singer")
HUANG2014_TRAIN = ("abjones", "amy")
#: (singer, song) of the validation songs under ``split_rule="huang2014"``: whole songs of the
#: training singers holding Huang et al.'s development clips abjones_5_08/09 and amy_9_08/09.
HUANG2014_VALID_SONGS = (("abjones", "5"), ("amy", "9"))
#: The validation singer under ``split_rule="huang2014-singer"`` (the other training singer trains).
HUANG2014_VALID_SINGER = "abjones"
VALID_FRACTION = 0.1
TEST_FRACTION = 0.15
#: Every MIR-1K wav: 16 kHz, two channels (left accompaniment, right voice).
SAMPLE_RATE = 16000
CHANNELS = 2
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
    :data:`SPLIT_RULES`, bad fractions, fractions given with a ``huang2014`` rule (its split is fixed)."""
    check_choice("unit", unit, UNITS)
    check_choice("split_rule", split_rule, SPLIT_RULES)
    check_fractions(valid_fraction, test_fraction)
    if split_rule != "singers" and (valid_fraction, test_fraction) != (VALID_FRACTION, TEST_FRACTION):
        raise OptionError(
            "split_rule",
            f"{split_rule} fixes the split (train abjones and amy, valid their songs abjones_5 and amy_9, "
            "or with huang2014-singer the singer abjones; test every other singer): the valid/test fractions do not apply to it",
        )


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
    if split_rule.startswith("huang2014"):
        splits = {s: ("train" if s.lower() in HUANG2014_TRAIN else "test") for s in weights}
        if split_rule == "huang2014-singer":
            splits.update({s: "valid" for s in weights if s.lower() == HUANG2014_VALID_SINGER})
    else:
        splits = balanced_split(weights, valid_fraction, test_fraction, salt=_SALT)
    tracks = []
    for p in wavs:
        singer, song = parse_name(p.stem)
        split = splits[singer]
        if split_rule == "huang2014" and (singer.lower(), song) in HUANG2014_VALID_SONGS:
            split = "valid"
        rel = str(p.relative_to(root))
        tracks.append(
            TrackSource(
                dataset=NAME,
                track_id=p.stem,
                root=str(root),
                artist=singer,
                title=f"song {song}" if song else p.stem,
                split=split,
                vocals=(StemRef(rel, channel=1),),
                accompaniment=(StemRef(rel, channel=0),),
                vocals_kind="channel",
                license=LICENSE,
                loader=f"{__name__}:load_clip",
                options=(("unit", unit),),
                extra=(("singer", singer), ("mir1k_unit", unit)),
                group=singer,
            )
        )
    return tracks


def load_clip(source: TrackSource, config: SpectrogramConfig) -> TrackAudio:
    """The MIR-1K loader: decode the clip once, check that it is 16 kHz stereo, and give the
    right channel as the vocals and the left as the accompaniment at ``config``'s rate and
    channels (a stereo geometry puts each on both channels).

    Raises AudioError naming the file for a file that cannot be decoded, a mono file (no voice
    channel) or another sample rate than 16 kHz.
    """
    from stemforge.core import audio
    from stemforge.recipes.loading import RoleAudio, fit_channels, track_audio

    path = Path(source.root) / source.vocals[0].path
    data, rate = audio.load(path)
    if data.shape[0] != CHANNELS:
        raise AudioError(
            path, f"{data.shape[0]} channel(s): a MIR-1K clip is stereo (left accompaniment, right voice), so it has no voice channel"
        )
    if rate != SAMPLE_RATE:
        raise AudioError(path, f"sample rate {rate} Hz: MIR-1K clips are {SAMPLE_RATE} Hz (a resampled or foreign copy)")
    roles = {}
    for role, ref in (("vocals", source.vocals[0]), ("accompaniment", source.accompaniment[0])):
        samples = fit_channels(data[ref.channel : ref.channel + 1], config.channels, path)
        roles[role] = RoleAudio(samples, rate, CHANNELS, path, (CHANNELS,))
    return track_audio(roles, config)


def fixed_split(split_rule: str = "singers", **_options) -> str | None:
    """Why the fraction options do not decide the split under these :func:`discover` options (a
    clause the ingest's no-valid-split warning starts with, so that it never recommends them),
    or None when they do."""
    if split_rule == "huang2014-singer":
        return "the huang2014-singer split rule fixes the split (amy train, abjones valid, the other singers test; the fraction options do not apply)"
    if split_rule == "huang2014":
        return "the huang2014 split rule fixes the split (abjones and amy train, their songs abjones_5 and amy_9 valid, the other singers test; the fraction options do not apply)"
    return None
