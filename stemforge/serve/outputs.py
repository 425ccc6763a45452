"""The files a finished job offers: its mixture and stems as 16-bit WAV (:func:`write_pcm16`)
and their spectrogram pictures with time and frequency axes (:func:`spectrogram_png`).

Both write under a temporary name renamed when complete (:mod:`stemforge.core.files`), so a
client never fetches half a file.
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from stemforge.core import files

#: ``render_png(audio [samples] mono float32, sample_rate, path, reference)`` writes a spectrogram
#: PNG and returns the reference power it used (0 dB); the pool passes the mixture's for the stems,
#: so that the three pictures share one scale.
PngRenderer = Callable[[np.ndarray, int, Path, "float | None"], float]

#: Size of the spectrogram pictures (pixels) and what they show.
PNG_WIDTH, PNG_HEIGHT = 900, 200
PNG_MAX_HZ = 8000.0
PNG_RANGE_DB = 80.0
#: The plot area inside the picture (pixels from the left and from the top, width, height); the
#: margins hold the axes: frequency (kHz) on the left, time (s) below.
PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PLOT_HEIGHT = 46, 6, 846, 156
#: Levels of the colour map: palette index ``i`` of a picture is level ``i`` (0: ``-range_db``
#: and below, ``LEVELS - 1``: the reference); the indices above are the axes' greys.
LEVELS = 64
_GREYS = 24
#: matplotlib's text rendering shares font objects between figures: one picture at a time.
_DRAW_LOCK = threading.Lock()


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

    A picture for the page: ``width`` x ``height`` pixels, of which the plot area
    (:data:`PLOT_LEFT`, :data:`PLOT_TOP`, :data:`PLOT_WIDTH`, :data:`PLOT_HEIGHT` at the default
    size; the margins scale with it) shows time left to right and 0 Hz at the bottom up to
    ``min(max_hz, Nyquist)`` (linear), with the axes around it: frequency in kHz, time in
    seconds. Each plot pixel is the power of a Hann STFT of about 46 ms (hop a quarter of it)
    averaged over the frames and bins it covers, in dB re. ``reference`` (default: this
    signal's largest pixel) over ``range_db``, in :data:`LEVELS` levels of the magma colour map:
    a palette PNG whose index ``i < LEVELS`` is level ``i`` (small files).

    Memory does not grow with the song: the STFT is computed in blocks and pooled at once.
    Thread-safe: matplotlib draws the axes on its own Figure (no pyplot) under a lock, Pillow
    writes the file, under a temporary name renamed when complete. Returns the reference power
    used.
    """
    from stemforge.core import dsp

    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    sx, sy = width / PNG_WIDTH, height / PNG_HEIGHT
    box = (round(PLOT_LEFT * sx), round(PLOT_TOP * sy), max(1, round(PLOT_WIDTH * sx)), max(1, round(PLOT_HEIGHT * sy)))
    n_fft = 1 << int(round(np.log2(max(64.0, 0.046 * sample_rate))))
    hop = n_fft // 4
    n_frames = 1 + max(0, len(x) - 1) // hop
    n_cols = max(1, min(box[2], n_frames))
    top_hz = min(max_hz, sample_rate / 2)
    top_bin = max(2, min(n_fft // 2 + 1, int(round(top_hz * n_fft / sample_rate)) + 1))
    n_rows = min(box[3], top_bin)
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
    index = np.clip(np.rint((1.0 + db.T[::-1] / range_db) * (LEVELS - 1)), 0, LEVELS - 1).astype(np.uint8)
    image = _with_axes(index, (width, height), box, len(x) / sample_rate, top_hz / 1000.0)
    with files.atomic_path(path, fsync=False) as tmp:  # a job's picture, made again by a new job
        image.save(tmp, format="PNG", optimize=True)
    return ref


def _palette() -> np.ndarray:
    """``[LEVELS + _GREYS, 3]`` uint8: the magma levels, then greys from black to white (the axes)."""
    import matplotlib

    magma = matplotlib.colormaps["magma"](np.linspace(0.0, 1.0, LEVELS))[:, :3]
    greys = np.repeat(np.linspace(0.0, 1.0, _GREYS)[:, None], 3, axis=1)
    return np.rint(np.concatenate([magma, greys]) * 255).astype(np.uint8)


def _with_axes(index: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int], seconds: float,
               top_khz: float):
    """The palette picture of ``size`` (width, height): ``index`` (levels, ``[rows, cols]``, top
    row highest frequency) stretched over the plot ``box`` (left, top, width, height) without
    smoothing, in the frame of :func:`_axes_frame` (its greys: palette indices from
    :data:`LEVELS` on)."""
    from PIL import Image

    left, top, w, h = box
    grey = _axes_frame(size, box, round(seconds, 3), round(top_khz, 3)).astype(np.float32).mean(axis=2)
    out = (LEVELS + np.rint(grey / 255.0 * (_GREYS - 1))).astype(np.uint8)
    rows = (np.arange(h) * index.shape[0]) // h  # nearest, as the picture's pixels
    cols = (np.arange(w) * index.shape[1]) // w
    out[top : top + h, left : left + w] = index[rows[:, None], cols[None, :]]
    image = Image.fromarray(out, mode="P")
    image.putpalette(_palette().reshape(-1).tolist())
    return image


@functools.lru_cache(maxsize=8)
def _axes_frame(size: tuple[int, int], box: tuple[int, int, int, int], seconds: float, top_khz: float) -> np.ndarray:
    """``[height, width, 3]`` uint8 (read-only): white, with the axes matplotlib draws around the
    plot ``box``: time 0..``seconds`` (s), frequency 0..``top_khz`` (kHz). Cached: the three
    pictures of a job share it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = size
    left, top, w, h = box
    with _DRAW_LOCK:
        fig = Figure(figsize=(width / 100.0, height / 100.0), dpi=100, facecolor="white")
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((left / width, 1.0 - (top + h) / height, w / width, h / height))
        ax.set_xlim(0.0, max(seconds, 1e-3))
        ax.set_ylim(0.0, top_khz)
        ax.tick_params(labelsize=7, length=3, pad=2)
        ax.set_xlabel("time (s)", fontsize=7, labelpad=1)
        ax.set_ylabel("kHz", fontsize=7, labelpad=2)
        ax.patch.set_alpha(0.0)
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
    rgb.setflags(write=False)
    return rgb


__all__ = ["LEVELS", "PLOT_HEIGHT", "PLOT_LEFT", "PLOT_TOP", "PLOT_WIDTH", "PNG_HEIGHT", "PNG_WIDTH", "PngRenderer", "spectrogram_png", "write_pcm16"]
