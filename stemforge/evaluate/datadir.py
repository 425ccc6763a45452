"""Separation quality: BSS Eval on a DataDir's stored waveforms, with two references.

For every track of a split, the references are the stored 16 kHz mono waveforms (``read_wave``:
vocals, accompaniment) and the input is their sum. Three estimates are scored:

* ``model``: the :class:`~stemforge.separate.separator.Separator` run on that sum;
* ``mixture``: the sum itself given as both stems (the floor: NSDR is measured from it);
* ``oracle``: the ideal ratio mask ``|V| / (|V| + |A|)`` at the DataDir's STFT applied to the
  mixture STFT (mixture phase, as the model's mask): the ceiling of any magnitude mask.

Two families of metrics, because the literature reports both:

* **Whole-track BSS Eval** (``sdr``, ``sir``, ``sar``): ``bss_eval_sources`` of BSS Eval v3
  (512-tap distortion filters over the whole track), computed by ``fast_bss_eval`` (torch
  backend, float64; its numpy backend does not run with numpy 2). ``nsdr`` = SDR(estimate) -
  SDR(mixture as estimate); the summary's ``gnsdr``, ``gsir``, ``gsar`` are their means weighted
  by track duration: what Jansson et al. (ISMIR 2017) report.
* **Frame-wise BSS Eval v4** (``sdr_frames``, ``isr_frames``, ``sir_frames``,
  ``sar_frames``): museval's ``bss_eval`` as SiSEC 2018 / MUSDB18 results use it: image mode,
  distortion filters computed once on the whole track, metrics on 1 s windows (hop 1 s, the last
  partial window dropped), windows where a reference or an estimate is all zero left out, the
  median over the remaining windows per track; the summary takes the median over tracks.
  museval needs ffmpeg binaries at import, so :mod:`stemforge.evaluate.bss` implements the same
  computation (numpy/scipy); tests check it against museval when museval is importable.

This is the DataDir protocol ("16 kHz mono, DataDir references"): right for the NSDR/GNSDR
tables of Jansson et al. (iKala, MedleyDB). Numbers comparable with published MUSDB18 tables
come from the MUSDB18 protocol, :mod:`stemforge.evaluate.musdb18`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError
from stemforge.evaluate.bss import FILTER_LENGTH, BssEvalV4, bss_eval_sources, frame_medians

METHODS = ("model", "mixture", "oracle")
STEMS = ("vocals", "accompaniment")
#: Frame length and hop of the frame-wise metrics (seconds), as museval for MUSDB18.
FRAME_SECONDS = 1.0

#: Columns of the per-track table, in order.
TABLE_COLUMNS = [
    "uid",
    "dataset",
    "title",
    "split",
    "duration_s",
    "method",
    "stem",
    "sdr",
    "sir",
    "sar",
    "nsdr",
    "sdr_frames",
    "isr_frames",
    "sir_frames",
    "sar_frames",
    "n_frames_defined",
]
#: Columns of the summary table (one row per method and stem).
SUMMARY_COLUMNS = [
    "method",
    "stem",
    "tracks",
    "hours",
    "gnsdr",
    "gsir",
    "gsar",
    "sdr_mean",
    "sdr_frames",
    "sir_frames",
    "sar_frames",
]

ProgressFn = Callable[[str, int, int], None]


def ideal_ratio_mask(vocals: np.ndarray, accompaniment: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """``|V| / (|V| + |A|)`` at ``config``'s STFT: float32 ``[n_frames, n_bins]`` (0 where both are 0)."""
    from stemforge.core import dsp

    v = dsp.magnitude(np.asarray(vocals, dtype=np.float32), config)
    a = dsp.magnitude(np.asarray(accompaniment, dtype=np.float32), config)
    den = v + a
    return np.where(den > 0, v / np.where(den > 0, den, 1.0), 0.0).astype(np.float32)


# ------------------------------------------------------------------------------------------
# Tracks and DataDirs
# ------------------------------------------------------------------------------------------


def score_estimates(
    vocals: np.ndarray,
    accompaniment: np.ndarray,
    estimates: dict[str, np.ndarray],
    sample_rate: int,
    frame_seconds: float = FRAME_SECONDS,
    v4: BssEvalV4 | None = None,
) -> dict[str, dict[str, float]]:
    """All metrics of one estimate pair against the references (all ``[samples]``, mono).

    ``v4``: a :class:`BssEvalV4` of ``[vocals, accompaniment]`` to reuse across estimates.
    Returns ``{stem: {"sdr", "sir", "sar", "sdr_frames", "isr_frames", "sir_frames",
    "sar_frames", "n_frames_defined"}}``.
    """
    refs = np.stack([vocals, accompaniment]).astype(np.float64)
    ests = np.stack([estimates["vocals"], estimates["accompaniment"]]).astype(np.float64)
    whole = bss_eval_sources(refs, ests)
    win = max(1, int(round(frame_seconds * sample_rate)))
    frames = (v4 or BssEvalV4(refs)).evaluate(ests, window=win, hop=win)
    med = frame_medians(frames)
    out = {}
    for s, stem in enumerate(STEMS):
        out[stem] = {
            "sdr": float(whole["sdr"][s]),
            "sir": float(whole["sir"][s]),
            "sar": float(whole["sar"][s]),
            "sdr_frames": float(med["sdr"][s]),
            "isr_frames": float(med["isr"][s]),
            "sir_frames": float(med["sir"][s]),
            "sar_frames": float(med["sar"][s]),
            "n_frames_defined": int(np.sum(~np.isnan(frames["sdr"][s]))),
        }
    return out


