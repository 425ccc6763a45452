"""The multichannel Wiener filter with EM iterations (the algorithm of norbert's ``wiener``, as
Open-Unmix and Spleeter's ``--mwf`` use it), written for stemforge's layout and vectorized over
frames and bins.

Each source ``j`` (here vocals and accompaniment) is modelled per STFT bin as a zero-mean complex
Gaussian with a time-varying power ``P_j[t, k]`` and a time-invariant spatial covariance
``R_j[k]`` (``channels x channels``); the mixture's covariance is ``sum_j P_j R_j``. Starting
from initial estimates ``y_j`` (the soft mask times the mixture), one EM iteration:

1. ``P_j[t, k] = mean_c |y_j[c, t, k]|^2``;
   ``R_j[k] = sum_t y_j[:, t, k] y_j[:, t, k]^H / (eps + sum_t P_j[t, k])``;
2. ``C[t, k] = sum_j P_j[t, k] R_j[k] + sqrt(eps) I`` and ``y_j[:, t, k] = P_j R_j C^-1 x[:, t, k]``.

Before the iterations ``x`` and ``y`` are divided by ``max(1, max|x| / 10)`` (and multiplied
back after), as norbert does; ``eps`` is the machine epsilon of the real dtype (float32's,
1.19e-7, for complex64). The sums over ``t`` run over the frames given: the Separator calls this
on consecutive blocks of frames (an independent spatial model per block), so memory does not grow
with the song (see :class:`~stemforge.separate.masker.StreamingMasker`).
"""

from __future__ import annotations

import numpy as np

from stemforge.core.errors import StemforgeError

#: Frames per block of the Wiener filter (at the output's STFT; 300 frames of hop 1024 at
#: 44.1 kHz = 7.0 s, Open-Unmix's default window).
WIENER_BLOCK_FRAMES = 300
#: The scale norbert divides by before the EM: ``max(1, max|x| / SCALE)``.
SCALE = 10.0


def wiener_em(y: np.ndarray, x: np.ndarray, iterations: int, eps: float | None = None) -> np.ndarray:
    """Refine the source estimates ``y`` of the mixture ``x`` with ``iterations`` EM iterations
    of the multichannel Wiener filter (see the module docstring).

    Args:
        y: complex ``[sources, channels, n_frames, n_bins]``, the initial estimates (for
            norbert's start, ``v_j / (eps + sum_s v_s) * x`` with ``v_j`` the sources'
            magnitude estimates); not modified.
        x: complex ``[channels, n_frames, n_bins]``, the mixture's STFT; 1 or 2 channels.
        iterations: EM iterations (0 returns ``y`` as given).
        eps: regularization; None: the machine epsilon of ``x``'s real dtype.

    Returns:
        ``[sources, channels, n_frames, n_bins]`` of ``x``'s complex dtype.
    """
    if y.ndim != 4 or x.ndim != 3 or y.shape[1:] != x.shape:
        raise StemforgeError(f"wiener_em: expected y [sources, *x.shape] and x [channels, n_frames, n_bins], got {y.shape} and {x.shape}")
    if x.shape[0] not in (1, 2):
        raise StemforgeError(f"wiener_em: 1 or 2 channels, got {x.shape[0]}")
    if iterations < 0:
        raise StemforgeError(f"wiener_em: iterations must be >= 0, got {iterations}")
    dtype = np.result_type(x.dtype, np.complex64)
    y = np.array(y, dtype=dtype)
    if iterations == 0 or x.shape[1] == 0:
        return y
    real = np.finfo(dtype).dtype
    if eps is None:
        eps = float(np.finfo(real).eps)
    scale = max(1.0, float(np.abs(x).max()) / SCALE)
    x = (x / scale).astype(dtype, copy=False)
    y /= scale
    reg = real.type(np.sqrt(eps))
    for _ in range(iterations):
        if x.shape[0] == 1:
            y = _step_mono(y, x, eps, reg)
        else:
            y = _step_stereo(y, x, eps, reg)
    y *= scale
    return y


def _step_mono(y: np.ndarray, x: np.ndarray, eps: float, reg: np.floating) -> np.ndarray:
    p = (y.real**2 + y.imag**2)[:, 0]  # [S, T, K]
    r = p.sum(axis=1) / (eps + p.sum(axis=1))  # [S, K]: R_j, a 1x1 "covariance"
    c = np.einsum("stk,sk->tk", p, r) + reg  # [T, K]
    inv = 1.0 / c
    out = np.empty_like(y)
    for j in range(y.shape[0]):
        out[j, 0] = (p[j] * r[j] * inv) * x[0]
    return out


def _step_stereo(y: np.ndarray, x: np.ndarray, eps: float, reg: np.floating) -> np.ndarray:
    p0 = y[:, 0].real ** 2 + y[:, 0].imag ** 2  # [S, T, K]
    p1 = y[:, 1].real ** 2 + y[:, 1].imag ** 2
    p = 0.5 * (p0 + p1)
    w = eps + p.sum(axis=1)  # [S, K]
    r00 = p0.sum(axis=1) / w  # [S, K] real
    r11 = p1.sum(axis=1) / w
    r01 = np.einsum("stk,stk->sk", y[:, 0], np.conj(y[:, 1])) / w  # [S, K]; r10 = conj(r01)
    # C = sum_j P_j R_j + reg I (Hermitian: c10 = conj(c01)), inverted in closed form.
    c00 = np.einsum("stk,sk->tk", p, r00) + reg
    c11 = np.einsum("stk,sk->tk", p, r11) + reg
    c01 = np.einsum("stk,sk->tk", p.astype(y.dtype), r01)
    det = c00 * c11 - (c01.real**2 + c01.imag**2)
    i00, i11, i01 = c11 / det, c00 / det, -c01 / det  # i10 = conj(i01)
    i10 = np.conj(i01)
    x0, x1 = x[0], x[1]
    out = np.empty_like(y)
    for j in range(y.shape[0]):
        a, b, d = r00[j], r01[j], r11[j]
        g00 = a * i00 + b * i10
        g01 = a * i01 + b * i11
        g10 = np.conj(b) * i00 + d * i10
        g11 = np.conj(b) * i01 + d * i11
        out[j, 0] = p[j] * (g00 * x0 + g01 * x1)
        out[j, 1] = p[j] * (g10 * x0 + g11 * x1)
    return out


def wiener_vocals(mask: np.ndarray, spec: np.ndarray, iterations: int) -> np.ndarray:
    """The vocals' STFT after the Wiener filter, from the vocals soft mask.

    ``mask`` float ``[n_frames, n_bins]`` (one for every channel) or ``[channels, n_frames,
    n_bins]``, the vocals' share in (0, 1); ``spec`` complex ``[channels, n_frames, n_bins]``.
    The initial estimates are ``mask * spec`` (vocals) and ``(1 - mask) * spec``
    (accompaniment). Returns the vocals' ``[channels, n_frames, n_bins]``."""
    m = np.broadcast_to(mask, spec.shape)
    y = np.empty((2,) + spec.shape, dtype=spec.dtype)
    np.multiply(m, spec, out=y[0])
    np.multiply(1.0 - m, spec, out=y[1])
    return wiener_em(y, spec, iterations)[0]
