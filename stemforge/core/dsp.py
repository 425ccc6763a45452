"""The one STFT of stemforge (framing, windows, overlap-add) and the signal functions of ingest.

Every spectrogram in the package comes from here: the stored magnitudes (ingest, augment, the
pairs), the Separator's mask features and its full-band mask application, evaluation's oracle
mask, the figures and the web page's spectrogram pictures.

Shapes and units: a waveform is ``[..., samples]`` float32 (no leading axis for mono, one for
channels); a spectrogram is time-major ``[..., n_frames, n_bins]`` complex64 with
``n_bins = n_fft // 2 + 1`` (the shard layout; leading axes carried through). Sizes
(``n_fft``, ``hop_length``) are in samples; nothing here depends on the sample rate.

The frame grid is global: frame ``i`` covers samples ``[i * hop_length - n_fft // 2,
i * hop_length + n_fft // 2)`` when centred (``center=True``) and ``[i * hop_length,
i * hop_length + n_fft)`` when not, and samples outside the signal are zeros. This is
``librosa.stft(center=True, pad_mode="constant")`` (``1 + samples // hop_length`` frames), and
it is what makes blockwise computation exact: :func:`stft_frames` gives frames ``start..stop-1``
of a long signal without framing the rest, equal to the same rows of :func:`stft`.

The FFTs are scipy.fft's (about 3x faster than numpy.fft's on batches of frames, and
multi-threaded with ``workers``); ``scipy.fft`` is cheap to import, unlike ``scipy.signal``,
whose window functions are not needed: the windows are built with numpy.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError

#: A frame counts as "voiced" when its vocal energy is within this many dB of the loudest
#: vocal frame of the track (see :func:`vocal_activity`).
VOCAL_ACTIVITY_DB = -40.0
#: Vocals whose total energy is this far below the mixture's are "silent" (a bad track).
SILENT_VOCALS_DB = -60.0

#: Threads a caller that owns the machine (the Separator) gives the batched FFTs. Functions
#: default to one thread: ingest and augment run one process per core.
FFT_WORKERS = max(1, min(4, os.cpu_count() or 1))

#: Frames per block of :func:`stft` and :func:`istft` (bounded memory for long signals).
_BLOCK_FRAMES = 4096

WINDOWS = ("hann", "ones", "boxcar", "rectangular")


@functools.lru_cache(maxsize=32)
def _window(name: str, n_fft: int) -> np.ndarray:
    if name == "hann":
        w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    elif name in ("ones", "boxcar", "rectangular"):
        w = np.ones(n_fft, np.float32)
    else:
        raise StemforgeError(f"unsupported window {name!r} (one of {', '.join(WINDOWS)})")
    w.setflags(write=False)
    return w


def get_window(name: str, n_fft: int) -> np.ndarray:
    """The analysis window ``[n_fft]`` float32, periodic, read-only.

    ``"hann"`` equals ``scipy.signal.get_window("hann", n_fft, fftbins=True)`` (what
    ``librosa.stft`` uses) cast to float32, bit for bit; ``"ones"`` (``"boxcar"``,
    ``"rectangular"``) is the rectangular window.
    """
    if isinstance(n_fft, bool) or not isinstance(n_fft, (int, np.integer)) or n_fft <= 0:
        raise StemforgeError(f"window length must be a positive integer, got {n_fft!r}")
    return _window(str(name), int(n_fft))


def window(config: SpectrogramConfig) -> np.ndarray:
    """The analysis window of ``config``: :func:`get_window` ``(config.window, config.n_fft)``."""
    return get_window(config.window, config.n_fft)


def n_frames(n_samples: int, n_fft: int, hop_length: int, center: bool = True) -> int:
    """Frames of a signal of ``n_samples`` samples: ``1 + n // hop`` centred, else
    ``1 + max(0, n - n_fft) // hop`` (a signal shorter than ``n_fft`` gives one zero-padded frame)."""
    if center:
        return 1 + n_samples // hop_length
    return 1 + max(0, n_samples - n_fft) // hop_length


def _as_window(window: str | np.ndarray, n_fft: int) -> np.ndarray:
    if isinstance(window, str):
        return get_window(window, n_fft)
    w = np.asarray(window, dtype=np.float32)
    if w.shape != (n_fft,):
        raise StemforgeError(f"window has shape {w.shape}, expected ({n_fft},)")
    return w


