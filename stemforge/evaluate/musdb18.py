"""The MUSDB18 protocol: BSS Eval v4 on MUSDB18's original 44.1 kHz stereo tracks, as every
published MUSDB18 table (SiSEC 2018, Open-Unmix, Spleeter, Demucs) computes it.

For each track of a subset (MUSDB18 ``.stem.mp4`` or MUSDB18-HQ wav folders, found by the
``musdb`` recipe's discovery):

* the references are the original stems at their own rate and channels: ``vocals`` and
  ``accompaniment = drums + bass + other`` (summed in float64, as musdb's targets);
* the input is the mixture stream (or ``mixture.wav``), as musdb gives it to a separator;
* each method gives an estimate of both stems at the references' shape: a stemforge model
  (the :class:`~stemforge.separate.separator.Separator` at full band, stereo, 44.1 kHz), another
  system's stems on disk (:class:`EstimatesDir`, museval's layout), the ``mixture`` itself as
  both stems (the floor), and the ``oracle`` ideal ratio mask ``|V| / (|V| + |A|)`` on the
  output STFT the Separator applies its masks on (per channel, Hann, n_fft 4096 and hop 1024 at
  44.1 kHz; the mixture's phase): the ceiling of a magnitude mask at that STFT;
* BSS Eval v4 exactly as ``museval.evaluate(references, estimates, win=44100, hop=44100)``:
  image mode, 1 s windows and hop, filters over the whole track
  (:class:`~stemforge.evaluate.bss.BssEvalV4`); the per-track value of a metric is the median
  over its windows ignoring undefined (NaN) ones, and the summary is the median over tracks.

MUSDB18's own subsets: ``test`` (50 songs) and ``train`` (100 songs, of which the 14 of the
official validation list are marked ``split = valid``). Tracks are separated and scored one at
a time, so memory is bounded by one track.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from stemforge.core import audio
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, DatasetLayoutError, StemforgeError
from stemforge.evaluate.bss import FILTER_LENGTH, BssEvalV4, frame_medians
from stemforge.evaluate.datadir import TABLE_COLUMNS as DATADIR_COLUMNS
from stemforge.evaluate.datadir import json_records, write_report_text

PROTOCOL = "musdb18"
#: What every report of this protocol says it is.
PROTOCOL_LABEL = (
    "MUSDB18 protocol: original 44.1 kHz stereo tracks, BSS Eval v4 as museval (image mode, 1 s windows, "
    "median over frames, then over tracks): comparable with published MUSDB18 BSS Eval v4 medians"
)
SUBSETS = ("test", "train")
TARGETS = ("vocals", "accompaniment")
METRICS = ("sdr", "sir", "sar", "isr")
#: Window and hop of the frame-wise metrics (seconds), as museval for MUSDB18.
FRAME_SECONDS = 1.0
#: The output STFT of the oracle mask at 44.1 kHz (the Separator's full-band STFT there).
ORACLE_N_FFT = 4096
ORACLE_HOP = 1024

#: Columns of the per-track table (the DataDir protocol's, with the MUSDB18 subset; the
#: whole-track BSS Eval v3/v2 columns ``sdr``/``sir``/``sar``/``nsdr`` and ``*_v2`` are left
#: empty: the MUSDB18 protocol defines only the frame-wise v4 medians).
TABLE_COLUMNS = [*DATADIR_COLUMNS[:3], "subset", *DATADIR_COLUMNS[3:]]
SUMMARY_COLUMNS = ["method", "stem", "tracks", "sdr", "sir", "sar", "isr"]

#: ``estimate(mixture [channels, samples], sample_rate, progress) -> {"vocals", "accompaniment"}``
#: each ``[channels, samples]`` float.
EstimateFn = Callable[[np.ndarray, int, Callable[[float], None] | None], dict[str, np.ndarray]]
ProgressFn = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class MusdbTrack:
    """One track on disk scored with BSS Eval v4: its name (``Artist - Title``), subset and
    split, and where its streams are (a MUSDB18 track, or a song of a reference folder:
    ``dataset`` "references", subset "")."""

    name: str
    subset: str
    split: str
    source: Any  # a recipes.base.TrackSource
    dataset: str = "musdb"

    @property
    def uid(self) -> str:
        return f"{self.dataset}:{self.name}"


@dataclass
class TrackAudio44:
    """A track's original audio: ``mixture``, ``vocals``, ``accompaniment`` each float32
    ``[channels, samples]`` at ``sample_rate`` (all trimmed to the shortest stream)."""

    mixture: np.ndarray
    vocals: np.ndarray
    accompaniment: np.ndarray
    sample_rate: int


def find_tracks(root: str | Path, subset: str = "test", limit: int | None = None) -> list[MusdbTrack]:
    """The tracks of MUSDB18 ``subset`` under ``root`` (sorted by name; at most ``limit``).

    Raises DatasetLayoutError naming the expected layout when ``root`` is not MUSDB18, or when
    the subset holds no track.
    """
    from stemforge.recipes import musdb

    if subset not in SUBSETS:
        raise StemforgeError(f"MUSDB18 subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    sources = musdb.discover(root)
    out = []
    for src in sources:
        extra = dict(src.extra)
        if extra.get("musdb_subset") != subset:
            continue
        out.append(MusdbTrack(name=src.track_id, subset=subset, split=src.split, source=src))
    if not out:
        raise DatasetLayoutError(f"{Path(root)}: no MUSDB18 track under {subset}/")
    out.sort(key=lambda t: t.name)
    return out[: int(limit)] if limit is not None else out


def load_track(track: MusdbTrack) -> TrackAudio44:
    """Decode a track's mixture and stems at their own rate and channels (the mixture is the
    stems' sum when the track has no mixture file).

    Raises AudioError (file and reason) for a stream that cannot be read, or stems that differ
    in rate, channels, or length by more than the track's ``length_tolerance`` samples.
    """
    src = track.source
    if src.error:
        raise StemforgeError(src.error)
    root = Path(src.root)

    def role(refs) -> tuple[np.ndarray, int]:
        total, rate = None, None
        for ref in refs:
            x, sr = audio.load(root / ref.path, stream=ref.stream)
            if rate is not None and sr != rate:
                raise AudioError(root / ref.path, f"sample rate {sr} Hz differs from the other stems' {rate} Hz")
            if total is not None and x.shape[0] != total.shape[0]:
                raise AudioError(root / ref.path, f"{x.shape[0]} channels, the other stems have {total.shape[0]}")
            rate = sr
            if total is None:
                total = x.astype(np.float64)
            else:
                n = min(total.shape[1], x.shape[1])
                total = total[:, :n] + x[:, :n]
        return total, rate

    voc, sr_v = role(src.vocals)
    acc, sr_a = role(src.accompaniment)
    if src.mixture:
        mix, sr_m = role(src.mixture)
        first = root / src.mixture[0].path
    else:  # no mixture file (a reference folder may hold only the stems): their sum
        n = min(voc.shape[1], acc.shape[1])
        mix, sr_m, first = voc[:, :n] + acc[:, :n], sr_v, root / src.vocals[0].path
    if len({sr_m, sr_v, sr_a}) != 1:
        raise AudioError(first, f"mixture at {sr_m} Hz, vocals at {sr_v} Hz, accompaniment at {sr_a} Hz")
    if not (mix.shape[0] == voc.shape[0] == acc.shape[0]):
        raise AudioError(first, f"channel counts differ: mixture {mix.shape[0]}, vocals {voc.shape[0]}, accompaniment {acc.shape[0]}")
    lengths = {"vocals": (voc.shape[1], src.vocals[0].path), "accompaniment": (acc.shape[1], src.accompaniment[0].path)}
    if src.mixture:
        lengths["mixture"] = (mix.shape[1], src.mixture[0].path)
    ordered = sorted(lengths.items(), key=lambda kv: kv[1][0])
    (short, (n_short, p_short)), (long_, (n_long, p_long)) = ordered[0], ordered[-1]
    if n_long - n_short > src.length_tolerance:
        raise AudioError(
            root / p_short,
            f"{n_short} samples ({n_short / sr_m:.3f} s), {Path(p_long).name} has {n_long} ({n_long / sr_m:.3f} s): "
            f"the {short} and the {long_} must have one length",
        )
    n = min(mix.shape[1], voc.shape[1], acc.shape[1])
    f32 = lambda x: np.ascontiguousarray(x[:, :n], dtype=np.float32)  # noqa: E731
    return TrackAudio44(mixture=f32(mix), vocals=f32(voc), accompaniment=f32(acc), sample_rate=int(sr_m))


# ------------------------------------------------------------------------------------------
# Methods: what produces an estimate of a track
# ------------------------------------------------------------------------------------------


@dataclass
class Method:
    """A row of the table: a name and how it estimates a track.

    ``estimate(track, audio, progress)`` returns ``{"vocals", "accompaniment"}``, each
    ``[channels, samples]`` at the references' shape; it raises StemforgeError with a one-line
    reason when it has nothing valid for this track (the track is then listed as failed for
    this method and the others are still scored).
    """

    name: str
    estimate: Callable[[MusdbTrack, TrackAudio44, Callable[[float], None] | None], dict[str, np.ndarray]]
    kind: str = "model"  # model | estimates | mixture | oracle
    source: str = ""


def model_method(separator: Any, name: str = "model") -> Method:
    """A stemforge :class:`~stemforge.separate.separator.Separator` run on the mixture at full
    band (the output keeps the input's 44.1 kHz and channels)."""

    def estimate(track: MusdbTrack, a: TrackAudio44, progress=None) -> dict[str, np.ndarray]:
        stems = separator.separate(a.mixture, a.sample_rate, progress=progress)
        out = {k: np.asarray(stems[k], dtype=np.float32) for k in TARGETS}
        for k, v in out.items():
            if not np.all(np.isfinite(v)):
                raise StemforgeError(f"{name}: the {k} estimate of {track.name} holds non-finite samples")
        return out

    ckpt = getattr(separator, "checkpoint", None)
    return Method(name=name, estimate=estimate, kind="model", source=str(getattr(ckpt, "path", "")))


def mixture_method() -> Method:
    """The mixture given as both stems (the floor)."""
    return Method(name="mixture", estimate=lambda t, a, p=None: {k: a.mixture for k in TARGETS}, kind="mixture")


def oracle_method(n_fft: int = ORACLE_N_FFT, hop_length: int = ORACLE_HOP) -> Method:
    """The ideal ratio mask ``|V| / (|V| + |A|)`` per channel on a Hann STFT (``n_fft``,
    ``hop_length`` at 44.1 kHz; scaled with the sample rate otherwise), applied to the mixture
    with its phase; the accompaniment gets ``1 - mask`` (the ceiling of a magnitude mask)."""
    from stemforge.core import dsp

    def estimate(track: MusdbTrack, a: TrackAudio44, progress=None) -> dict[str, np.ndarray]:
        scale = a.sample_rate / 44100.0
        nf = max(256, 1 << int(round(math.log2(n_fft * scale))))
        cfg = SpectrogramConfig(sample_rate=a.sample_rate, n_fft=nf, hop_length=max(1, nf * hop_length // n_fft))
        v = np.abs(dsp.stft(a.vocals, cfg))
        acc = np.abs(dsp.stft(a.accompaniment, cfg))
        den = v + acc
        mask = np.where(den > 0, v / np.where(den > 0, den, 1.0), 0.0).astype(np.float32)
        mix = dsp.stft(a.mixture, cfg)
        n = a.mixture.shape[-1]
        voc = dsp.istft(mix * mask, cfg, length=n)
        return {"vocals": voc, "accompaniment": a.mixture - voc}

    return Method(name="oracle", estimate=estimate, kind="oracle", source=f"IRM, Hann STFT {n_fft}/{hop_length} at 44.1 kHz")


class EstimatesDir:
    """Another system's stems on disk: the folders ``stemforge separate`` writes
    (``DIR/<track>/vocals.wav`` and ``accompaniment.wav``, the default ``--filename``
    ``{track}/{stem}.{ext}``; another ``template`` as ``separate``'s ``--filename``, see
    :mod:`stemforge.separate.naming`), or museval's layout ``DIR/<subset>/<track>/...``; any
    format the audio layer decodes (wav, flac, mp3, m4a, ogg). The track name is the one
    ``separate`` gives the track's mixture file (``Artist - Title.stem.mp4`` and
    ``Artist - Title/mixture.wav`` both give ``Artist - Title``). With ``single`` the folder
    itself may hold the stems (``DIR/vocals.wav``: one song). Each stem must have the
    reference's sample rate, channels and length (exactly: no padding, no truncation), else the
    track fails for this method with the file and the reason."""

    def __init__(self, root: str | Path, name: str | None = None, template: str | None = None, single: bool = False):
        from stemforge.separate import naming

        self.root = Path(root)
        if not self.root.is_dir():
            raise StemforgeError(f"{self.root}: estimates folder not found (expected DIR/<track name>/vocals.wav, ...)")
        self.template = template or naming.DEFAULT_TEMPLATE
        naming.check_template(self.template)
        self.name = name or self.root.name
        self.single = single

    def stem_paths(self, track: MusdbTrack) -> dict[str, Path]:
        """``stem -> file`` of ``track``'s estimates. StemforgeError naming the file (or the
        folder) that is missing."""
        tried = []
        for layout in self._layouts(track):
            found = {stem: next((p for p in layout(stem) if p.is_file()), None) for stem in TARGETS}
            if all(found.values()):
                return found  # type: ignore[return-value]
            if any(found.values()):  # this layout holds the track, but not both stems
                missing = next(stem for stem in TARGETS if not found[stem])
                raise StemforgeError(f"{layout(missing)[0]}: missing estimate ({missing}; {found[_other(missing)].name} is there)")
            tried.append(layout("vocals")[0].parent)
        raise StemforgeError(f"{tried[-1] if self.single else tried[0]}: no estimates for this track")

    def _layouts(self, track: MusdbTrack) -> list[Callable[[str], list[Path]]]:
        """Where the stems may be: per layout, ``stem -> candidate files`` (one per suffix of
        :data:`STEM_SUFFIXES`), most specific layout first."""
        template, root = self.template, self.root

        def suffixed(base: Path) -> list[Path]:
            return [base.with_name(base.name + ext) for ext in STEM_SUFFIXES]

        layouts = []
        if track.subset:
            layouts.append(lambda stem: suffixed(root / track.subset / track.name / stem))
        layouts.append(lambda stem: list(dict.fromkeys(root / template.format(track=track.name, stem=stem, ext=ext[1:]) for ext in STEM_SUFFIXES)))
        if self.single:
            layouts.append(lambda stem: suffixed(root / stem))
        return layouts

    def method(self) -> Method:
        def estimate(track: MusdbTrack, a: TrackAudio44, progress=None) -> dict[str, np.ndarray]:
            out = {}
            for stem, path in self.stem_paths(track).items():
                x, sr = audio.load(path)
                ref = a.vocals
                if sr != a.sample_rate:
                    raise StemforgeError(f"{path}: sample rate {sr} Hz, the reference is {a.sample_rate} Hz")
                if x.shape[0] != ref.shape[0]:
                    raise StemforgeError(f"{path}: {x.shape[0]} channel(s), the reference has {ref.shape[0]}")
                if x.shape[1] != ref.shape[1]:
                    raise StemforgeError(
                        f"{path}: {x.shape[1]} samples ({x.shape[1] / sr:.3f} s), the reference has {ref.shape[1]} "
                        f"({ref.shape[1] / sr:.3f} s)"
                    )
                out[stem] = x
            return out

        return Method(name=self.name, estimate=estimate, kind="estimates", source=str(self.root))


#: Suffixes of stem files on disk, in the order they are looked for.
STEM_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg")


def _other(stem: str) -> str:
    return TARGETS[1 - TARGETS.index(stem)]


# ------------------------------------------------------------------------------------------
# Scoring and the report
# ------------------------------------------------------------------------------------------


def track_frames(refs: BssEvalV4, estimates: dict[str, np.ndarray], sample_rate: int, frame_seconds: float = FRAME_SECONDS) -> dict[str, np.ndarray]:
    """Frame-wise v4 metrics of one estimate pair: ``{"sdr", "isr", "sir", "sar"}`` -> float64
    ``[2 (vocals, accompaniment), n_windows]``."""
    est = np.stack([np.asarray(estimates[k], dtype=np.float64).T for k in TARGETS])  # [2, samples, channels]
    win = int(round(frame_seconds * sample_rate))
    return refs.evaluate(est, window=win, hop=win)


def museval_json(track: MusdbTrack, frames: dict[str, np.ndarray], frame_seconds: float) -> dict:
    """museval's per-track document: ``{"targets": [{"name", "frames": [{"time", "duration",
    "metrics": {"SDR", "SIR", "SAR", "ISR"}}]}]}`` (NaN for undefined windows as null)."""
    targets = []
    for j, name in enumerate(TARGETS):
        rows = []
        for t in range(frames["sdr"].shape[1]):
            rows.append(
                {
                    "time": t * frame_seconds,
                    "duration": frame_seconds,
                    "metrics": {m.upper(): _num(frames[m][j, t]) for m in ("sdr", "sir", "sar", "isr")},
                }
            )
        targets.append({"name": name, "frames": rows})
    return {"name": track.name, "subset": track.subset, "targets": targets}


def _num(v: float) -> float | None:
    """A frame's value for JSON: None for NaN (a silent frame) and +-inf (an exact estimate)."""
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class MusdbReport:
    """Result of :func:`evaluate_musdb18`: the per-track table (:data:`TABLE_COLUMNS`), the
    summary (:data:`SUMMARY_COLUMNS`: median over tracks of the per-track medians), what was
    evaluated (``meta``), the per-track frame values by method (``frames``) and the failures
    ``(method, track, reason)``."""

    table: Any
    summary: Any
    meta: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, dict[str, dict]] = field(default_factory=dict)
    failed: list[tuple[str, str, str]] = field(default_factory=list)

    def write(self, csv_path: str | Path, chart: bool = True) -> dict[str, Path]:
        """Write the per-track CSV at ``csv_path``; beside it the summary JSON (``.json``), the
        chart (``.png``) and museval-style per-track JSON under ``<stem>-museval/<method>/
        <subset>/<track>.json``. Returns kind -> path."""
        from stemforge.evaluate import plots

        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {"csv": csv_path, "json": csv_path.with_suffix(".json")}
        write_report_text(csv_path, self.table.to_csv(index=False, float_format="%.4f"))
        doc = {
            "meta": self.meta,
            "summary": json_records(self.summary),
            "tracks": json_records(self.table),
            "failed": [{"method": m, "track": t, "reason": r} for m, t, r in self.failed],
        }
        write_report_text(paths["json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
        base = csv_path.with_name(csv_path.stem + "-museval")
        for method, tracks in self.frames.items():
            for key, body in tracks.items():
                p = base / _safe(method) / body["subset"] / f"{key}.json"
                p.parent.mkdir(parents=True, exist_ok=True)
                write_report_text(p, json.dumps(body, allow_nan=False) + "\n")
        if self.frames:
            paths["museval"] = base
        if chart and len(self.summary):
            paths["png"] = plots.protocol_chart(self.summary, csv_path.with_suffix(".png"), title=self.meta.get("title"), table=self.table)
        return paths


def _safe(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return keep or "method"


def summarize(table: Any, methods: Iterable[str]) -> Any:
    """Median over tracks of the per-track frame medians, per method and stem (museval's
    aggregation); non-finite per-track values are left out."""
    import pandas as pd

    rows = []
    for method in methods:
        for stem in TARGETS:
            part = table[(table["method"] == method) & (table["stem"] == stem)]
            if not len(part):
                continue
            row = {"method": method, "stem": stem, "tracks": int(len(part))}
            for m in METRICS:
                v = np.asarray(part[f"{m}_frames"], dtype=np.float64)
                v = v[np.isfinite(v)]
                row[m] = float(np.median(v)) if v.size else float("nan")
            rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def evaluate_musdb18(
    methods: list[Method],
    root: str | Path,
    subset: str = "test",
    *,
    limit: int | None = None,
    floor_and_ceiling: bool = True,
    frame_seconds: float = FRAME_SECONDS,
    progress: ProgressFn | None = None,
) -> MusdbReport:
    """Score every method on MUSDB18 ``subset`` under ``root`` with the MUSDB18 protocol.

    Args:
        methods: what to score (:func:`model_method`, :meth:`EstimatesDir.method`); with
            ``floor_and_ceiling`` the ``mixture`` and ``oracle`` rows are added.
        limit: the first ``limit`` tracks by name.
        progress: ``progress(event, done, total, fraction)``: event ``"track:<name>"`` as a track
            starts, ``"separate:<method>"`` with the fraction of its separation, ``"failed:<method>:
            <track>:<reason>"``, ``"done:<name>"``.

    A track that cannot be read fails every method (reason listed); a method that has nothing
    valid for a track fails that track only. Raises StemforgeError when nothing was scored.
    """
    _check_methods(methods, floor_and_ceiling)
    tracks = find_tracks(root, subset, limit)
    meta = {
        "protocol": PROTOCOL,
        "label": PROTOCOL_LABEL,
        "root": str(Path(root).resolve()),
        "subset": subset,
        "title": f"MUSDB18 {subset}: median over tracks of per-track median (BSS Eval v4)",
    }
    return evaluate_tracks(methods, tracks, meta, floor_and_ceiling=floor_and_ceiling, frame_seconds=frame_seconds, progress=progress)


def _check_methods(methods: list[Method], floor_and_ceiling: bool) -> None:
    if not methods and not floor_and_ceiling:
        raise StemforgeError("nothing to evaluate: give a model or --estimates")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise StemforgeError(f"two methods share a name: {names}; name them apart")


def evaluate_tracks(
    methods: list[Method],
    tracks: list[MusdbTrack],
    meta: dict[str, Any],
    *,
    floor_and_ceiling: bool = True,
    frame_seconds: float = FRAME_SECONDS,
    progress: ProgressFn | None = None,
) -> MusdbReport:
    """Score every method on ``tracks`` (MUSDB18's, or a reference folder's) with BSS Eval v4
    as museval; ``meta`` (protocol, label, title, where the tracks are) goes into the report's
    meta. See :func:`evaluate_musdb18` for the arguments and the failures."""
    import pandas as pd

    t0 = time.perf_counter()
    _check_methods(methods, floor_and_ceiling)
    all_methods = list(methods) + ([mixture_method(), oracle_method()] if floor_and_ceiling else [])
    note = progress or (lambda *_: None)
    rows: list[dict] = []
    frames_by: dict[str, dict[str, dict]] = {m.name: {} for m in all_methods}
    failed: list[tuple[str, str, str]] = []
    for i, track in enumerate(tracks):
        note(f"track:{track.name}", i, len(tracks), 0.0)
        try:
            a = load_track(track)
            refs = BssEvalV4(np.stack([a.vocals.T, a.accompaniment.T]).astype(np.float64), FILTER_LENGTH)
        except StemforgeError as exc:
            for m in all_methods:
                failed.append((m.name, track.name, str(exc)))
            note(f"failed:*:{track.name}:{exc}", i + 1, len(tracks), 1.0)
            continue
        duration = a.mixture.shape[1] / a.sample_rate
        for m in all_methods:
            try:
                sep_progress = (lambda f, _m=m.name: note(f"separate:{_m}", i, len(tracks), float(f))) if m.kind == "model" else None
                est = m.estimate(track, a, sep_progress)
                fr = track_frames(refs, est, a.sample_rate, frame_seconds)
            except StemforgeError as exc:
                failed.append((m.name, track.name, str(exc)))
                note(f"failed:{m.name}:{track.name}:{exc}", i + 1, len(tracks), 1.0)
                continue
            med = frame_medians(fr)
            defined = (~np.isnan(fr["sdr"])).sum(axis=1)
            for j, stem in enumerate(TARGETS):
                rows.append(
                    {
                        "uid": track.uid,
                        "dataset": track.dataset,
                        "title": track.name,
                        "subset": track.subset,
                        "split": track.split,
                        "duration_s": duration,
                        "method": m.name,
                        "stem": stem,
                        "sdr": float("nan"),
                        "sir": float("nan"),
                        "sar": float("nan"),
                        "nsdr": float("nan"),
                        "sdr_frames": float(med["sdr"][j]),
                        "isr_frames": float(med["isr"][j]),
                        "sir_frames": float(med["sir"][j]),
                        "sar_frames": float(med["sar"][j]),
                        "n_frames_defined": int(defined[j]),
                    }
                )
            frames_by[m.name][track.name] = museval_json(track, fr, frame_seconds)
        note(f"done:{track.name}", i + 1, len(tracks), 1.0)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if not len(table):
        reasons = "; ".join(f"{m} / {t}: {r}" for m, t, r in failed[:3])
        raise StemforgeError(f"{meta.get('root', 'these tracks')}: nothing could be scored ({reasons})")
    summary = summarize(table, [m.name for m in all_methods])
    meta = {
        **meta,
        "tracks": int(table["uid"].nunique()),
        "methods": [{"name": m.name, "kind": m.kind, "source": m.source} for m in all_methods],
        "frame_seconds": frame_seconds,
        "filter_length": FILTER_LENGTH,
        "metrics": "BSS Eval v4 (museval.evaluate, image mode): per-track median over frames, then median over tracks",
        "seconds": time.perf_counter() - t0,
    }
    return MusdbReport(table=table, summary=summary, meta=meta, frames=frames_by, failed=failed)
