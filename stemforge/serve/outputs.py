"""The files a finished job offers: its mixture and stems as 16-bit WAV (:func:`write_pcm16`)
and their spectrogram pictures (:func:`spectrogram_png`).

Both write under a temporary name renamed when complete (:mod:`stemforge.core.files`), so a
client never fetches half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from stemforge.core import files

#: ``render_png(audio [samples] mono float32, sample_rate, path, reference)`` writes a spectrogram
#: PNG and returns the reference power it used (0 dB); the pool passes the mixture's for the stems,
#: so that the three pictures share one scale.
PngRenderer = Callable[[np.ndarray, int, Path, "float | None"], float]

#: Size of the spectrogram pictures (pixels) and what they show.
PNG_WIDTH, PNG_HEIGHT = 900, 160
PNG_MAX_HZ = 8000.0
PNG_RANGE_DB = 80.0


def write_pcm16(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, block: int = 1 << 16) -> Path:
    """Write ``audio [channels, samples]`` as 16-bit PCM WAV, clipped to [-1, 1], in blocks (no
    full-size copy), under a temporary name renamed when complete
    (:class:`stemforge.core.audio.AudioWriter`). Returns the path."""
    from stemforge.core.audio import AudioWriter

    with AudioWriter(path, int(sample_rate), int(audio.shape[0]), "PCM_16") as writer:
        for b0 in range(0, audio.shape[1], block):
            writer.write(audio[:, b0 : b0 + block])
    return Path(path)


def spectrogram_png(
    audio: np.ndarray,
    sample_rate: int,
    path: str | os.PathLike,
    reference: float | None = None,
    width: int = PNG_WIDTH,
    height: int = PNG_HEIGHT,
    max_hz: float = PNG_MAX_HZ,
    range_db: float = PNG_RANGE_DB,
) -> float:
    """Write the spectrogram of ``audio [samples]`` (mono, ``sample_rate`` Hz) as a PNG picture.

    A picture for the page, not a figure: ``width`` x ``height`` pixels, time left to right, 0 Hz
    at the bottom up to ``min(max_hz, Nyquist)`` (linear), the power of a Hann STFT of about
    46 ms (hop a quarter of it) averaged into the pixels, in dB re. ``reference`` (default: this
    signal's largest pixel) over ``range_db``, in 64 levels of the magma colour map (a palette
    PNG: small files).

    Memory does not grow with the song: the STFT is computed in blocks and pooled at once.
    Thread-safe (no pyplot): matplotlib only gives the colours, Pillow writes the file, under a
    temporary name renamed when complete. Returns the reference power used.
    """
    import matplotlib
    from PIL import Image

    from stemforge.core import dsp

    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n_fft = 1 << int(round(np.log2(max(64.0, 0.046 * sample_rate))))
    hop = n_fft // 4
    n_frames = 1 + max(0, len(x) - 1) // hop
    n_cols = max(1, min(width, n_frames))
    top_bin = max(2, min(n_fft // 2 + 1, int(round(min(max_hz, sample_rate / 2) * n_fft / sample_rate)) + 1))
    n_rows = min(height, top_bin)
    window = dsp.get_window("hann", n_fft)
    col_of_frame = (np.arange(n_frames) * n_cols) // n_frames  # sorted: pooling by reduceat
    row_starts = np.searchsorted((np.arange(top_bin) * n_rows) // top_bin, np.arange(n_rows))
    power = np.zeros((n_cols, top_bin), dtype=np.float64)
    for f0 in range(0, n_frames, 256):  # blocks of 256 frames: a few MB whatever the song
        f1 = min(n_frames, f0 + 256)
        spec = dsp.stft_frames(x, f0, f1, n_fft, hop, window)[:, :top_bin]  # frame i centred on i * hop
        frame_power = spec.real**2 + spec.imag**2
        cols, starts = np.unique(col_of_frame[f0:f1], return_index=True)
        power[cols] += np.add.reduceat(frame_power, starts, axis=0)
    power /= np.bincount(col_of_frame, minlength=n_cols)[:, None]
    pooled = np.add.reduceat(power, row_starts, axis=1) / np.diff(np.append(row_starts, top_bin))[None, :]
    ref = float(reference) if reference is not None and reference > 0 else float(pooled.max())
    ref = ref if ref > 0 else 1.0
    db = 10.0 * np.log10(np.maximum(pooled, ref * 10.0 ** (-range_db / 10.0)) / ref)
    levels = 64
    index = np.clip(np.rint((1.0 + db.T[::-1] / range_db) * (levels - 1)), 0, levels - 1).astype(np.uint8)
    palette = (matplotlib.colormaps["magma"](np.linspace(0.0, 1.0, levels))[:, :3] * 255).astype(np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    with files.atomic_path(path, fsync=False) as tmp:  # a job's picture, made again by a new job
        image.save(tmp, format="PNG", optimize=True)
    return ref


__all__ = ["PNG_HEIGHT", "PNG_WIDTH", "PngRenderer", "spectrogram_png", "write_pcm16"]
