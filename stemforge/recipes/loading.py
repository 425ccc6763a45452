"""From a TrackSource to a TrackAudio: decode the StemRefs, sum each role, check, trim, resample.

This is the one tail every recipe loader ends in (the general ``"stems"`` loader, MUSDB18's
one-pass ``.stem.mp4`` loader, the CSV recipe's derived stems): a loader only says how a
:class:`~stemforge.recipes.base.StemRef` is decoded; :func:`load_roles` does the rest. The
ingest engine resolves a TrackSource's ``loader`` name with :func:`loader` and never sees a
corpus's files.

Geometry: what comes out is what the :class:`~stemforge.core.config.SpectrogramConfig` asks
for: its ``sample_rate`` (soxr at its ``resample_quality``) and its ``channels``: mono
``[n_samples]`` (the channel mean, or the channel a StemRef picks) or stereo ``[2, n_samples]``
(see :func:`fit_channels`). Only the decoding step (:meth:`DecodeCache.get`) knows the channel
count; the checks, the trimming, the derivation and the resampling work on ``[..., n_samples]``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from stemforge.core import audio
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, StemforgeError
from stemforge.recipes.base import StemRef, TrackAudio, TrackSource

ROLES = ("mixture", "vocals", "accompaniment")

#: ``decode(ref) -> (y float32 [n_samples] or [channels, n_samples], sample_rate Hz, channels of the file)``
Decoder = Callable[[StemRef], tuple[np.ndarray, int, int]]
#: ``load(source, config) -> TrackAudio``: what a TrackSource's ``loader`` names
Loader = Callable[[TrackSource, SpectrogramConfig], TrackAudio]


@dataclass
class RoleAudio:
    """One role of a track (the sum of its StemRefs) at the files' own rate, before resampling.

    ``samples`` is float32 ``[n_samples]`` (mono) or ``[channels, n_samples]``; ``channels``
    the most channels a file of the role has (the ``source_channels`` column); ``path`` the
    role's first file, named in errors; ``file_channels`` the channels of each file summed,
    in StemRef order (each file was fitted to the geometry's channels before the sum; see
    :func:`stem_channels`).
    """

    samples: np.ndarray
    sample_rate: int
    channels: int
    path: Path
    file_channels: tuple[int, ...] = ()


def fit_channels(data: np.ndarray, channels: int, path: Path) -> np.ndarray:
    """``[file channels, n_samples]`` -> what a geometry of ``channels`` stores.

    1: ``[n_samples]``, the channel mean. 2: ``[2, n_samples]``; a mono file (or one channel a
    StemRef picks) is put on both channels. AudioError naming ``path`` for a file of more
    than two channels in a stereo geometry (which two channels would be left and right is not
    known).
    """
    if channels == 1:
        return audio.to_mono(data)
    if data.shape[0] == channels:
        return data
    if data.shape[0] == 1:
        return np.repeat(data, channels, axis=0)
    raise AudioError(path, f"has {data.shape[0]} channels; a {channels}-channel geometry takes 1 or {channels}")


class DecodeCache:
    """Decode each (file, stream) of a track once when several refs read it (iKala's two
    channels, a CSV that names one file twice); files read once are not kept.

    :meth:`get` is a :data:`Decoder` for the refs of the track under ``root``, giving
    ``channels`` channels (1: the mono fast path of :func:`stemforge.core.audio.load_mono`).
    """

    def __init__(self, root: str | Path, refs: Iterable[StemRef], channels: int = 1):
        self.root = Path(root)
        self.channels = channels
        counts: dict[tuple[str, int], int] = {}
        for r in refs:
            counts[(r.path, r.stream)] = counts.get((r.path, r.stream), 0) + 1
        self._shared = {k for k, n in counts.items() if n > 1}
        self._cache: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def get(self, ref: StemRef) -> tuple[np.ndarray, int, int]:
        """``(y float32, sample_rate, n_channels of the file)`` of one ref: the channel it picks
        or all of them, fitted to the geometry (:func:`fit_channels`)."""
        k = (ref.path, ref.stream)
        path = self.root / ref.path
        if k not in self._shared and self.channels == 1:
            return audio.load_mono(path, ref.stream, ref.channel)
        if k in self._cache:
            data, sr = self._cache[k]
        else:
            data, sr = audio.load(path, stream=ref.stream)
            if k in self._shared:
                self._cache[k] = data, sr
        n_channels = data.shape[0]
        if ref.channel is not None:
            if ref.channel >= n_channels:
                raise AudioError(path, f"has {n_channels} channel(s); channel {ref.channel} requested")
            data = data[ref.channel : ref.channel + 1]
        return fit_channels(data, self.channels, path), sr, n_channels


def sum_role(refs: tuple[StemRef, ...], decode: Decoder, root: str | Path, tolerance: int) -> RoleAudio:
    """Sum the (gain-weighted) refs of one role at their own rate.

    AudioError naming the file at fault when a ref's rate differs from the first's, or its
    length by more than ``tolerance`` samples; the sum is trimmed to the shortest ref.
    """
    if not refs:
        raise StemforgeError("sum_role: a role needs at least one StemRef")
    root = Path(root)
    first = root / refs[0].path
    total: np.ndarray | None = None
    rate = channels = 0
    counts: list[int] = []
    for ref in refs:
        y, sr, n_channels = decode(ref)
        counts.append(int(n_channels))
        path = root / ref.path
        if ref.gain != 1.0:
            y = y * np.float32(ref.gain)
        if total is None:
            total, rate, channels = y.astype(np.float32, copy=True), sr, n_channels
            continue
        if sr != rate:
            raise AudioError(path, f"sample rate {sr} Hz differs from {first.name} ({rate} Hz)")
        if abs(y.shape[-1] - total.shape[-1]) > tolerance:
            raise AudioError(path, f"length {y.shape[-1]} samples differs from {first.name} ({total.shape[-1]} samples)")
        n = min(y.shape[-1], total.shape[-1])
        total = total[..., :n]
        total += y[..., :n]
        channels = max(channels, n_channels)
    assert total is not None
    return RoleAudio(total, rate, channels, first, tuple(counts))


def stem_channels(roles: Mapping[str, RoleAudio]) -> str:
    """``"vocals=1; accompaniment=2,6,2"`` (each file's channels, role by role) when the files
    of a track do not all have the same number of channels, else ``""``.

    Such a track is accepted: each file is fitted to the geometry's channels on its own (at
    the default mono geometry, its channel mean) before the files of a role are summed, so a
    mono vocal next to a 6-channel drum stem counts as any stem. The manifest column
    ``stem_channels`` says that it happened.
    """
    counts = {name: roles[name].file_channels for name in ROLES if name in roles and roles[name].file_channels}
    if len({c for cs in counts.values() for c in cs}) <= 1:
        return ""
    return "; ".join(f"{name}={','.join(map(str, cs))}" for name, cs in counts.items())


def track_audio(
    roles: Mapping[str, RoleAudio], config: SpectrogramConfig, tolerance: int = 0, extra: dict | None = None
) -> TrackAudio:
    """The tail of every loader: check that the roles agree, trim, derive, resample, build a TrackAudio.

    ``roles`` holds vocals and accompaniment, or the mixture and one of them, or all three.
    Every role must have the reference role's sample rate and length (within ``tolerance``
    samples); the reference is the mixture when given, else the vocals; AudioError names the
    file of the role that differs. All roles are trimmed to the shortest. A missing stem is
    derived at the files' own rate (vocals = mixture - accompaniment, or accompaniment =
    mixture - vocals; subtraction and resampling are both linear, so the order does not
    matter) and the TrackAudio then has ``mixture=None``: vocals + accompaniment is the
    mixture. Each role is resampled to ``config.sample_rate``; ``source_sample_rate`` is the
    files' rate, ``source_channels`` the most channels of any file; when the files have
    different channel counts, ``extra["stem_channels"]`` lists them (:func:`stem_channels`).
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise StemforgeError(f"track_audio: unknown role(s) {sorted(unknown)}; roles are {', '.join(ROLES)}")
    stems = [r for r in ("vocals", "accompaniment") if r in roles]
    if not stems or (len(stems) < 2 and "mixture" not in roles):
        raise StemforgeError(f"track_audio needs vocals and accompaniment, or the mixture and one of them; got {sorted(roles) or 'none'}")
    ref = roles["mixture"] if "mixture" in roles else roles["vocals"]
    for role in roles.values():
        if role is ref:
            continue
        if role.sample_rate != ref.sample_rate:
            raise AudioError(role.path, f"sample rate {role.sample_rate} Hz differs from {ref.path.name} ({ref.sample_rate} Hz)")
        n, n_ref = role.samples.shape[-1], ref.samples.shape[-1]
        if abs(n - n_ref) > tolerance:
            raise AudioError(role.path, f"length {n} samples differs from {ref.path.name} ({n_ref} samples)")
    n = min(r.samples.shape[-1] for r in roles.values())
    cut = {name: r.samples[..., :n] for name, r in roles.items()}
    mixture = cut.get("mixture")
    if "vocals" not in cut:
        cut["vocals"], mixture = mixture - cut["accompaniment"], None
    elif "accompaniment" not in cut:
        cut["accompaniment"], mixture = mixture - cut["vocals"], None
    rate, sr, q = ref.sample_rate, config.sample_rate, config.resample_quality
    return TrackAudio(
        vocals=audio.resample(cut["vocals"], rate, sr, q),
        accompaniment=audio.resample(cut["accompaniment"], rate, sr, q),
        mixture=None if mixture is None else audio.resample(mixture, rate, sr, q),
        source_sample_rate=rate,
        source_channels=max(r.channels for r in roles.values()),
        extra={**({"stem_channels": mixed} if (mixed := stem_channels(roles)) else {}), **(extra or {})},
    )


