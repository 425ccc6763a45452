"""Model windows: how a long song goes through the U-Net in overlapping windows of frames.

Windows start at multiples of :data:`FRAME_MULTIPLE` frames (the U-Net's six stride-2 levels
make it shift-equivariant only for such shifts); consecutive windows overlap by
``overlap_frames``: the outer quarter of the overlap on each side is dropped (the frames nearest
a window's edge, where zero padding changes the output) and the middle half is a linear
crossfade (:func:`window_weights`).
"""

from __future__ import annotations

import numpy as np

#: Window starts must be multiples of this many frames (six stride-2 levels of the U-Net).
FRAME_MULTIPLE = 64


def plan_windows(n_frames: int, window_frames: int | None, overlap_frames: int) -> list[tuple[int, int]]:
    """Model windows ``[(start, stop), ...]`` covering ``pad64(n_frames)`` frames.

    Starts are multiples of 64; every window is ``window_frames`` long except the last, which
    ends at ``pad64(n_frames)`` (where the whole-song input ends too, so its zero padding is the
    same). ``window_frames`` None gives one window: the whole song.
    """
    total = max(FRAME_MULTIPLE, -(-n_frames // FRAME_MULTIPLE) * FRAME_MULTIPLE)
    if window_frames is None or window_frames >= total:
        return [(0, total)]
    step = window_frames - overlap_frames
    out = []
    start = 0
    while True:
        stop = min(start + window_frames, total)
        out.append((start, stop))
        if stop == total:
            return out
        start += step


def window_weights(windows: list[tuple[int, int]], overlap_frames: int) -> list[np.ndarray]:
    """Crossfade weight ``[stop - start]`` of every window; they sum to 1 on every frame.

    In the overlap of window k and k+1 (``[start_{k+1}, start_{k+1} + overlap)``), the first
    and last quarter belong wholly to window k and k+1 respectively and the middle half is a
    linear crossfade.
    """
    q = overlap_frames // 4
    fade = overlap_frames - 2 * q
    ramp = _ramp(fade)
    out = []
    for k, (start, stop) in enumerate(windows):
        w = np.ones(stop - start, dtype=np.float32)
        if k > 0:
            w[:q] = 0.0
            seg = w[q : q + fade]
            seg *= ramp[: seg.shape[0]]
        if k + 1 < len(windows):
            nxt = windows[k + 1][0] - start
            seg = w[nxt + q : nxt + q + fade]
            seg *= 1.0 - ramp[: seg.shape[0]]
            w[nxt + q + fade :] = 0.0
        out.append(w)
    return out


def _ramp(n: int) -> np.ndarray:
    """Linear ramp of ``n`` values strictly inside (0, 1): ``(j + 0.5) / n``."""
    return ((np.arange(n, dtype=np.float32) + 0.5) / max(n, 1)).astype(np.float32)
