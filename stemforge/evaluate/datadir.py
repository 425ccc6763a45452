"""Separation quality: BSS Eval on a DataDir's stored waveforms, with two references.

For every track of a split, the references are the stored 16 kHz mono waveforms (``read_wave``:
vocals, accompaniment) and the input is their sum. Three estimates are scored:

* ``model``: the :class:`~stemforge.separate.separator.Separator` run on that sum;
* ``mixture``: the sum itself given as both stems (the floor: NSDR is measured from it);
* ``oracle``: the ideal ratio mask ``|V| / (|V| + |A|)`` at the DataDir's STFT applied to the
  mixture STFT (mixture phase, as the model's mask): the ceiling of any magnitude mask.

Metrics, because the literature reports these (``meta.bss_eval`` of the report names them):

* **Whole-clip BSS Eval v3** (``sdr``, ``sir``, ``sar``): ``bss_eval_sources`` as
  ``mir_eval.separation.bss_eval_sources`` computes it (512-tap distortion filters fitted over
  the whole clip, vocals and accompaniment evaluated together, no permutation), computed by
  :mod:`stemforge.evaluate.bss` (one factorization of the references per clip for all three
  estimates; within 1e-6 dB of mir_eval, ``tests/integration/test_evaluate_commands.py``). ``nsdr`` =
  SDR(estimate) - SDR(mixture as estimate); the summary's ``gnsdr``, ``gsir``, ``gsar`` are
  their means weighted by clip duration: what Jansson et al. (ISMIR 2017) and Huang et al.
  (ICASSP 2014, TASLP 2015) report.
* **Whole-clip BSS Eval v2, gain only** (``sdr_v2``, ``sir_v2``, ``sar_v2``, ``nsdr_v2``;
  summary ``gnsdr_v2``, ``gsir_v2``, ``gsar_v2``): the same formulas with a single gain as the
  allowed distortion (``bss_decomp_gain`` of the BSS_EVAL 2.0 toolbox, which Huang et al.'s
  MIR-1K code computes beside BSS Eval 3.0). Cheap (a 2 x 2 system per clip).
* **Frame-wise BSS Eval v4** (``sdr_frames``, ``isr_frames``, ``sir_frames``,
  ``sar_frames``; only with ``frames=True``, ``stemforge evaluate --frames``): museval's
  ``bss_eval`` as SiSEC 2018 / MUSDB18 results use it: image mode, distortion filters computed
  once on the whole track, metrics on 1 s windows (hop 1 s, the last partial window dropped),
  windows where a reference or an estimate is all zero left out, the median over the remaining
  windows per track; the summary takes the median over tracks. museval needs ffmpeg binaries at
  import, so :mod:`stemforge.evaluate.bss` implements the same computation (numpy/scipy); tests
  check it against museval when museval is importable.

Clips are scored one per worker process (``workers``; each with one BLAS and one torch thread),
results in manifest order whatever the number of workers.

This is the DataDir protocol ("16 kHz mono, DataDir references"): right for the NSDR/GNSDR
tables of Jansson et al. (iKala, MedleyDB) and Huang et al. (MIR-1K; ingest it with
``--split-rule huang2014``). Numbers comparable with published MUSDB18 tables come from the
MUSDB18 protocol, :mod:`stemforge.evaluate.musdb18`.
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
from stemforge.evaluate.bss import FILTER_LENGTH, GAIN_ONLY, BssEvalV4, frame_medians

METHODS = ("model", "mixture", "oracle")
STEMS = ("vocals", "accompaniment")
#: Frame length and hop of the frame-wise metrics (seconds), as museval for MUSDB18.
FRAME_SECONDS = 1.0
#: What the whole-clip metrics are, as every report names them (``meta.bss_eval``).
BSS_EVAL_V3 = (
    "BSS Eval v3 bss_eval_sources as mir_eval.separation.bss_eval_sources: 512-tap distortion filters "
    "over the whole clip, vocals and accompaniment evaluated together, no permutation"
)
BSS_EVAL_V2 = "BSS Eval v2 gain-only decomposition (bss_decomp_gain + bss_crit of BSS_EVAL 2.0, as in Huang et al.'s MIR-1K code)"
BSS_EVAL_FRAMES = "BSS Eval v4 as museval (image mode, 1 s frames): per-clip median over frames, median over clips"

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
    "sdr_v2",
    "sir_v2",
    "sar_v2",
    "nsdr_v2",
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
    "gnsdr_v2",
    "gsir_v2",
    "gsar_v2",
    "sdr_mean",
    "sdr_frames",
    "sir_frames",
    "sar_frames",
]
_FRAME_KEYS = ("sdr_frames", "isr_frames", "sir_frames", "sar_frames", "n_frames_defined")

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


class ClipReferences:
    """The references of one clip (mono ``vocals``, ``accompaniment`` ``[samples]``) factorized
    once for every estimate scored against them: BSS Eval v3 (512 taps, also the frame-wise
    v4 filters) and v2 gain-only."""

    def __init__(self, vocals: np.ndarray, accompaniment: np.ndarray):
        self.refs = np.stack([vocals, accompaniment]).astype(np.float64)
        self.v3 = BssEvalV4(self.refs, FILTER_LENGTH)
        self.v2 = BssEvalV4(self.refs, GAIN_ONLY)


def score_estimates(
    vocals: np.ndarray,
    accompaniment: np.ndarray,
    estimates: dict[str, np.ndarray],
    sample_rate: int,
    frame_seconds: float = FRAME_SECONDS,
    references: ClipReferences | None = None,
    *,
    frames: bool = True,
) -> dict[str, dict[str, float]]:
    """All metrics of one estimate pair against the references (all ``[samples]``, mono).

    ``references``: a :class:`ClipReferences` of ``vocals``, ``accompaniment`` to reuse across
    estimates. ``frames``: also the frame-wise v4 medians (else NaN). Returns ``{stem: {"sdr",
    "sir", "sar", "sdr_v2", "sir_v2", "sar_v2", "sdr_frames", "isr_frames", "sir_frames",
    "sar_frames", "n_frames_defined"}}``.
    """
    refs = references or ClipReferences(vocals, accompaniment)
    ests = np.stack([estimates["vocals"], estimates["accompaniment"]]).astype(np.float64)
    projection = refs.v3.project(ests)
    whole = projection.sources()
    gain = refs.v2.project(ests).sources()
    if frames:
        win = max(1, int(round(frame_seconds * sample_rate)))
        fr = projection.frames(window=win, hop=win)
        med = frame_medians(fr)
    out = {}
    for s, stem in enumerate(STEMS):
        row = {
            "sdr": float(whole["sdr"][s]),
            "sir": float(whole["sir"][s]),
            "sar": float(whole["sar"][s]),
            "sdr_v2": float(gain["sdr"][s]),
            "sir_v2": float(gain["sir"][s]),
            "sar_v2": float(gain["sar"][s]),
        }
        if frames:
            row.update(
                sdr_frames=float(med["sdr"][s]),
                isr_frames=float(med["isr"][s]),
                sir_frames=float(med["sir"][s]),
                sar_frames=float(med["sar"][s]),
                n_frames_defined=int(np.sum(~np.isnan(fr["sdr"][s]))),
            )
        else:
            row.update({k: float("nan") for k in _FRAME_KEYS})
        out[stem] = row
    return out


def evaluate_track(
    separator: Any,
    vocals: np.ndarray,
    accompaniment: np.ndarray,
    sample_rate: int,
    config: SpectrogramConfig | None = None,
    frame_seconds: float = FRAME_SECONDS,
    *,
    frames: bool = True,
) -> list[dict[str, Any]]:
    """Score model, mixture and oracle on one track (mono ``[samples]`` references).

    ``config`` is the STFT of the oracle mask (default: the separator's). ``frames``: also the
    frame-wise v4 medians. Returns one dict per method and stem with the metric columns of
    :data:`TABLE_COLUMNS` (``nsdr``, ``nsdr_v2`` included).
    """
    from stemforge.separate.separator import Separator

    v = np.asarray(vocals, dtype=np.float32)
    a = np.asarray(accompaniment, dtype=np.float32)
    if v.ndim != 1 or v.shape != a.shape:
        raise StemforgeError(f"evaluate_track: vocals {v.shape} and accompaniment {a.shape} must be equal-length mono signals")
    mix = v + a
    cfg = config or separator.config
    if sample_rate != cfg.sample_rate:
        raise StemforgeError(
            f"evaluate_track: the oracle mask needs the waveforms at {cfg.sample_rate} Hz, got {sample_rate} Hz"
        )
    estimates: dict[str, dict[str, np.ndarray]] = {}
    est = separator.separate(mix, sample_rate)
    estimates["model"] = {k: est[k][: len(mix)] for k in STEMS}
    estimates["mixture"] = {"vocals": mix, "accompaniment": mix}
    irm = ideal_ratio_mask(v, a, cfg)
    oracle = Separator.from_mask_fn(lambda _x: irm, cfg, window_frames=None)
    est = oracle.separate(mix, sample_rate)
    estimates["oracle"] = {k: est[k][: len(mix)] for k in STEMS}
    refs = ClipReferences(v, a)
    scores = {m: score_estimates(v, a, estimates[m], sample_rate, frame_seconds, refs, frames=frames) for m in METHODS}
    rows = []
    for m in METHODS:
        for stem in STEMS:
            r = {"method": m, "stem": stem, **scores[m][stem]}
            r["nsdr"] = r["sdr"] - scores["mixture"][stem]["sdr"]
            r["nsdr_v2"] = r["sdr_v2"] - scores["mixture"][stem]["sdr_v2"]
            rows.append(r)
    return rows


@dataclass
class EvaluationReport:
    """Result of :func:`evaluate_datadir`.

    Attributes:
        table: one row per track, method and stem (:data:`TABLE_COLUMNS`).
        summary: one row per method and stem (:data:`SUMMARY_COLUMNS`).
        meta: what was evaluated (model, DataDir, split, configs, timing: ``seconds`` wall,
            ``clip_cpu_seconds`` the CPU time the clips took in the processes that scored them).
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

    ``gnsdr``/``gsir``/``gsar``: duration-weighted means of the whole-track NSDR/SIR/SAR (v3;
    ``*_v2`` the same of the gain-only v2 figures);
    ``sdr_mean``: plain mean of the whole-track SDR; ``*_frames``: median over tracks of the
    per-track frame medians (MUSDB18's convention). Non-finite values are left out; a metric
    column the table lacks gives NaN.
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
            # a column the table lacks (a table made before it existed) summarizes to NaN
            col = lambda name, part=part: part[name] if name in part else np.full(len(part), np.nan)  # noqa: E731
            rows.append(
                {
                    "method": method,
                    "stem": stem,
                    "tracks": int(len(part)),
                    "hours": float(part["duration_s"].sum()) / 3600.0,
                    "gnsdr": _weighted(col("nsdr"), part["duration_s"]),
                    "gsir": _weighted(col("sir"), part["duration_s"]),
                    "gsar": _weighted(col("sar"), part["duration_s"]),
                    "gnsdr_v2": _weighted(col("nsdr_v2"), part["duration_s"]),
                    "gsir_v2": _weighted(col("sir_v2"), part["duration_s"]),
                    "gsar_v2": _weighted(col("sar_v2"), part["duration_s"]),
                    "sdr_mean": _weighted(col("sdr"), None),
                    "sdr_frames": _median(col("sdr_frames")),
                    "sir_frames": _median(col("sir_frames")),
                    "sar_frames": _median(col("sar_frames")),
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
    frames: bool = False,
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> EvaluationReport:
    """Evaluate ``separator`` on the tracks of ``datadir`` (a :class:`~stemforge.store.DataDir`).

    Args:
        separator: a :class:`~stemforge.separate.separator.Separator` (picklable when
            ``workers`` > 1: one from a checkpoint is).
        split: "train", "valid", "test", or None / "all" for every track (duplicates left out).
        limit: evaluate at most this many tracks (in manifest order).
        uids: evaluate only these tracks.
        frames: also the frame-wise BSS Eval v4 medians (``*_frames`` columns; NaN otherwise).
        workers: processes scoring tracks at once, each with one torch and one BLAS thread
            (1: in this process, BLAS limited to one thread while scoring).
        progress: ``progress(event, done, total)`` with event "track" or "failed:<uid>:<reason>".

    Tracks whose audio cannot be read or scored are listed in ``failed``; the others are
    scored, in manifest order whatever ``workers``. Raises StemforgeError when no track is
    selected.
    """
    import pandas as pd

    from stemforge.core.parallel import map_ordered

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
    if int(workers) < 1:
        raise StemforgeError(f"workers must be at least 1, got {workers}")
    note = progress or (lambda *_: None)
    rows: list[dict] = []
    failed: list[tuple[str, str]] = []
    clip_cpu = 0.0
    records = [
        {k: rec.get(k, "") for k in ("uid", "shard", "key", "dataset", "artist", "title", "split")}
        for rec in df.to_dict(orient="records")
    ]
    total = len(records)
    workers = min(int(workers), total)
    setup = (separator, str(datadir.path), cfg, frame_seconds, frames, workers > 1)
    try:
        results = map_ordered(_score_record, records, workers=workers, initializer=_init_scorer, initargs=setup)
        for i, (rec, result, exc) in enumerate(results):
            uid = rec["uid"]
            if exc is not None:
                if not isinstance(exc, StemforgeError):
                    raise exc
                failed.append((uid, str(exc)))
                note(f"failed:{uid}:{exc}", i + 1, total)
                continue
            track_rows, cpu = result
            rows += track_rows
            clip_cpu += cpu
            note("track", i + 1, total)
    finally:
        _close_scorer()
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
        "frame_seconds": frame_seconds if frames else None,
        "filter_length": FILTER_LENGTH,
        "bss_eval": {"v3": BSS_EVAL_V3, "v2": BSS_EVAL_V2, "frames": BSS_EVAL_FRAMES if frames else None},
        "metrics": (
            "gnsdr/gsir/gsar: duration-weighted means over clips of whole-clip NSDR/SIR/SAR (BSS Eval v3); "
            "*_v2: the same with BSS Eval v2 gain-only"
            + ("; *_frames: median over clips of the median over 1 s frames (BSS Eval v4)" if frames else "")
        ),
        "hard_mask": bool(getattr(separator, "hard_mask", False)),
        "mask_power": getattr(separator, "mask_power", None),
        "wiener_iterations": int(getattr(separator, "wiener_iterations", 0)),
        "workers": workers,
        "seconds": time.perf_counter() - t0,
        "clip_cpu_seconds": clip_cpu,
    }
    ckpt = getattr(separator, "checkpoint", None)
    if ckpt is not None:
        meta["model"] = str(ckpt.path)
        meta["model_step"] = ckpt.step
        meta["model_target"] = ckpt.target
    return EvaluationReport(table=table, summary=summary, meta=meta, failed=failed)


# ------------------------------------------------------------------------------------------
# One scorer per process (map_ordered's initializer), so that a worker opens the DataDir and
# receives the separator once, not once per track.
# ------------------------------------------------------------------------------------------

_SCORER: dict[str, Any] = {}


def _init_scorer(separator: Any, path: str, config: SpectrogramConfig, frame_seconds: float, frames: bool, in_worker: bool) -> None:
    # numpy and scipy each bring their own OpenBLAS; threadpool_limits limits only the libraries
    # loaded when it is called, so scipy.linalg is imported first
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    from stemforge.store import DataDir

    _close_scorer()
    if in_worker:  # one process per core: one thread each
        import torch

        torch.set_num_threads(1)
    _SCORER.update(
        separator=separator,
        reader=DataDir.open(path).reader(),
        config=config,
        frame_seconds=frame_seconds,
        frames=frames,
        # the reference systems are small: several BLAS threads only contend (and spin under load)
        blas=threadpool_limits(limits=1, user_api="blas"),
    )


def _close_scorer() -> None:
    reader, blas = _SCORER.pop("reader", None), _SCORER.pop("blas", None)
    _SCORER.clear()
    if reader is not None:
        reader.close()
    if blas is not None:
        blas.restore_original_limits()


def _score_record(rec: dict) -> tuple[list[dict], float]:
    """The table rows of one manifest record and the CPU seconds they took in this process
    (StemforgeError when it cannot be scored)."""
    cpu0 = time.process_time()
    reader, cfg = _SCORER["reader"], _SCORER["config"]
    v = reader.read_wave(rec["shard"], rec["key"], "vocals")
    a = reader.read_wave(rec["shard"], rec["key"], "accompaniment")
    n = min(len(v), len(a))
    if n == 0 or not np.any(v[:n]) or not np.any(a[:n]):
        raise StemforgeError("vocals or accompaniment is silent: BSS Eval is undefined")
    track_rows = evaluate_track(
        _SCORER["separator"], v[:n], a[:n], cfg.sample_rate, cfg, _SCORER["frame_seconds"], frames=_SCORER["frames"]
    )
    base = {
        "uid": rec["uid"],
        "dataset": rec["dataset"],
        "title": f"{rec['artist']} - {rec['title']}".strip(" -"),
        "split": rec["split"],
        "duration_s": n / cfg.sample_rate,
    }
    return [{**base, **r} for r in track_rows], time.process_time() - cpu0
