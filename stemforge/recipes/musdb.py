"""MUSDB18 (``.stem.mp4``) and MUSDB18-HQ (wav folders): 150 songs, 100 train and 50 test.

Layout (MUSDB18, Native Instruments stems: 5 AAC streams in one MP4)::

    ROOT/
      train/<Artist - Title>.stem.mp4      streams: 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals
      test/<Artist - Title>.stem.mp4

Layout (MUSDB18-HQ, 44.1 kHz stereo PCM)::

    ROOT/
      train/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav
      test/<Artist - Title>/...

vocals = vocals (stream 4 / vocals.wav); accompaniment = drums + bass + other; the stored
mixture is the mixture stream (file), not the sum: for ``.stem.mp4`` they differ by the AAC
coding (about -30 dB, see ``mix_residual_db``). Streams decoded from AAC can differ in length
by the codec's padding: up to ``LENGTH_TOLERANCE`` samples are accepted and the longer ones
trimmed. ``fmt="auto"`` takes the HQ folders when a subset has both (lossless first).
A ``.stem.mp4`` is read by :func:`load_stem_mp4`: one demuxing pass decodes the five streams
and downmixes each frame as it comes (AAC decoding is the floor of this recipe's speed).

Split: test -> test; train -> train, except the 14 tracks of the official validation list
(``manifests/musdb18_tracks.csv``, as musdb's ``split="valid"``) -> valid.
"""

from __future__ import annotations

from pathlib import Path

from stemforge.core import audio
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import DatasetLayoutError
from stemforge.recipes.base import StemRef, TrackAudio, TrackSource, check_choice
from stemforge.recipes.loading import load_roles, load_stems

NAME = "musdb"
LAYOUT = __doc__
LICENSE = "MUSDB18: academic use (per track licence in manifests/musdb18_tracks.csv)"
SUBSETS = ("train", "test")
STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
HQ_FILES = ("mixture", "drums", "bass", "other", "vocals")
FORMATS = ("auto", "stems", "hq")
#: AAC frames are 1024 samples; two frames of padding difference are accepted.
LENGTH_TOLERANCE = 2048
#: The loader of ``.stem.mp4`` tracks: every stream decoded in one pass over the file.
STEM_LOADER = "stemforge.recipes.musdb:load_stem_mp4"


def _reference() -> dict[str, dict]:
    from stemforge.recipes.reference import reference_manifest

    return {r["name"]: r for r in reference_manifest("musdb18_tracks").to_dict("records")}


def _expected(root: Path) -> str:
    found = sorted(p.name for p in root.iterdir())[:8] if root.is_dir() else []
    return (
        f"{root}: not a MUSDB18 root: expected {{train,test}}/'Artist - Title.stem.mp4' (MUSDB18) or "
        f"{{train,test}}/'Artist - Title'/{{mixture,drums,bass,other,vocals}}.wav (MUSDB18-HQ); "
        f"found {found or 'nothing'}"
    )


def check_options(fmt: str = "auto") -> None:
    """OptionError unless ``fmt`` is one of :data:`FORMATS` (the one option :func:`discover` takes)."""
    check_choice("fmt", fmt, FORMATS)


def discover(root: str | Path, fmt: str = "auto") -> list[TrackSource]:
    """Every track of ``train/`` and ``test/``; an HQ folder missing a wav gets ``error``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: corpus root not found (or not a folder)")
    check_options(fmt)
    if not any((root / s).is_dir() for s in SUBSETS):
        raise DatasetLayoutError(_expected(root))
    ref = _reference()
    tracks: list[TrackSource] = []
    for subset in SUBSETS:
        folder = root / subset
        if not folder.is_dir():
            continue
        stems = sorted(p for p in folder.glob("*.stem.mp4") if p.is_file())
        hq = sorted(p for p in folder.iterdir() if p.is_dir())
        use_hq = fmt == "hq" or (fmt == "auto" and bool(hq))
        for item in hq if use_hq else stems:
            name = item.name if use_hq else item.name[: -len(".stem.mp4")]
            info = ref.get(name)
            split = "test" if subset == "test" else ("valid" if info and info["split"] == "valid" else "train")
            artist, sep, title = name.partition(" - ")
            if not sep:
                artist, title = "", name
            rel = f"{subset}/{item.name}"
            extra = [("musdb_subset", subset), ("musdb_format", "hq" if use_hq else "stems")]
            if info and info.get("medleydb_track_id"):
                extra.append(("medleydb_track_id", info["medleydb_track_id"]))
            common = dict(
                dataset=NAME,
                track_id=name,
                root=str(root),
                artist=artist,
                title=title,
                split=split,
                vocals_kind="stem",
                license=f"MUSDB18: {info['license']}" if info and info.get("license") else LICENSE,
                extra=tuple(extra),
            )
            if use_hq:
                missing = [f"{s}.wav" for s in HQ_FILES if not (item / f"{s}.wav").exists()]
                tracks.append(
                    TrackSource(
                        **common,
                        mixture=(StemRef(f"{rel}/mixture.wav"),),
                        vocals=(StemRef(f"{rel}/vocals.wav"),),
                        accompaniment=tuple(StemRef(f"{rel}/{s}.wav") for s in ("drums", "bass", "other")),
                        error=f"{item / missing[0]}: missing stem" if missing else None,
                    )
                )
            else:
                tracks.append(
                    TrackSource(
                        **common,
                        mixture=(StemRef(rel, stream=STREAMS["mixture"]),),
                        vocals=(StemRef(rel, stream=STREAMS["vocals"]),),
                        accompaniment=tuple(StemRef(rel, stream=STREAMS[s]) for s in ("drums", "bass", "other")),
                        length_tolerance=LENGTH_TOLERANCE,
                        loader=STEM_LOADER,
                    )
                )
    if not tracks:
        raise DatasetLayoutError(_expected(root) + " (no track under train/ or test/)")
    return tracks


def load_stem_mp4(source: TrackSource, config: SpectrogramConfig) -> TrackAudio:
    """Loader of a ``.stem.mp4`` track: decode its streams in one pass, then the common tail.

    Same checks and result as :func:`stemforge.recipes.loading.load_stems` (lengths within
    ``source.length_tolerance``, trimmed to the shortest, resampled to ``config.sample_rate``),
    faster on multi-stream files; a source that is not one multi-stream file, or a stereo
    geometry, takes that path.
    """
    refs = source.mixture + source.vocals + source.accompaniment
    if len({r.path for r in refs}) != 1 or any(r.channel is not None for r in refs) or config.channels != 1:
        return load_stems(source, config)  # not one multi-stream file to downmix: the general path
    path = Path(source.root) / refs[0].path
    decoded, rate, channels = audio.load_streams_mono(path, {r.stream for r in refs})
    return load_roles(source, config, decode=lambda ref: (decoded[ref.stream], rate, channels))