def load_roles(source: TrackSource, config: SpectrogramConfig, decode: Decoder | None = None) -> TrackAudio:
    """Every role ``source`` gives, decoded by ``decode`` (default: a :class:`DecodeCache` of
    its files at ``config.channels``), summed (:func:`sum_role`) and finished by
    :func:`track_audio`."""
    if decode is None:
        refs = source.mixture + source.vocals + source.accompaniment
        decode = DecodeCache(source.root, refs, config.channels).get
    given = {"mixture": source.mixture, "vocals": source.vocals, "accompaniment": source.accompaniment}
    tol = source.length_tolerance
    roles = {name: sum_role(refs, decode, source.root, tol) for name, refs in given.items() if refs}
    return track_audio(roles, config, tol)


def load_stems(source: TrackSource, config: SpectrogramConfig) -> TrackAudio:
    """The ``"stems"`` loader: sum each role's StemRefs, check that rates and lengths agree,
    downmix, resample to ``config.sample_rate`` (see :func:`load_roles`).

    The vocals and the accompaniment must be given (the mixture is optional: derived as their
    sum); StemforgeError otherwise, AudioError naming the file at fault for bad audio.
    """
    if not source.vocals or not source.accompaniment:
        missing = "vocals" if not source.vocals else "accompaniment"
        raise StemforgeError(f"{source.root}: recipe gave no {missing} for {source.uid}")
    return load_roles(source, config)


def loader(name: str) -> Loader:
    """The loader a TrackSource's ``loader`` names: ``"stems"`` (:func:`load_stems`) or
    ``"module:function"`` (a recipe's own, e.g. ``stemforge.recipes.musdb:load_stem_mp4``)."""
    if name == "stems":
        return load_stems
    module, sep, func = name.partition(":")
    if not sep or not func:
        raise StemforgeError(f"loader {name!r}: expected 'stems' or 'module:function'")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise StemforgeError(f"loader {name!r}: cannot be imported ({exc})") from None
