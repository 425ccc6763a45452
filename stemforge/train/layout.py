"""A crop as the U-Net sees it: the model's bins, every channel, frequency-major.

The network sees ``F`` stored bins from ``first_bin`` on (the model's
:attr:`~stemforge.model.config.UNetConfig.first_bin` and ``n_bins``) of ``P``-frame crops, every
channel of the DataDir::

    mixture  [batch, channels, F, P]   mixture magnitude as stored (the network input)
    target   [batch, channels, F, P]   magnitude of the target (vocals or accompaniment)

At the seed geometry that is ``[batch, 1, 512, 128]``: bins 1..512 of the stored 513 (the DC
bin dropped) of 128-frame crops; at the fullband one ``[batch, 2, 1024, 512]`` by default. The
helpers here are shared by every loader (:mod:`.streaming`, :mod:`.resident`) and the
validation crops (:mod:`.validation`), so that their batches are bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from stemforge.core.errors import ManifestError, StemforgeError

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import DataDir

#: The first stored bin the network sees by default: 1 (bin 0, DC, is dropped and gets mask 0).
FIRST_BIN = 1


def model_bins(n_stored: int, first_bin: int = FIRST_BIN, n_bins: int | None = None) -> tuple[int, int]:
    """``(first_bin, n_bins)`` of the bins a model sees among ``n_stored`` stored ones
    (``n_bins`` None: all from ``first_bin`` on); StemforgeError when they go past the stored bins."""
    first_bin = int(first_bin)
    n_bins = n_stored - first_bin if n_bins is None else int(n_bins)
    if first_bin < 0 or n_bins <= 0 or first_bin + n_bins > n_stored:
        raise StemforgeError(
            f"the model sees bins {first_bin}..{first_bin + n_bins - 1} ({n_bins} bins); "
            f"the DataDir stores {n_stored} bins (0..{n_stored - 1})"
        )
    return first_bin, n_bins


def to_model_layout(frames: np.ndarray, out: torch.Tensor | None = None, first_bin: int = FIRST_BIN,
                    n_bins: int | None = None) -> torch.Tensor:
    """Stored crops float16 ``[batch, P, S]`` (mono) or ``[batch, P, channels, S]`` (stereo) ->
    float16 ``[batch, channels, n_bins, P]`` (bins ``first_bin .. first_bin + n_bins - 1``,
    frequency-major, contiguous), the network's layout; ``[batch, 1, 512, P]`` at the seed
    geometry. Convert the dtype on the device."""
    a, n = model_bins(frames.shape[-1], first_bin, n_bins)
    if frames.ndim == 3:
        src = frames[:, :, a : a + n].transpose(0, 2, 1)[:, None]  # a view [batch, 1, F, P]
    else:
        src = frames[:, :, :, a : a + n].transpose(0, 2, 3, 1)  # a view [batch, C, F, P]
    if out is None:
        out = torch.empty(src.shape, dtype=torch.float16)
    np.copyto(out.numpy(), src)  # numpy's strided copy is ~1.5x torch's here
    return out


def track_norms(datadir: "DataDir", split: str) -> np.ndarray:
    """float32 ``[n_tracks]``: the stored ``norm`` (the divisor of max-normalized magnitudes)
    of the tracks of ``TrackList.from_rows(datadir.select(split=split))``, in its order.
    Multiplying a track's stored magnitudes by it gives back the plain ``|STFT|``."""
    rows = datadir.select(split=split)
    keep = rows["n_frames"].astype("int64").to_numpy() > 0
    norms = rows["norm"].astype("float64").to_numpy()[keep]
    if not np.isfinite(norms).all() or (norms <= 0).any():
        raise ManifestError(f"{datadir.path}: {split} rows without a positive 'norm': cannot give plain |STFT| magnitudes")
    return norms.astype(np.float32)


def scaled(x: torch.Tensor, scale: np.ndarray) -> torch.Tensor:
    """float16 ``x [n, ...]`` times float32 ``scale [n]`` (per crop), rounded back to float16: the
    same elementwise operation in every loader, so their batches stay bit-identical."""
    s = torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float32)).view((-1,) + (1,) * (x.dim() - 1))
    return (x.float() * s).to(torch.float16)


def crop_shape(config, batch: int, patch_frames: int) -> tuple[int, ...]:
    """Stored layout of ``batch`` crops: ``[batch, P, S]`` mono, ``[batch, P, channels, S]`` stereo."""
    if config.channels == 1:
        return (batch, patch_frames, config.n_bins)
    return (batch, patch_frames, config.channels, config.n_bins)


@dataclass
class Batch:
    """One training batch (float16 on the CPU from the loaders; see :func:`to_device`).

    Attributes:
        mixture: ``[batch, channels, n_bins, P]`` (``[batch, 1, 512, P]`` at the seed geometry).
        target: the same shape.
        step: the step it was drawn for.
    """

    mixture: torch.Tensor
    target: torch.Tensor
    step: int

    def pin_memory(self) -> "Batch":
        return Batch(self.mixture.pin_memory(), self.target.pin_memory(), self.step)


def to_device(batch: Batch, device: torch.device | str, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mixture, target)`` on ``device`` as ``dtype`` (float32 by default)."""
    dtype = dtype or torch.float32
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    return (
        batch.mixture.to(device, non_blocking=non_blocking).to(dtype),
        batch.target.to(device, non_blocking=non_blocking).to(dtype),
    )
