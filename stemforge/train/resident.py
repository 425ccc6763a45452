"""The train split's magnitudes held in GPU memory or RAM; batches cut there.

:class:`ResidentBatches` copies the model's bins of the train split (float16) once to device
memory (GPU) or RAM (CPU) and cuts batches there by a gather, so a fast GPU never waits for the
CPU. Its batches are identical to the streaming ones (:mod:`.streaming`) for the same step.
:func:`resident_fits` says whether the data fit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch

from stemforge.core.errors import ManifestError, StemforgeError
from stemforge.model.config import TARGETS
from stemforge.store.crops import TrackList
from stemforge.train.layout import FIRST_BIN, Batch, model_bins, scaled
from stemforge.train.sampling import PATCH_FRAMES, PatchSampler

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import ShardReader


def resident_nbytes(tracks: TrackList, patch_frames: int = PATCH_FRAMES, n_bins: int = 512, fields: int = 2,
                    channels: int = 1) -> int:
    """Bytes :class:`ResidentBatches` holds for ``tracks``: float16, ``fields`` arrays of
    ``channels x n_bins`` per frame (the model's bins, not every stored one), tracks shorter
    than ``patch_frames`` padded to it."""
    rows = int(np.maximum(tracks.n_frames, patch_frames).sum())
    return rows * channels * n_bins * 2 * fields


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def resident_fits(nbytes: int, device: torch.device | str, fraction: float = 0.5) -> tuple[bool, str]:
    """Whether ``nbytes`` fit in ``fraction`` of the free memory of ``device`` (GPU memory for
    cuda, available RAM for cpu), and a sentence saying so with the figures."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        where = f"free GPU memory on {device}"
    else:
        free = _available_ram()
        where = "available RAM"
        if free is None:
            return True, f"resident data {nbytes / 2**30:.2f} GiB ({where} unknown)"
    ok = nbytes <= fraction * free
    verb = "fits in" if ok else "does not fit in"
    return ok, f"resident data {nbytes / 2**30:.2f} GiB {verb} {fraction:.0%} of {where} ({free / 2**30:.2f} GiB)"


class ResidentBatches:
    """The train split's magnitudes (the model's bins, float16) held on ``device``; batches cut there.

    All tracks are concatenated along time into two frequency-major ``[channels, n_bins, rows]``
    float16 tensors (mixture and target; ``[1, 512, rows]`` at the seed geometry; a track shorter
    than ``P`` frames is zero-padded to ``P``), so a crop is a ``[channels, n_bins, P]`` window
    already in the network's layout. On a GPU a batch is one
    ``index_select`` over the windows at the step's start indices (computed from the
    :class:`PatchSampler` on the CPU: 2 x ``batch`` integers, microseconds) followed by the
    float conversion, so the GPU never waits on the CPU; on the CPU (RAM-resident) the windows
    are copied one by one, which is the fastest way there. The positions are those of the
    streaming loader, so the batches are identical to its.

    Args:
        sampler, target, batch_size, seed, rank: as in :class:`StreamingBatches`.
        reader: a :class:`ShardReader` of the DataDir; closed after loading.
        device: where the data lives (``"cuda:0"``, ``"cpu"``, ...).
        progress: optional ``callable(tracks_done, n_tracks)`` while loading.
        first_bin, n_bins: the stored bins the model sees (:func:`model_bins`).
        scale: as in :class:`StreamingBatches`.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        reader: "ShardReader",
        target: str,
        batch_size: int,
        seed: int,
        rank: int = 0,
        device: torch.device | str = "cpu",
        progress=None,
        first_bin: int = FIRST_BIN,
        n_bins: int | None = None,
        scale: np.ndarray | None = None,
    ):
        if target not in TARGETS:
            raise StemforgeError(f"target must be one of {TARGETS}, got {target!r}")
        if batch_size <= 0:
            raise StemforgeError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.target = target
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.device = torch.device(device)
        tracks = sampler.tracks
        P = self.patch_frames = sampler.patch_frames
        a, n_bins = self.first_bin, self.n_bins = model_bins(reader.config.n_bins, first_bin, n_bins)
        channels = self.channels = reader.config.channels
        lengths = np.maximum(tracks.n_frames, P)
        self.offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        rows = int(lengths.sum())
        self.mixture = torch.zeros((channels, n_bins, rows), dtype=torch.float16, device=self.device)
        self.target_data = torch.zeros((channels, n_bins, rows), dtype=torch.float16, device=self.device)
        try:
            for i in range(len(tracks)):
                n = int(tracks.n_frames[i])
                got = reader.read_frames(tracks.shards[i], tracks.keys[i], 0, n, fields=("mixture", target))
                o = int(self.offsets[i])
                for name, dest in (("mixture", self.mixture), (target, self.target_data)):
                    arr = got[name]
                    if arr.shape[0] != n:
                        raise ManifestError(f"{tracks.uids[i]}: shard holds {arr.shape[0]} frames, the manifest says {n}")
                    # [n, S] mono / [n, C, S] stereo -> [C, n_bins, n]
                    arr = arr[:, None, a : a + n_bins] if arr.ndim == 2 else arr[:, :, a : a + n_bins]
                    values = torch.from_numpy(np.ascontiguousarray(arr.transpose(1, 2, 0)))
                    if scale is not None:
                        values = scaled(values[None], np.asarray(scale, np.float32)[i : i + 1])[0]
                    dest[:, :, o : o + n].copy_(values)
                if progress is not None:
                    progress(i + 1, len(tracks))
        finally:
            reader.close()
        n_windows = rows - P + 1
        self._windows = [
            data.as_strided((n_windows, channels, n_bins, P), (1, n_bins * rows, rows, 1))
            for data in (self.mixture, self.target_data)
        ]

    @property
    def nbytes(self) -> int:
        return (self.mixture.numel() + self.target_data.numel()) * 2

    def starts(self, step: int) -> np.ndarray:
        """int64 ``[batch]``: first row (in the concatenation) of each crop of ``step``."""
        track, start = self.sampler.positions(self.seed, self.rank, step, self.batch_size)
        return self.offsets[track] + start

    def batch(self, step: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mixture, target)`` ``[batch, channels, n_bins, P]`` on the device, contiguous, as ``dtype``
        (float32 by default); equal to ``to_device(StreamingBatches[step], device, dtype)``."""
        dtype = dtype or torch.float32
        starts = self.starts(step)
        out = []
        if self.device.type == "cpu":
            for windows in self._windows:
                crops = torch.empty((self.batch_size,) + tuple(windows.shape[1:]), dtype=torch.float16)
                for i, s in enumerate(starts.tolist()):
                    crops[i].copy_(windows[s])
                out.append(crops.to(dtype))
        else:
            # pinned, so the copy is asynchronous; the caching host allocator keeps the buffer
            # alive until the copy is done
            index = torch.from_numpy(starts).pin_memory().to(self.device, non_blocking=True)
            for windows in self._windows:
                out.append(windows.index_select(0, index).to(dtype))
        return out[0], out[1]

    def __getitem__(self, step: int) -> Batch:
        """The float16 :class:`Batch` of ``step`` (on the device)."""
        m, t = self.batch(step, torch.float16)
        return Batch(m, t, int(step))
