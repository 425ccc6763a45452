"""How a run is scored: fixed crops of the ``valid`` rows and the loss on them.

:func:`validation_set` cuts deterministic crops (:func:`validation_positions`);
:func:`validation_loss` is the model's mean L1 loss over them (split across processes). The
training loop calls it at step 0 and every ``val_every`` steps; the best weights and the
schedule (:mod:`.schedule`) follow its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist

from stemforge.core.errors import StemforgeError
from stemforge.model.config import TARGETS
from stemforge.model.unet import loss_fn
from stemforge.store.crops import CropReader, TrackList
from stemforge.train.layout import FIRST_BIN, crop_shape, model_bins, scaled, to_model_layout, track_norms
from stemforge.train.sampling import PATCH_FRAMES

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import DataDir


@dataclass
class ValidationSet:
    """Fixed crops of the validation rows, float16 on the CPU.

    Attributes:
        mixture, target: ``[n_crops, channels, n_bins, P]`` (``[n_crops, 1, 512, P]`` at the seed geometry).
        uids: tuple of the track uid per crop; starts: int64 ``[n_crops]`` first frames.
    """

    mixture: torch.Tensor
    target: torch.Tensor
    uids: tuple[str, ...]
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.mixture.shape[0])


def validation_positions(tracks: TrackList, patch_frames: int = PATCH_FRAMES, max_crops: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic crops of ``tracks``: per track non-overlapping crops at 0, P, 2P, ...
    (one zero-padded crop for a track shorter than P); when there are more than ``max_crops``,
    ``max_crops`` of them evenly spread over the list. Returns ``(track int64 [n], start int64 [n])``."""
    track, start = [], []
    for i, n in enumerate(tracks.n_frames):
        k = max(1, int(n) // patch_frames)
        track.extend([i] * k)
        start.extend(range(0, k * patch_frames, patch_frames))
    track_a, start_a = np.asarray(track, dtype=np.int64), np.asarray(start, dtype=np.int64)
    if max_crops > 0 and track_a.size > max_crops:
        pick = np.unique(np.linspace(0, track_a.size - 1, max_crops).round().astype(np.int64))
        track_a, start_a = track_a[pick], start_a[pick]
    return track_a, start_a


def validation_set(
    datadir: "DataDir",
    target: str,
    split: str = "valid",
    patch_frames: int = PATCH_FRAMES,
    max_crops: int = 256,
    first_bin: int = FIRST_BIN,
    n_bins: int | None = None,
    plain: bool = False,
) -> ValidationSet | None:
    """Fixed crops of ``datadir.select(split=split)`` (see :func:`validation_positions`) at the
    model's bins (``first_bin``, ``n_bins``: :func:`model_bins`); None when the split has no rows.
    ``plain``: each track times its stored ``norm`` (:func:`track_norms`: plain ``|STFT|``)."""
    if target not in TARGETS:
        raise StemforgeError(f"target must be one of {TARGETS}, got {target!r}")
    tracks = TrackList.from_rows(datadir.select(split=split))
    if len(tracks) == 0:
        return None
    a, n = model_bins(datadir.config.n_bins, first_bin, n_bins)
    track, start = validation_positions(tracks, patch_frames, max_crops)
    crops = CropReader(datadir.reader(), tracks)
    try:
        shape = crop_shape(datadir.config, track.size, patch_frames)
        raw = {name: np.empty(shape, np.float16) for name in ("mixture", target)}
        for i in range(track.size):
            crops.read_into(int(track[i]), int(start[i]), {name: raw[name][i] for name in raw})
    finally:
        crops.close()
    mix, tgt = to_model_layout(raw["mixture"], None, a, n), to_model_layout(raw[target], None, a, n)
    if plain:
        s = track_norms(datadir, split)[track]
        mix, tgt = scaled(mix, s), scaled(tgt, s)
    return ValidationSet(
        mixture=mix,
        target=tgt,
        uids=tuple(tracks.uids[i] for i in track),
        starts=start,
    )


def validation_loss(model: torch.nn.Module, valset: ValidationSet, device: torch.device, batch_size: int,
                    precision: str = "fp32", rank: int = 0, world_size: int = 1, loss: str = "l1") -> float:
    """Mean loss of ``model`` (eval mode, no dropout) over the crops of ``valset``, ``loss``
    one of :data:`~stemforge.model.config.LOSSES` (:func:`~stemforge.model.unet.loss_fn`); with
    several processes each takes every ``world_size``-th crop and the sums are all-reduced.
    ``precision`` as :attr:`~stemforge.train.config.TrainConfig.precision`. Returns a float
    (NaN without crops)."""
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    index = torch.arange(rank, len(valset), world_size)
    try:
        with torch.no_grad():
            for i in range(0, index.numel(), batch_size):
                sel = index[i : i + batch_size]
                mix = valset.mixture[sel].to(device).float()
                tgt = valset.target[sel].to(device).float()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    mask = model(mix)
                total[0] += loss_fn(mask.float(), mix, tgt, loss).double() * sel.numel()
                total[1] += sel.numel()
    finally:
        model.train(was_training)
    if world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1]) if float(total[1]) > 0 else float("nan")
