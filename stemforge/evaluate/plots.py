"""Figures of separation results (matplotlib, Agg backend: no display needed).

* :func:`metrics_chart`: grouped bars of an evaluation summary (model vs mixture vs oracle, per
  stem): GNSDR and the median frame-wise SDR.
* :func:`separation_figure`: log-magnitude spectrograms of the mixture and the two stems, and
  the vocals mask, one above the other on a shared time axis.

(The training loss curve lives in ``stemforge/train/plots.py``.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from stemforge.core import files
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError

_COLORS = {"model": "#1f77b4", "mixture": "#9e9e9e", "oracle": "#2ca02c"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    """Save atomically as PNG (:func:`stemforge.core.files.atomic_path`) and close the figure."""
    plt = _pyplot()
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(p, fsync=False) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    except OSError as exc:  # a full disk is a DiskFullError (a StemforgeError) naming the file
        raise StemforgeError(f"{p}: cannot write figure ({exc})") from None
    finally:
        plt.close(fig)
    return p


def metrics_chart(summary: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Bar chart of an evaluation summary (a DataFrame with ``method``, ``stem``, ``gnsdr``,
    ``sdr_frames``): two panels, per stem one bar per method. Returns ``path``."""
    plt = _pyplot()
    panels = [("gnsdr", "GNSDR (dB): whole-track SDR gain over the mixture"), ("sdr_frames", "SDR (dB): median of 1 s frames (BSS Eval v4)")]
    methods = [m for m in ("model", "mixture", "oracle") if m in set(summary["method"])]
    stems = [s for s in ("vocals", "accompaniment") if s in set(summary["stem"])]
    if not methods or not stems:
        raise StemforgeError("metrics_chart: the summary has no rows to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8))
    for ax, (col, label) in zip(np.atleast_1d(axes), panels):
        _bar_panel(ax, summary, col, methods, stems, {m: _COLORS.get(m) for m in methods}, fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("dB")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def separation_figure(
    path: str | os.PathLike,
    mixture: np.ndarray,
    vocals: np.ndarray,
    accompaniment: np.ndarray,
    sample_rate: int,
    mask: np.ndarray | None = None,
    mask_config: SpectrogramConfig | None = None,
    title: str | None = None,
    max_hz: float | None = None,
) -> Path:
    """Spectrograms of mixture / vocals / accompaniment and the vocals mask, as one PNG.

    Args:
        mixture, vocals, accompaniment: ``[samples]`` or ``[channels, samples]`` at
            ``sample_rate`` (downmixed for display).
        mask: optional vocals mask ``[n_frames, n_bins]`` at ``mask_config``'s STFT (default: the
            seed's 16 kHz STFT), e.g. ``Separator.estimate_mask(mono_16k)``.
        max_hz: upper frequency shown (default: Nyquist).

    The spectrograms use a Hann STFT of about 64 ms (hop 16 ms) in dB re. the mixture's peak,
    80 dB range. Returns ``path``.
    """
    from stemforge.core.audio import to_mono

    plt = _pyplot()
    n_fft = 1 << int(round(np.log2(max(64, 0.064 * sample_rate))))
    hop = n_fft // 4
    cfg = SpectrogramConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop)
    signals = [("mixture", mixture), ("vocals", vocals), ("accompaniment", accompaniment)]
    mags = []
    from stemforge.core import dsp

    for _, sig in signals:
        x = to_mono(np.asarray(sig, dtype=np.float32))
        mags.append(dsp.magnitude(x, cfg))
    ref = max(float(mags[0].max()), 1e-12)
    rows = len(signals) + (1 if mask is not None else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.1 * rows), sharex=True)
    top = max_hz or sample_rate / 2
    duration = to_mono(np.asarray(mixture, dtype=np.float32)).shape[-1] / sample_rate
    for ax, (name, _), mag in zip(axes, signals, mags):
        db = 20 * np.log10(np.maximum(mag, ref * 1e-4) / ref)
        im = ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, extent=[0, duration, 0, sample_rate / 2])
        ax.set_ylim(0, top)
        ax.set_ylabel(f"{name}\nHz", fontsize=8)
    fig.colorbar(im, ax=axes[: len(signals)], label="dB", fraction=0.02)
    if mask is not None:
        mc = mask_config or SpectrogramConfig()
        m = np.asarray(mask, dtype=np.float32)
        ax = axes[-1]
        mdur = m.shape[0] * mc.hop_length / mc.sample_rate
        im2 = ax.imshow(m.T, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1, extent=[0, mdur, 0, mc.sample_rate / 2])
        ax.set_ylim(0, min(top, mc.sample_rate / 2))
        ax.set_ylabel("vocals mask\nHz", fontsize=8)
        fig.colorbar(im2, ax=[ax], fraction=0.02)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def protocol_chart(summary: Any, path: str | os.PathLike, title: str | None = None) -> Path:
    """Bar chart of a MUSDB18-protocol summary (a DataFrame with ``method``, ``stem``, ``sdr``,
    ``sir``, ``sar``, ``isr``: medians over tracks): one panel per metric, per stem one bar per
    method (every model and estimates folder, then the mixture floor and the oracle ceiling).
    Returns ``path``."""
    plt = _pyplot()
    metrics = [m for m in ("sdr", "sir", "sar", "isr") if m in summary.columns]
    methods = list(dict.fromkeys(summary["method"]))
    stems = [s for s in ("vocals", "accompaniment") if s in set(summary["stem"])]
    if not methods or not stems or not metrics:
        raise StemforgeError("protocol_chart: the summary has no rows to plot")
    cmap = plt.get_cmap("tab10")
    colors = {m: _COLORS.get(m) or cmap(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics) + 1.0, 3.8), sharey=False)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        _bar_panel(ax, summary, metric, methods, stems, colors, fontsize=7)
        ax.set_title(f"{metric.upper()} (dB), median over tracks", fontsize=9)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _bar_panel(ax: Any, summary: Any, column: str, methods: list, stems: list, colors: dict, fontsize: int) -> None:
    """One panel of grouped bars: per stem one bar per method of ``summary[column]`` (dB),
    each labelled with its value ("n/a" for a missing or non-finite one, drawn at 0)."""
    width = 0.8 / len(methods)
    x = np.arange(len(stems))
    for k, m in enumerate(methods):
        vals = []
        for s in stems:
            row = summary[(summary["method"] == m) & (summary["stem"] == s)]
            vals.append(float(row[column].iloc[0]) if len(row) else np.nan)
        vals_arr = np.array(vals, dtype=float)
        shown = np.where(np.isfinite(vals_arr), vals_arr, 0.0)
        bars = ax.bar(x + (k - (len(methods) - 1) / 2) * width, shown, width, label=m, color=colors[m])
        for b, v in zip(bars, vals_arr):
            y = b.get_height()
            ax.annotate(f"{v:.1f}" if np.isfinite(v) else "n/a", (b.get_x() + b.get_width() / 2, y),
                        ha="center", va="bottom" if y >= 0 else "top", fontsize=fontsize)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(stems)
