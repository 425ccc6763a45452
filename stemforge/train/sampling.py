"""Where the crops of a training step come from: a pure function of ``(seed, rank, step)``.

:class:`PatchSampler` draws crop positions uniformly over every crop position of every ``train``
row (remixes included, duplicates excluded), so tracks are weighted by their length; an option
rejects crops whose vocals are nearly silent (from the stored per-frame vocal energy). The
positions of step ``s`` are a pure function of ``(seed, rank, s)``: nothing depends on the
loader that cuts them, on the number of its workers or on what ran before, so a resumed run
draws exactly the crops the uninterrupted run would have, and each distributed rank draws its
own. Every random draw of training (crop positions, dropout masks) comes from
:func:`step_seed_sequence`. Numpy only: the loaders (:mod:`.streaming`, :mod:`.resident`) cut
the crops.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from stemforge.core.errors import StemforgeError
from stemforge.store.crops import TrackList

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import DataDir

#: Frames per training crop (about 4.1 s at 16 kHz, hop 512).
PATCH_FRAMES = 128


# Streams of the per-step SeedSequence, so that the crop positions and the dropout masks of a
# step are independent draws.
STREAM_POSITIONS = 0
STREAM_DROPOUT = 1


def step_seed_sequence(seed: int, rank: int, step: int, stream: int) -> np.random.SeedSequence:
    """The SeedSequence of one step of one rank: a pure function of its arguments.

    Every random draw of training (crop positions, dropout masks) comes from one of these, so a
    run is reproducible from ``seed`` alone and can be resumed at any step.
    """
    for name, value in (("seed", seed), ("rank", rank), ("step", step), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise StemforgeError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.SeedSequence([int(seed), int(rank), int(step), int(stream)])


def step_torch_seed(seed: int, rank: int, step: int, stream: int = STREAM_DROPOUT) -> int:
    """A 63-bit integer seed for a ``torch.Generator`` of one step (dropout masks)."""
    state = step_seed_sequence(seed, rank, step, stream).generate_state(1, np.uint64)[0]
    return int(state) >> 1



# --------------------------------------------------------------------------------------------
# Where crops come from
# --------------------------------------------------------------------------------------------


def _window_means(energy: np.ndarray, patch_frames: int) -> np.ndarray:
    """Mean of ``energy`` over every window of ``patch_frames`` frames that starts at 0..n-P
    (one window, zero-padded, when the track is shorter): float64 ``[max(1, n-P+1)]``."""
    e = np.asarray(energy, dtype=np.float64)
    if e.size < patch_frames:
        return np.array([e.sum() / patch_frames])
    c = np.concatenate(([0.0], np.cumsum(e)))
    return (c[patch_frames:] - c[:-patch_frames]) / patch_frames


class PatchSampler:
    """Crop positions for training steps: uniform over every crop position of every track.

    A track of ``n`` frames has ``max(1, n - P + 1)`` crop starts (a track shorter than ``P``
    frames gives one crop, zero-padded at the end); drawing uniformly among all starts weights
    tracks by length. With ``min_vocal_db`` set, a start is allowed only when the crop's mean
    per-frame vocal energy is within ``min_vocal_db`` dB of the track's loudest vocal frame
    (the stored ``vocal_energy``), which rejects crops of nearly silent vocals; a track whose
    vocals are silent throughout gives no crop.

    Args:
        tracks: the :class:`TrackList` to draw from.
        patch_frames: frames per crop ``P``.
        vocal_energy: per track, float ``[n_frames]`` (needed with ``min_vocal_db``).
        min_vocal_db: e.g. ``-30.0``; None keeps every crop.

    Raises:
        StemforgeError: no track, or no crop left after rejection.
    """

    def __init__(
        self,
        tracks: TrackList,
        patch_frames: int = PATCH_FRAMES,
        vocal_energy: Sequence[np.ndarray] | None = None,
        min_vocal_db: float | None = None,
    ):
        if patch_frames <= 0:
            raise StemforgeError(f"patch_frames must be positive, got {patch_frames}")
        if len(tracks) == 0:
            raise StemforgeError("no track to draw training crops from (is the train split empty?)")
        self.tracks = tracks
        self.patch_frames = int(patch_frames)
        self.min_vocal_db = None if min_vocal_db is None else float(min_vocal_db)
        counts = np.maximum(1, tracks.n_frames - self.patch_frames + 1).astype(np.int64)
        self.n_all_positions = int(counts.sum())
        self._cum = np.concatenate(([0], np.cumsum(counts)))  # [n_tracks + 1]
        self._allowed: np.ndarray | None = None
        if self.min_vocal_db is not None:
            if vocal_energy is None or len(vocal_energy) != len(tracks):
                raise StemforgeError("min_vocal_db needs the vocal energy of every track")
            factor = 10.0 ** (self.min_vocal_db / 10.0)
            allowed = []
            for i, energy in enumerate(vocal_energy):
                energy = np.asarray(energy, dtype=np.float64)[: tracks.n_frames[i]]
                peak = float(energy.max()) if energy.size else 0.0
                if peak <= 0.0:
                    continue
                ok = np.flatnonzero(_window_means(energy, self.patch_frames) >= peak * factor)
                allowed.append(ok + self._cum[i])
            self._allowed = np.concatenate(allowed).astype(np.int64) if allowed else np.zeros(0, np.int64)
            if self._allowed.size == 0:
                raise StemforgeError(
                    f"no training crop has vocals above {self.min_vocal_db} dB of its track's peak; "
                    "lower --min-vocal-db or drop it"
                )

    @classmethod
    def from_datadir(
        cls,
        datadir: "DataDir",
        split: str = "train",
        patch_frames: int = PATCH_FRAMES,
        min_vocal_db: float | None = None,
    ) -> "PatchSampler":
        """A sampler over ``datadir.select(split=split)`` (duplicates excluded, remixes included)."""
        tracks = TrackList.from_rows(datadir.select(split=split))
        if len(tracks) == 0:
            raise StemforgeError(f"{datadir.path}: no {split!r} rows to train on; ingest a corpus first")
        energy = None
        if min_vocal_db is not None:
            reader = datadir.reader()
            try:
                energy = [reader.read_vocal_energy(s, k) for s, k in zip(tracks.shards, tracks.keys)]
            finally:
                reader.close()
        return cls(tracks, patch_frames, energy, min_vocal_db)

    @property
    def n_positions(self) -> int:
        """Crop positions that can be drawn (after rejection)."""
        return self.n_all_positions if self._allowed is None else int(self._allowed.size)

    @property
    def rejected_fraction(self) -> float:
        """Fraction of crop positions rejected for silent vocals (0 without ``min_vocal_db``)."""
        return 1.0 - self.n_positions / self.n_all_positions

    @property
    def crops_per_epoch(self) -> float:
        """One epoch: as many crops as the train split holds non-overlapping crops (frames / P)."""
        return self.tracks.total_frames / self.patch_frames

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Steps in which all ranks together draw :attr:`crops_per_epoch` crops (rounded up)."""
        return max(1, math.ceil(self.crops_per_epoch / (batch_size * world_size)))

    def positions(self, seed: int, rank: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The crops of one step: ``(track index int64 [batch], start frame int64 [batch])``.

        A pure function of ``(seed, rank, step, batch_size)``.
        """
        rng = np.random.default_rng(step_seed_sequence(seed, rank, step, STREAM_POSITIONS))
        draw = rng.integers(0, self.n_positions, size=batch_size, dtype=np.int64)
        flat = draw if self._allowed is None else self._allowed[draw]
        track = np.searchsorted(self._cum, flat, side="right") - 1
        return track.astype(np.int64), (flat - self._cum[track]).astype(np.int64)
