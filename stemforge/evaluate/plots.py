"""Figures of separation results (matplotlib, Agg backend: no display needed).

* :func:`metrics_chart`: an evaluation of a DataDir (model vs mixture vs oracle, per stem): with
  the per-track table, the spread across tracks (a box and every track's point per stem and
  method, the summary value marked) of NSDR, SDR and, when computed, the frame-wise SDR; without
  it, grouped bars of the summary.
* :func:`protocol_chart`: the same for the MUSDB18 protocol's SDR, SIR, SAR and ISR.
* :func:`separation_figure`: log-magnitude spectrograms of the mixture, the true vocals, the two
  estimated stems (full band), and the vocals mask, one above the other on a shared time axis.

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


def metrics_chart(summary: Any, path: str | os.PathLike, title: str | None = None, table: Any = None) -> Path:
    """:func:`metrics_figure` saved as a PNG at ``path``. Returns ``path``."""
    return _save(metrics_figure(summary, title, table), path)


def metrics_figure(summary: Any, title: str | None = None, table: Any = None) -> Any:
    """The figure of an evaluation of a DataDir (:mod:`stemforge.evaluate.datadir`).

    With ``table`` (the per-track table: ``method``, ``stem``, ``nsdr``, ``sdr``,
    ``sdr_frames``): one panel per metric (NSDR, SDR and, when any track has it, the median
    frame-wise SDR), per stem one box per method with every track's value as a point (the
    spread across tracks) and the summary's value as a black diamond (GNSDR: the
    duration-weighted mean; the mean SDR; the median over tracks of the frame medians). Without
    it: grouped bars of the summary (``gnsdr``, ``sdr_frames``).
    """
    plt = _pyplot()
    methods = [m for m in ("model", "mixture", "oracle") if m in set(summary["method"])]
    stems = [s for s in ("vocals", "accompaniment") if s in set(summary["stem"])]
    if not methods or not stems:
        raise StemforgeError("metrics_chart: the summary has no rows to plot")
    colors = {m: _COLORS.get(m) for m in methods}
    if table is not None and len(table):
        panels = [
            ("nsdr", "gnsdr", "NSDR (dB): whole-track SDR gain over the mixture;\n\u25c6 GNSDR (duration-weighted mean)"),
            ("sdr", "sdr_mean", "SDR (dB), whole track; \u25c6 mean over tracks"),
            ("sdr_frames", "sdr_frames", "SDR (dB): median of 1 s frames (BSS Eval v4);\n\u25c6 median over tracks"),
        ]
        panels = [p for p in panels if p[0] in table.columns and np.isfinite(np.asarray(table[p[0]], dtype=float)).any()]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
        for ax, (column, centre, label) in zip(axes[0], panels):
            _spread_panel(ax, table, column, methods, stems, colors, _centres(summary, centre), fontsize=7)
            ax.set_title(label, fontsize=8)
            ax.set_ylabel("dB")
        axes[0][0].legend(fontsize=7, loc="best")
        n_tracks = int(summary["tracks"].max()) if "tracks" in summary.columns else None
        if title or n_tracks:
            fig.suptitle(" - ".join(str(t) for t in (title, n_tracks and f"{n_tracks} tracks: one point each") if t), fontsize=10, y=1.03)
        return fig
    panels = [("gnsdr", "GNSDR (dB): whole-track SDR gain over the mixture"), ("sdr_frames", "SDR (dB): median of 1 s frames (BSS Eval v4)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8))
    for ax, (col, label) in zip(np.atleast_1d(axes), panels):
        _bar_panel(ax, summary, col, methods, stems, colors, fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("dB")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


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
    true_vocals: np.ndarray | None = None,
) -> Path:
    """:func:`separation_spectrograms` saved as a PNG at ``path``. Returns ``path``."""
    return _save(separation_spectrograms(mixture, vocals, accompaniment, sample_rate, mask, mask_config, title, max_hz,
                                         true_vocals), path)


def separation_spectrograms(
    mixture: np.ndarray,
    vocals: np.ndarray,
    accompaniment: np.ndarray,
    sample_rate: int,
    mask: np.ndarray | None = None,
    mask_config: SpectrogramConfig | None = None,
    title: str | None = None,
    max_hz: float | None = None,
    true_vocals: np.ndarray | None = None,
) -> Any:
    """The figure of spectrograms of the mixture, the true vocals (when given), the estimated
    vocals and accompaniment, and the vocals mask, one above the other on a shared time axis.

    Args:
        mixture, vocals, accompaniment: ``[samples]`` or ``[channels, samples]`` at
            ``sample_rate`` (downmixed for display); ``vocals``/``accompaniment`` the estimates.
        true_vocals: the reference vocals, shaped like ``mixture`` (a panel above the estimate).
        mask: optional vocals mask ``[n_frames, n_bins]`` at ``mask_config``'s STFT (default: the
            seed's 16 kHz STFT), e.g. ``Separator.estimate_mask(mono_16k)``; drawn up to that
            STFT's Nyquist (the bins the model saw; above them the Separator extends the mask).
        max_hz: upper frequency of the spectrograms (default: ``sample_rate / 2``, the full band).

    The spectrograms use a Hann STFT of about 64 ms (hop 16 ms) in dB re. the mixture's peak,
    80 dB range; frequency in kHz, time in seconds.
    """
    from stemforge.core import dsp
    from stemforge.core.audio import to_mono

    plt = _pyplot()
    n_fft = 1 << int(round(np.log2(max(64, 0.064 * sample_rate))))
    hop = n_fft // 4
    cfg = SpectrogramConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop)
    signals = [("mixture", mixture)]
    if true_vocals is not None:
        signals.append(("true vocals", true_vocals))
    signals += [("vocals\n(estimate)" if true_vocals is not None else "vocals", vocals), ("accompaniment", accompaniment)]
    mags = [dsp.magnitude(to_mono(np.asarray(sig, dtype=np.float32)), cfg) for _, sig in signals]
    ref = max(float(mags[0].max()), 1e-12)
    rows = len(signals) + (1 if mask is not None else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.1 * rows), sharex=True, layout="constrained")
    nyquist_khz = sample_rate / 2000.0
    top_khz = min(max_hz / 1000.0, nyquist_khz) if max_hz else nyquist_khz
    duration = to_mono(np.asarray(mixture, dtype=np.float32)).shape[-1] / sample_rate
    for ax, (name, _), mag in zip(axes, signals, mags):
        db = 20 * np.log10(np.maximum(mag, ref * 1e-4) / ref)
        im = ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, extent=[0, duration, 0, nyquist_khz])
        ax.set_ylim(0, top_khz)
        ax.set_ylabel(f"{name}\nkHz", fontsize=8)
    fig.colorbar(im, ax=axes[: len(signals)], label="dB re. the mixture's peak", fraction=0.02)
    if mask is not None:
        mc = mask_config or SpectrogramConfig()
        m = np.asarray(mask, dtype=np.float32)
        ax = axes[-1]
        mdur = m.shape[0] * mc.hop_length / mc.sample_rate
        mask_top = mc.sample_rate / 2000.0
        im2 = ax.imshow(m.T, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1, extent=[0, mdur, 0, mask_top])
        ax.set_ylim(0, min(top_khz, mask_top))
        ax.set_ylabel(f"vocals mask\n(model, to {mask_top:g})\nkHz", fontsize=8)
        fig.colorbar(im2, ax=[ax], fraction=0.02)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def protocol_chart(summary: Any, path: str | os.PathLike, title: str | None = None, table: Any = None) -> Path:
    """:func:`protocol_figure` saved as a PNG at ``path``. Returns ``path``."""
    return _save(protocol_figure(summary, title, table), path)


def protocol_figure(summary: Any, title: str | None = None, table: Any = None) -> Any:
    """The figure of a MUSDB18-protocol evaluation (:mod:`stemforge.evaluate.musdb18`): one panel per
    metric (SDR, SIR, SAR, ISR), per stem one entry per method (every model and estimates
    folder, then the mixture floor and the oracle ceiling). With ``table`` (the per-track table:
    ``method``, ``stem``, ``sdr_frames`` ... ``isr_frames``, each a track's median over its
    frames), a box per method with every track as a point and the summary's median over tracks
    as a black diamond; without it, bars of the summary's medians."""
    plt = _pyplot()
    metrics = [m for m in ("sdr", "sir", "sar", "isr") if m in summary.columns]
    methods = list(dict.fromkeys(summary["method"]))
    stems = [s for s in ("vocals", "accompaniment") if s in set(summary["stem"])]
    if not methods or not stems or not metrics:
        raise StemforgeError("protocol_chart: the summary has no rows to plot")
    cmap = plt.get_cmap("tab10")
    colors = {m: _COLORS.get(m) or cmap(i % 10) for i, m in enumerate(methods)}
    spread = table is not None and len(table) and all(f"{m}_frames" in table.columns for m in metrics)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics) + 1.0, 4.0 if spread else 3.8), sharey=False)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        if spread:
            _spread_panel(ax, table, f"{metric}_frames", methods, stems, colors, _centres(summary, metric), fontsize=6)
            ax.set_title(f"{metric.upper()} (dB): per track, the median of its\n1 s frames; \u25c6 median over tracks", fontsize=8)
        else:
            _bar_panel(ax, summary, metric, methods, stems, colors, fontsize=7)
            ax.set_title(f"{metric.upper()} (dB), median over tracks", fontsize=9)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1.03 if spread else None)
    return fig