def evaluate_track(
    separator: Any,
    vocals: np.ndarray,
    accompaniment: np.ndarray,
    sample_rate: int,
    config: SpectrogramConfig | None = None,
    frame_seconds: float = FRAME_SECONDS,
) -> list[dict[str, Any]]:
    """Score model, mixture and oracle on one track (mono ``[samples]`` references).

    ``config`` is the STFT of the oracle mask (default: the separator's). Returns one dict per
    method and stem with the metric columns of :data:`TABLE_COLUMNS` (``nsdr`` included).
    """
    from stemforge.separate.separator import Separator

    v = np.asarray(vocals, dtype=np.float32)
    a = np.asarray(accompaniment, dtype=np.float32)
    if v.ndim != 1 or v.shape != a.shape:
        raise StemforgeError(f"evaluate_track: vocals {v.shape} and accompaniment {a.shape} must be equal-length mono signals")
    mix = v + a
    cfg = config or separator.config
    estimates: dict[str, dict[str, np.ndarray]] = {}
    est = separator.separate(mix, sample_rate)
    estimates["model"] = {k: est[k][: len(mix)] for k in STEMS}
    estimates["mixture"] = {"vocals": mix, "accompaniment": mix}
    irm = ideal_ratio_mask(v, a, cfg) if sample_rate == cfg.sample_rate else None
    if irm is None:
        raise StemforgeError(
            f"evaluate_track: the oracle mask needs the waveforms at {cfg.sample_rate} Hz, got {sample_rate} Hz"
        )
    oracle = Separator.from_mask_fn(lambda _x: irm, cfg, window_frames=None)
    est = oracle.separate(mix, sample_rate)
    estimates["oracle"] = {k: est[k][: len(mix)] for k in STEMS}
    v4 = BssEvalV4(np.stack([v, a]))
    scores = {m: score_estimates(v, a, estimates[m], sample_rate, frame_seconds, v4) for m in METHODS}
    rows = []
    for m in METHODS:
        for stem in STEMS:
            r = {"method": m, "stem": stem, **scores[m][stem]}
            r["nsdr"] = r["sdr"] - scores["mixture"][stem]["sdr"]
            rows.append(r)
    return rows


@dataclass
class EvaluationReport:
    """Result of :func:`evaluate_datadir`.

    Attributes:
        table: one row per track, method and stem (:data:`TABLE_COLUMNS`).
        summary: one row per method and stem (:data:`SUMMARY_COLUMNS`).
        meta: what was evaluated (model, DataDir, split, configs, timing).
        failed: ``(uid, reason)`` of tracks that could not be evaluated.
    """

    table: Any
    summary: Any
    meta: dict[str, Any] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def write(self, csv_path: str | Path, chart: bool = True) -> dict[str, Path]:
        """Write the per-track CSV at ``csv_path``, and beside it a JSON (meta, summary, tracks)
        and a chart PNG of the spread across tracks (same name, ``.json`` / ``.png``;
        :func:`~stemforge.evaluate.plots.metrics_chart`). Returns kind -> path."""
        from stemforge.evaluate import plots

        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        paths = {"csv": csv_path, "json": csv_path.with_suffix(".json")}
        write_report_text(csv_path, self.table.to_csv(index=False, float_format="%.4f"))
        doc = {
            "meta": self.meta,
            "summary": json_records(self.summary),
            "tracks": json_records(self.table),
            "failed": [{"uid": u, "reason": r} for u, r in self.failed],
        }
        write_report_text(paths["json"], json.dumps(doc, indent=2, allow_nan=True) + "\n")
        if chart and len(self.summary):
            paths["png"] = plots.metrics_chart(self.summary, csv_path.with_suffix(".png"), title=self.meta.get("title"), table=self.table)
        return paths


def json_records(df: Any) -> list[dict]:
    """A table's rows as JSON-ready dicts: a non-finite float (NaN, +-inf) becomes None, since
    JSON has no such numbers."""
    recs = df.to_dict(orient="records")
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in recs]


def write_report_text(path: Path, text: str) -> None:
    """Write a report file atomically; a failure is a StemforgeError naming the file."""
    from stemforge.core import files

    try:
        files.write_text(path, text)
    except OSError as exc:
        raise StemforgeError(f"{path}: cannot write ({exc})") from None


