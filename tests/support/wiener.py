"""What tests/unit/separate/test_wiener.py and tests/integration/test_wiener_real.py share: the
reference filter (norbert's ``wiener``, imported when called) on stemforge's layout."""

from __future__ import annotations

import numpy as np

from stemforge.core import dsp
from stemforge.core.config import SpectrogramConfig


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def soft_start(V: np.ndarray, X: np.ndarray) -> np.ndarray:
    """norbert's initial estimates: V_j / (eps + sum V) * X, ``V [S, C, T, K]``, ``X [C, T, K]``."""
    eps = np.finfo(np.real(X).dtype).eps
    return (V / (eps + V.sum(0, keepdims=True)) * X[None]).astype(X.dtype)


def norbert_wiener(V: np.ndarray, X: np.ndarray, iterations: int) -> np.ndarray:
    """norbert.wiener on stemforge's layout: V [S, C, T, K], X [C, T, K] -> [S, C, T, K]."""
    import norbert

    y = norbert.wiener(np.ascontiguousarray(V.transpose(2, 3, 1, 0)), np.ascontiguousarray(X.transpose(1, 2, 0)), iterations=iterations)
    return y.transpose(3, 2, 0, 1)


def blockwise_reference(x: np.ndarray, mask: np.ndarray, cfg: SpectrogramConfig, iterations: int, block: int) -> np.ndarray:
    """vocals = iSTFT of norbert.wiener run on consecutive blocks of ``block`` frames of the
    whole-signal STFT, from the sources ``mask |X|`` and ``(1 - mask) |X|``."""
    X = dsp.stft(x, cfg)
    V = np.stack([mask * np.abs(X), (1.0 - mask) * np.abs(X)]).astype(np.float32)
    Y = np.empty_like(X)
    for t0 in range(0, X.shape[1], block):
        Y[:, t0 : t0 + block] = norbert_wiener(V[:, :, t0 : t0 + block], X[:, t0 : t0 + block], iterations)[0]
    return dsp.istft(Y, cfg, length=x.shape[1])
