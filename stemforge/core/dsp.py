"""Pure signal functions shared by ingest, augment, pairs and separation.

Shapes: waveforms are ``[samples]`` float32 (mono, at ``config.sample_rate``); spectrograms are
time-major ``[n_frames, n_bins]`` (``n_bins = n_fft // 2 + 1``) to match the shard layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError

#: A frame counts as "voiced" when its vocal energy is within this many dB of the loudest
#: vocal frame of the track (see :func:`vocal_activity`).
VOCAL_ACTIVITY_DB = -40.0
#: Vocals whose total energy is this far below the mixture's are "silent" (a bad track).
SILENT_VOCALS_DB = -60.0


_BLOCK_FRAMES = 4096


def window(config: SpectrogramConfig) -> np.ndarray:
    """The analysis window ``[n_fft]`` float32 (periodic, as ``scipy.signal.get_window``)."""
    n = config.n_fft
    if config.window == "hann":
        return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)
    if config.window in ("ones", "boxcar", "rectangular"):
        return np.ones(n, np.float32)
    raise StemforgeError(f"unsupported window {config.window!r} (hann or ones)")


def stft(y: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """Complex STFT of ``y [samples]`` -> ``[n_frames, n_bins]`` complex64, equal to ``librosa.stft``.

    ``n_frames = 1 + samples // hop_length`` (center=True, zero padding). Computed with numpy's
    FFT in blocks of frames (bounded memory; no librosa import, whose first call costs seconds).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise StemforgeError(f"stft expects a 1-D waveform, got shape {y.shape}")
    n_fft, hop = config.n_fft, config.hop_length
    if config.center:
        pad = n_fft // 2
        if config.pad_mode != "constant":
            raise StemforgeError(f"unsupported pad_mode {config.pad_mode!r} (constant)")
        y = np.pad(y, (pad, pad))
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    n_frames = 1 + (y.size - n_fft) // hop
    frames = sliding_window_view(y, n_fft)[::hop][:n_frames]
    w = window(config)
    out = np.empty((n_frames, config.n_bins), np.complex64)
    for s in range(0, n_frames, _BLOCK_FRAMES):
        out[s : s + _BLOCK_FRAMES] = np.fft.rfft(frames[s : s + _BLOCK_FRAMES] * w, axis=1)
    return out


def istft(spec: np.ndarray, config: SpectrogramConfig, length: int | None = None) -> np.ndarray:
    """Inverse of :func:`stft` (weighted overlap-add, as ``librosa.istft``):
    ``[n_frames, n_bins]`` complex -> ``[samples]`` float32, ``length`` samples when given."""
    n_frames = spec.shape[0]
    n_fft, hop = config.n_fft, config.hop_length
    w = window(config)
    total = n_fft + hop * (n_frames - 1)
    y = np.zeros(total, np.float32)
    norm = np.zeros(total, np.float32)
    w2 = w * w
    for s in range(0, n_frames, _BLOCK_FRAMES):
        frames = np.fft.irfft(spec[s : s + _BLOCK_FRAMES], n=n_fft, axis=1).astype(np.float32) * w
        for i, frame in enumerate(frames):
            at = (s + i) * hop
            y[at : at + n_fft] += frame
            norm[at : at + n_fft] += w2
    nz = norm > np.finfo(np.float32).tiny
    y[nz] /= norm[nz]
    start = n_fft // 2 if config.center else 0
    if length is None:
        end = total - (n_fft // 2 if config.center else 0)
        return y[start:end]
    out = y[start : start + length]
    if out.size < length:
        out = np.pad(out, (0, length - out.size))
    return out


def magnitude(y: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """``|stft(y)|`` as float32 ``[n_frames, n_bins]``."""
    return np.abs(stft(y, config)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Magnitudes:
    """Normalized magnitudes of one track, each ``[n_frames, n_bins]`` float32, and the factor.

    ``norm`` is the maximum of the raw mixture magnitude; the stored arrays are the raw ones
    divided by it, so ``mixture.max() == 1`` and ratios between the three are kept.
    """

    mixture: np.ndarray
    vocals: np.ndarray
    accompaniment: np.ndarray
    norm: float


def normalized_magnitudes(
    mixture: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, config: SpectrogramConfig
) -> Magnitudes:
    """STFT magnitudes of three equal-length waveforms ``[samples]``, divided by max |mixture|.

    Raises StemforgeError when the mixture is silent (the factor would be 0).
    """
    mix = magnitude(mixture, config)
    norm = float(mix.max())
    if not np.isfinite(norm) or norm <= 0.0:
        raise StemforgeError("mixture is silent (maximum magnitude is 0)")
    inv = np.float32(1.0 / norm)
    voc = magnitude(vocals, config)
    acc = magnitude(accompaniment, config)
    mix *= inv
    voc *= inv
    acc *= inv
    return Magnitudes(mix, voc, acc, norm)


def frame_energy(mag: np.ndarray) -> np.ndarray:
    """Per-frame energy ``sum_k |X[t, k]|^2`` of a ``[n_frames, n_bins]`` magnitude -> ``[n_frames]``."""
    m = mag.astype(np.float32, copy=False)
    return np.einsum("tk,tk->t", m, m)


def vocal_activity(vocal_energy: np.ndarray, threshold_db: float = VOCAL_ACTIVITY_DB) -> np.ndarray:
    """Boolean ``[n_frames]``: frames whose vocal energy is within ``threshold_db`` of the loudest.

    A relative threshold makes the measure independent of the track's level; all-zero vocals
    give no active frame.
    """
    peak = float(vocal_energy.max()) if vocal_energy.size else 0.0
    if peak <= 0.0:
        return np.zeros(vocal_energy.shape, dtype=bool)
    return vocal_energy >= peak * 10.0 ** (threshold_db / 10.0)


def energy_ratio_db(signal: np.ndarray, reference: np.ndarray) -> float:
    """``10 log10(sum signal^2 / sum reference^2)`` in dB; -inf for a zero signal."""
    num = float(np.dot(signal.astype(np.float64), signal.astype(np.float64)))
    den = float(np.dot(reference.astype(np.float64), reference.astype(np.float64)))
    if den <= 0.0:
        return float("inf") if num > 0 else float("nan")
    if num <= 0.0:
        return float("-inf")
    return 10.0 * np.log10(num / den)