def summarize(table: Any) -> Any:
    """The summary table (:data:`SUMMARY_COLUMNS`) of a per-track table.

    ``gnsdr``/``gsir``/``gsar``: duration-weighted means of the whole-track NSDR/SIR/SAR;
    ``sdr_mean``: plain mean of the whole-track SDR; ``*_frames``: median over tracks of the
    per-track frame medians (MUSDB18's convention). Non-finite values are left out.
    """
    import pandas as pd

    rows = []
    if len(table) == 0:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    for method in METHODS:
        for stem in STEMS:
            part = table[(table["method"] == method) & (table["stem"] == stem)]
            if not len(part):
                continue
            rows.append(
                {
                    "method": method,
                    "stem": stem,
                    "tracks": int(len(part)),
                    "hours": float(part["duration_s"].sum()) / 3600.0,
                    "gnsdr": _weighted(part["nsdr"], part["duration_s"]),
                    "gsir": _weighted(part["sir"], part["duration_s"]),
                    "gsar": _weighted(part["sar"], part["duration_s"]),
                    "sdr_mean": _weighted(part["sdr"], None),
                    "sdr_frames": _median(part["sdr_frames"]),
                    "sir_frames": _median(part["sir_frames"]),
                    "sar_frames": _median(part["sar_frames"]),
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _weighted(values: Any, weights: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any() or w[ok].sum() <= 0:
        return float("nan")
    return float(np.sum(v[ok] * w[ok]) / np.sum(w[ok]))


def _median(values: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if v.size else float("nan")


def evaluate_datadir(
    separator: Any,
    datadir: Any,
    split: str | None = "test",
    *,
    limit: int | None = None,
    uids: list[str] | None = None,
    frame_seconds: float = FRAME_SECONDS,
    progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Evaluate ``separator`` on the tracks of ``datadir`` (a :class:`~stemforge.store.DataDir`).

    Args:
        separator: a :class:`~stemforge.separate.separator.Separator`.
        split: "train", "valid", "test", or None / "all" for every track (duplicates left out).
        limit: evaluate at most this many tracks (in manifest order).
        uids: evaluate only these tracks.
        progress: ``progress(event, done, total)`` with event "track" or "failed:<uid>:<reason>".

    Tracks whose audio cannot be read or scored are listed in ``failed``; the others are
    scored. Raises StemforgeError when no track is selected.
    """
    import pandas as pd

    t0 = time.perf_counter()
    cfg = datadir.config
    df = datadir.select(split=None if split in (None, "all") else split)
    if uids is not None:
        df = df[df["uid"].isin(list(uids))]
    if limit is not None:
        df = df.head(int(limit))
    if not len(df):
        held = datadir.select()["split"].value_counts()
        have = ", ".join(f"{name} ({held[name]} tracks)" for name in ("train", "valid", "test") if name in held) or "none"
        raise StemforgeError(f"{datadir.path}: no track in split {split!r} to evaluate; splits held: {have}")
    reader = datadir.reader()
    note = progress or (lambda *_: None)
    rows: list[dict] = []
    failed: list[tuple[str, str]] = []
    total = len(df)
    try:
        for i, rec in enumerate(df.to_dict(orient="records")):
            uid = rec["uid"]
            try:
                v = reader.read_wave(rec["shard"], rec["key"], "vocals")
                a = reader.read_wave(rec["shard"], rec["key"], "accompaniment")
                n = min(len(v), len(a))
                if n == 0 or not np.any(v[:n]) or not np.any(a[:n]):
                    raise StemforgeError("vocals or accompaniment is silent: BSS Eval is undefined")
                track_rows = evaluate_track(separator, v[:n], a[:n], cfg.sample_rate, cfg, frame_seconds)
            except StemforgeError as exc:
                failed.append((uid, str(exc)))
                note(f"failed:{uid}:{exc}", i + 1, total)
                continue
            base = {
                "uid": uid,
                "dataset": rec.get("dataset", ""),
                "title": f"{rec.get('artist', '')} - {rec.get('title', '')}".strip(" -"),
                "split": rec.get("split", ""),
                "duration_s": n / cfg.sample_rate,
            }
            rows += [{**base, **r} for r in track_rows]
            note("track", i + 1, total)
    finally:
        reader.close()
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    summary = summarize(table)
    meta = {
        "datadir": str(Path(datadir.path).resolve()),
        "split": split or "all",
        "tracks": int(table["uid"].nunique()) if len(table) else 0,
        "failed": len(failed),
        "sample_rate": cfg.sample_rate,
        "datadir_spectrogram_config": cfg.hash,
        "model_spectrogram_config": separator.config.hash,
        "frame_seconds": frame_seconds,
        "filter_length": FILTER_LENGTH,
        "metrics": "whole-track bss_eval_sources (fast_bss_eval) and frame-wise BSS Eval v4 (museval's method)",
        "hard_mask": bool(getattr(separator, "hard_mask", False)),
        "seconds": time.perf_counter() - t0,
    }
    ckpt = getattr(separator, "checkpoint", None)
    if ckpt is not None:
        meta["model"] = str(ckpt.path)
        meta["model_step"] = ckpt.step
        meta["model_target"] = ckpt.target
    return EvaluationReport(table=table, summary=summary, meta=meta, failed=failed)
