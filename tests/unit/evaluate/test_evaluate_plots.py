"""The evaluation charts show the spread across tracks: every track's value is a point, the
summary's value is marked, per stem and method."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from stemforge.evaluate import plots
from stemforge.evaluate.datadir import summarize


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for t in range(9):
        for stem in ("vocals", "accompaniment"):
            mix = rng.normal(-2, 2)
            for method, gain in (("model", 7.0), ("mixture", 0.0), ("oracle", 13.0)):
                sdr = mix + gain + (rng.normal(0, 2) if gain else 0.0)
                rows.append({"uid": f"t{t}", "duration_s": 20.0 + t, "method": method, "stem": stem, "sdr": sdr,
                             "sir": sdr + 4, "sar": sdr + 1, "nsdr": sdr - mix, "sdr_frames": sdr + rng.normal(0, 1),
                             "isr_frames": sdr + 3, "sir_frames": sdr + 5, "sar_frames": sdr + 2})
    return pd.DataFrame(rows)


def _points(ax) -> list[np.ndarray]:
    """The y values of each point cloud of ``ax``, in drawing order (the diamonds left out)."""
    return [c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets()) > 1]


def _diamonds(ax) -> list[float]:
    return [float(c.get_offsets()[0, 1]) for c in ax.collections if len(c.get_offsets()) == 1]


def test_datadir_chart_plots_every_track_and_marks_the_summary(table):
    import matplotlib.pyplot as plt

    summary = summarize(table)
    fig = plots.metrics_figure(summary, "test split", table=table)
    try:
        axes = fig.axes
        assert [ax.get_title().split(" ")[0] for ax in axes] == ["NSDR", "SDR", "SDR"]
        for ax, column, centre in zip(axes, ("nsdr", "sdr", "sdr_frames"), ("gnsdr", "sdr_mean", "sdr_frames")):
            clouds, marks = _points(ax), _diamonds(ax)
            expected = [table[(table["method"] == m) & (table["stem"] == s)][column].to_numpy()
                        for m in ("model", "mixture", "oracle") for s in ("vocals", "accompaniment")]
            assert len(clouds) == len(expected) == 6
            for got, want in zip(clouds, expected):
                np.testing.assert_allclose(got, want)  # one point per track, the track's value
            want_marks = [float(summary[(summary["method"] == m) & (summary["stem"] == s)][centre].iloc[0])
                          for m in ("model", "mixture", "oracle") for s in ("vocals", "accompaniment")]
            np.testing.assert_allclose(marks, want_marks)
    finally:
        plt.close(fig)


def test_datadir_chart_leaves_out_frames_that_were_not_computed(table):
    import matplotlib.pyplot as plt

    t = table.assign(sdr_frames=np.nan)
    fig = plots.metrics_figure(summarize(t), table=t)
    try:
        assert len(fig.axes) == 2
    finally:
        plt.close(fig)


def test_protocol_chart_plots_every_track(table):
    import matplotlib.pyplot as plt

    from stemforge.evaluate.musdb18 import summarize as protocol_summary

    summary = protocol_summary(table, ["model", "mixture", "oracle"])
    fig = plots.protocol_figure(summary, "musdb18", table=table)
    try:
        assert len(fig.axes) == 4
        for ax, metric in zip(fig.axes, ("sdr", "sir", "sar", "isr")):
            clouds = _points(ax)
            assert len(clouds) == 6 and all(len(c) == 9 for c in clouds)
            np.testing.assert_allclose(clouds[0], table[(table["method"] == "model") & (table["stem"] == "vocals")][f"{metric}_frames"])
            np.testing.assert_allclose(_diamonds(ax)[0], summary[(summary["method"] == "model") & (summary["stem"] == "vocals")][metric].iloc[0])
    finally:
        plt.close(fig)


def test_the_report_writes_the_spread_chart(table, tmp_path):
    from stemforge.evaluate.datadir import EvaluationReport

    paths = EvaluationReport(table=table, summary=summarize(table), meta={"title": "t"}).write(tmp_path / "e.csv")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_separation_figure_shows_the_true_vocals_and_the_full_band():
    """The demo's figure: a true-vocals panel above the estimate, every spectrogram up to the
    stems' Nyquist (22.05 kHz here), the mask up to the model's (8 kHz)."""
    import matplotlib.pyplot as plt

    from stemforge.core.config import SpectrogramConfig

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 44100)).astype(np.float32) * 0.1
    mask = np.full((32, 513), 0.5, dtype=np.float32)
    fig = plots.separation_spectrograms(x, 0.5 * x, 0.5 * x, 44100, mask=mask, mask_config=SpectrogramConfig(),
                                        true_vocals=0.4 * x)
    try:
        panels = fig.axes[:5]  # the panels; the colour bars come after
        labels = [ax.get_ylabel().split("\n")[0] for ax in panels]
        assert labels == ["mixture", "true vocals", "vocals", "accompaniment", "vocals mask"]
        for ax in panels[:4]:
            assert ax.get_ylim() == (0.0, 22.05) and ax.get_ylabel().endswith("kHz")
        assert panels[4].get_ylim() == (0.0, 8.0)
        assert panels[-1].get_xlabel() == "time (s)"
    finally:
        plt.close(fig)