# Two FFT back ends, one transform. With one worker (ingest, augment, derive-vocals: everything
# stored in a DataDir) numpy's FFT, which every stored array has been computed with since the
# first release, so the default geometry's arrays stay bit-identical (tests/unit/ingest/test_geometry.py
# holds checksums of arrays written by stemforge 0.1.0). With several workers (the Separator's
# full-band STFT of long songs) scipy's pocketfft threads over the frames: 3-4x faster on large
# batches; the two agree to float32 rounding (relative 1e-7, tested in tests/unit/core/test_dsp.py).
def _rfft(frames: np.ndarray, workers: int) -> np.ndarray:
    if workers <= 1:
        return np.fft.rfft(frames, axis=-1)
    import scipy.fft

    return scipy.fft.rfft(frames, axis=-1, workers=workers)


def _irfft(spec: np.ndarray, n_fft: int, workers: int) -> np.ndarray:
    if workers <= 1:
        return np.fft.irfft(spec, n=n_fft, axis=-1)
    import scipy.fft

    return scipy.fft.irfft(spec, n=n_fft, axis=-1, workers=workers)


def stft_frames(
    x: np.ndarray,
    start: int,
    stop: int,
    n_fft: int,
    hop_length: int,
    window: str | np.ndarray = "hann",
    center: bool = True,
    workers: int = 1,
) -> np.ndarray:
    """STFT frames ``start..stop-1`` of ``x [..., samples]`` on the global frame grid.

    Only the samples those frames cover are read (zeros outside ``x``), so a long signal is
    transformed block by block with results equal to :func:`stft`'s rows. ``window`` is a
    name (:func:`get_window`) or an array ``[n_fft]``. Returns complex64
    ``[..., stop - start, n_fft // 2 + 1]``.
    """
    w = _as_window(window, n_fft)
    x = np.asarray(x, dtype=np.float32)
    lead = x.shape[:-1]
    if stop <= start:
        return np.zeros(lead + (0, n_fft // 2 + 1), np.complex64)
    lo = start * hop_length - (n_fft // 2 if center else 0)
    hi = lo + (stop - start - 1) * hop_length + n_fft
    n = x.shape[-1]
    if lo >= 0 and hi <= n:
        seg = x[..., lo:hi]
    else:
        seg = np.zeros(lead + (hi - lo,), dtype=np.float32)
        a, b = max(lo, 0), min(hi, n)
        if b > a:
            seg[..., a - lo : b - lo] = x[..., a:b]
    frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft, axis=-1)[..., ::hop_length, :]
    return _rfft(frames * w, workers).astype(np.complex64, copy=False)


def _check_config(config: SpectrogramConfig) -> None:
    if config.center and config.pad_mode != "constant":
        raise StemforgeError(f"unsupported pad_mode {config.pad_mode!r} (constant)")


def stft(y: np.ndarray, config: SpectrogramConfig, workers: int = 1) -> np.ndarray:
    """Complex STFT of ``y [..., samples]`` -> ``[..., n_frames, n_bins]`` complex64.

    Equal to ``librosa.stft(y, n_fft, hop_length, window, center)`` transposed to time-major
    (zero padding; ``n_frames = config.n_frames(samples)``), to float32 rounding. Computed in
    blocks of frames (bounded memory), with ``workers`` FFT threads; any sample rate, any
    leading axes (channels).
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim < 1:
        raise StemforgeError(f"stft expects a waveform [..., samples], got shape {y.shape}")
    _check_config(config)
    n_fft, hop = config.n_fft, config.hop_length
    total = n_frames(y.shape[-1], n_fft, hop, config.center)
    w = window(config)
    out = np.empty(y.shape[:-1] + (total, config.n_bins), np.complex64)
    for s in range(0, total, _BLOCK_FRAMES):
        e = min(total, s + _BLOCK_FRAMES)
        out[..., s:e, :] = stft_frames(y, s, e, n_fft, hop, w, config.center, workers)
    return out


def synthesis_frames(spec: np.ndarray, n_fft: int, window: str | np.ndarray = "hann", workers: int = 1) -> np.ndarray:
    """Windowed inverse FFT of ``spec [..., n_frames, n_fft // 2 + 1]`` -> float32
    ``[..., n_frames, n_fft]``: the frames :func:`overlap_add` sums (weighted overlap-add)."""
    w = _as_window(window, n_fft)
    frames = _irfft(spec, n_fft, workers).astype(np.float32, copy=False)
    frames *= w
    return frames


def overlap_add(frames: np.ndarray, hop_length: int) -> np.ndarray:
    """Overlap-add ``frames [..., n_frames, n_fft]`` at ``hop_length`` -> float32
    ``[..., (n_frames - 1) * hop_length + n_fft]`` (frame ``i`` starts at sample ``i * hop``)."""
    *lead, count, n_fft = frames.shape
    length = (count - 1) * hop_length + n_fft
    if n_fft % hop_length == 0:
        # Split every frame into n_fft / hop blocks of one hop: block r of frame i lands on
        # output block i + r, so the sum is n_fft / hop strided additions without copies.
        ratio = n_fft // hop_length
        blocks = np.zeros(tuple(lead) + (count + ratio - 1, hop_length), dtype=np.float32)
        parts = frames.reshape(tuple(lead) + (count, ratio, hop_length))
        for r in range(ratio):
            blocks[..., r : r + count, :] += parts[..., :, r, :]
        return blocks.reshape(tuple(lead) + (length,))
    out = np.zeros(tuple(lead) + (length,), dtype=np.float32)
    for i in range(count):
        out[..., i * hop_length : i * hop_length + n_fft] += frames[..., i, :]
    return out


def window_envelope(window_sq: np.ndarray, count: int, hop_length: int) -> np.ndarray:
    """Overlap-added squared window ``window_sq [n_fft]`` of ``count`` frames -> float32
    ``[(count - 1) * hop_length + n_fft]``: the denominator of the weighted overlap-add."""
    n_fft = window_sq.shape[0]
    if n_fft % hop_length == 0:
        ratio = n_fft // hop_length
        blocks = np.zeros((count + ratio - 1, hop_length), dtype=np.float32)
        parts = window_sq.reshape(ratio, hop_length)
        for r in range(ratio):
            blocks[r : r + count] += parts[r]
        return blocks.reshape(-1)
    return overlap_add(np.broadcast_to(window_sq, (count, n_fft)), hop_length)


def istft(spec: np.ndarray, config: SpectrogramConfig, length: int | None = None, workers: int = 1) -> np.ndarray:
    """Inverse of :func:`stft` (weighted overlap-add divided by the window's overlap-added
    square, as ``librosa.istft``): ``[..., n_frames, n_bins]`` complex -> ``[..., samples]``
    float32; ``length`` samples when given (zero padded if the frames cover fewer)."""
    spec = np.asarray(spec)
    if spec.ndim < 2 or spec.shape[-1] != config.n_bins:
        raise StemforgeError(f"istft expects [..., n_frames, {config.n_bins}], got shape {spec.shape}")
    _check_config(config)
    n_fft, hop = config.n_fft, config.hop_length
    count = spec.shape[-2]
    w = window(config)
    total = n_fft + hop * (count - 1)
    y = np.zeros(spec.shape[:-2] + (total,), np.float32)
    for s in range(0, count, _BLOCK_FRAMES):
        e = min(count, s + _BLOCK_FRAMES)
        ola = overlap_add(synthesis_frames(spec[..., s:e, :], n_fft, w, workers), hop)
        y[..., s * hop : s * hop + ola.shape[-1]] += ola
    norm = window_envelope(w * w, count, hop)
    nz = norm > np.finfo(np.float32).tiny
    y[..., nz] /= norm[nz]
    start = n_fft // 2 if config.center else 0
    if length is None:
        end = total - (n_fft // 2 if config.center else 0)
        return y[..., start:end]
    out = y[..., start : start + length]
    if out.shape[-1] < length:
        out = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, length - out.shape[-1])])
    return out


def magnitude(y: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """``|stft(y)|`` as float32 ``[..., n_frames, n_bins]``."""
    return np.abs(stft(y, config)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Magnitudes:
    """Normalized magnitudes of one track, each ``[n_frames, n_bins]`` float32, and the factor.

    ``norm`` is what the raw magnitudes were divided by: for ``normalization="max_mixture"``
    the maximum of the raw mixture magnitude (so ``mixture.max() == 1``), for ``"none"`` 1.0.
    Ratios between the three are kept either way.
    """

    mixture: np.ndarray
    vocals: np.ndarray
    accompaniment: np.ndarray
    norm: float


def normalized_magnitudes(
    mixture: np.ndarray, vocals: np.ndarray, accompaniment: np.ndarray, config: SpectrogramConfig
) -> Magnitudes:
    """STFT magnitudes of three equal-length waveforms ``[samples]``, scaled by ``config.normalization``.

    ``"max_mixture"``: all three divided by max |mixture| (``norm`` is that maximum);
    ``"none"``: the plain ``|STFT|`` (``norm`` is 1.0, so ``stored x norm`` is the plain
    magnitude either way).

    Raises StemforgeError when the mixture is silent (its maximum magnitude is 0), whatever the
    normalization.
    """
    mix = magnitude(mixture, config)
    peak = float(mix.max())
    if not np.isfinite(peak) or peak <= 0.0:
        raise StemforgeError("mixture is silent (maximum magnitude is 0)")
    voc = magnitude(vocals, config)
    acc = magnitude(accompaniment, config)
    if config.normalization == "none":
        return Magnitudes(mix, voc, acc, 1.0)
    inv = np.float32(1.0 / peak)
    mix *= inv
    voc *= inv
    acc *= inv
    return Magnitudes(mix, voc, acc, peak)


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