def _centres(summary: Any, column: str) -> dict[tuple[str, str], float]:
    """``(method, stem) -> summary[column]``: the value a spread panel marks."""
    if column not in summary.columns:
        return {}
    return {(r["method"], r["stem"]): float(r[column]) for r in summary.to_dict("records")}


def _spread_panel(ax: Any, table: Any, column: str, methods: list, stems: list, colors: dict,
                  centres: dict[tuple[str, str], float], fontsize: int) -> None:
    """One panel of the spread across tracks: per stem one box per method of the per-track
    ``table[column]`` (dB; the box spans the quartiles, the whiskers 1.5 times the
    interquartile range), every track's value as a point (spread sideways by a fixed pattern:
    no random state), the value of ``centres`` as a black diamond, its number above the
    method's highest point. Non-finite
    values are left out; a method with none is drawn as "n/a"."""
    width = 0.8 / len(methods)
    x = np.arange(len(stems))
    for k, m in enumerate(methods):
        for i, s in enumerate(stems):
            rows = table[(table["method"] == m) & (table["stem"] == s)]
            v = np.asarray(rows[column], dtype=float) if len(rows) else np.zeros(0)
            v = v[np.isfinite(v)]
            pos = x[i] + (k - (len(methods) - 1) / 2) * width
            label = m if i == 0 else None
            if not v.size:
                ax.annotate("n/a", (pos, 0.0), ha="center", va="bottom", fontsize=fontsize)
                continue
            ax.boxplot([v], positions=[pos], widths=width * 0.75, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": colors[m], "alpha": 0.35, "edgecolor": colors[m]},
                       medianprops={"color": colors[m]}, whiskerprops={"color": colors[m]}, capprops={"color": colors[m]})
            offsets = (np.arange(v.size) % 7 - 3) / 3.0 * width * 0.3  # a fixed sideways spread
            ax.scatter(pos + offsets, v, s=9, color=colors[m], edgecolors="none", alpha=0.9, zorder=3, label=label)
            centre = centres.get((m, s))
            if centre is not None and np.isfinite(centre):
                ax.scatter([pos], [centre], marker="D", s=22, color="black", zorder=4)
                ax.annotate(f"{centre:.1f}", (pos, max(float(v.max()), centre)), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=fontsize)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(stems)
    ax.set_xlim(-0.5, len(stems) - 0.5)


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
