"""Cross-song remixes: the vocals of one train song over the accompaniment of another.

The seed recipe grew its training set to about 17 hours this way. A remix is made in the
waveform domain (``|A + B|`` is not ``|A| + |B|``): the stored waveforms of a vocal segment
and an accompaniment segment (at the DataDir's rate and channels: 16 kHz mono at the seed
geometry, 44.1 kHz stereo at fullband) are summed, and the sum goes through the same STFT and
normalization as every ingested track (:func:`stemforge.ingest.engine.compute_arrays`), so a
remix has the geometry of the DataDir it is stored in.

Two stages:

* **planning** (:class:`RemixPlanner`) turns the train rows of a DataDir into a sequence of
  :class:`RemixPlan` (which vocal track, which accompaniment track, offsets, gains, pitch). Plan
  ``n`` depends only on the sources, the options, the seed and ``n``: its random draws come
  from ``numpy.random.default_rng([seed, n])`` and the choice of sources from a deterministic
  least-used-first schedule over plans ``0..n-1``. So ``augment --hours 6`` followed by
  ``--hours 8`` stores exactly what ``--hours 8`` stores directly, and a killed run is completed
  by the next one.
* **rendering** (:func:`render_remix`, in worker processes) reads only the two segments
  (``ShardReader.read_wave``), sums them, computes the arrays; the parent writes shards with
  prefix ``remix`` and commits the manifest shard by shard (:func:`augment`).

Rules: sources are train rows only (never valid or test, never rows marked ``duplicate_of``,
never remixes); vocals and accompaniment of one remix come from different songs; the vocal
segment is one where the voice is active (a fraction ``min_vocal_activity`` of its frames pass
:func:`stemforge.core.dsp.vocal_activity`); every source is used about equally often.

A remix row has ``dataset = "remix"``, ``vocals_kind = "remix"``, ``split = "train"``,
``uid = "remix:<plan id>-<n>"``, ``song_key = "remix:<vocal song>+<accompaniment song>:<plan id>-<n>"``
(never a real song's key: real keys hold no ``:`` or ``+``) and its lineage as JSON in
``parents``. The plan id is a hash of the sources, options, seed and config: a run with other
sources or options starts a new sequence and counts the older remixes as part of the split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from stemforge import __version__
from stemforge.core import dsp
from stemforge.core.config import SpectrogramConfig, patch_frames
from stemforge.core.errors import DiskFullError, OptionError, StemforgeError
from stemforge.core.files import free_bytes
from stemforge.core.text import format_table
from stemforge.store.datadir import DataDir
from stemforge.store.lineage import DATASET, VOCALS_KIND, is_remix, remix_sources, stale_remixes
from stemforge.core.parallel import map_ordered
from stemforge.store.shards import SHARD_OVERHEAD, ShardReader, TrackArrays, track_bytes
from stemforge.store.sink import ShardSink

#: Bump when the way remixes are planned or rendered changes (it enters the plan id).
AUGMENT_VERSION = "1"
SHARD_PREFIX = "remix"
REMIXES_PER_SHARD = 64
#: A training patch is 128 frames at the seed geometry; a segment shorter than that is of no use
#: to the trainer. Other geometries take their preset's patch (512 frames at fullband):
#: :func:`min_segment_frames`.
MIN_SEGMENT_FRAMES = 128
#: Seconds per remix when none is asked for (longer where the geometry's patch is: see
#: :func:`default_segment_seconds`).
SEGMENT_SECONDS = 10.0
#: Past this many remixes per second of source audio (in either role) ``augment`` warns: a
#: segment is then heard in that many remixes over other accompaniments (or vocals), and the
#: added hours add little that the trainer has not seen. The seed recipe (about 5 h of songs
#: grown to 17 h) reuses each second about 2.4 times per role; 10 is far past that.
REUSE_WARNING = 10.0
#: Room ``augment`` leaves free beyond what it writes: 5% of it plus 64 MiB (the manifest is
#: rewritten at every commit; the rest of the system needs some too).
MARGIN_FRACTION = 0.05
MARGIN_BYTES = 64 << 20


def min_segment_frames(config: SpectrogramConfig) -> int:
    """Frames a remix needs at ``config``: one training patch of its preset (128 at seed/paper, 512 at fullband)."""
    return max(MIN_SEGMENT_FRAMES, patch_frames(config))


def min_segment_seconds(config: SpectrogramConfig) -> float:
    """The shortest segment (s) that gives :func:`min_segment_frames` frames at ``config``."""
    return (min_segment_frames(config) - 1) * config.hop_length / config.sample_rate


def default_segment_seconds(config: SpectrogramConfig) -> float:
    """:data:`SEGMENT_SECONDS` (10 s), or the shortest whole half second holding one training
    patch when that is longer (12 s at fullband)."""
    return max(SEGMENT_SECONDS, math.ceil(min_segment_seconds(config) * 2) / 2)


@dataclass(frozen=True)
class AugmentOptions:
    """How remixes are made.

    ``segment_seconds``: length of every remix (sources shorter than that are not used).
    ``vocal_gain_db``: (low, high) dB range of the gain applied to the vocals, drawn uniformly.
    ``pitch_semitones``: N > 0 shifts the vocals by a pitch drawn uniformly in [-N, N]
    semitones (``librosa.effects.pitch_shift``, length kept); 0 leaves them as they are.
    ``min_vocal_activity``: fraction of voiced frames the chosen vocal segment must have, in (0, 1].
    A value out of range raises OptionError naming its field.
    """

    segment_seconds: float = 10.0
    vocal_gain_db: tuple[float, float] = (-3.0, 3.0)
    pitch_semitones: float = 0.0
    min_vocal_activity: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.vocal_gain_db
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise OptionError("segment_seconds", f"segment length must be positive, got {self.segment_seconds} s")
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise OptionError("vocal_gain_db", f"vocal gain range must be LOW,HIGH with LOW <= HIGH (dB), got {lo},{hi}")
        if not (math.isfinite(self.pitch_semitones) and 0 <= self.pitch_semitones <= 12):
            raise OptionError("pitch_semitones", f"pitch range must be between 0 (off) and 12 semitones, got {self.pitch_semitones}")
        if not (0 < self.min_vocal_activity <= 1):
            raise OptionError("min_vocal_activity", f"minimum vocal activity must be in (0, 1], got {self.min_vocal_activity}")

    def segment_samples(self, config: SpectrogramConfig) -> int:
        """Samples per remix at the config's rate."""
        return int(round(self.segment_seconds * config.sample_rate))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vocal_gain_db"] = list(self.vocal_gain_db)
        return d


@dataclass(frozen=True)
class RemixPlan:
    """Everything needed to render remix ``n`` (picklable; sent to worker processes).

    Offsets and ``n_samples`` are in samples at the DataDir's rate; gains in dB; pitch in semitones.
    """

    n: int
    plan_id: str
    vocals_uid: str
    vocals_song: str
    vocals_shard: str
    vocals_key: str
    vocals_offset: int
    accompaniment_uid: str
    accompaniment_song: str
    accompaniment_shard: str
    accompaniment_key: str
    accompaniment_offset: int
    n_samples: int
    vocals_gain_db: float
    accompaniment_gain_db: float
    pitch_semitones: float
    seed: int
    license: str = ""

    @property
    def track_id(self) -> str:
        return f"{self.plan_id}-{self.n:06d}"

    @property
    def uid(self) -> str:
        return f"{DATASET}:{self.track_id}"

    @property
    def song_key(self) -> str:
        return f"remix:{self.vocals_song}+{self.accompaniment_song}:{self.track_id}"

    def parents(self) -> str:
        """The lineage as compact JSON (the manifest's ``parents``)."""
        return json.dumps(
            {
                "vocals": self.vocals_uid,
                "accompaniment": self.accompaniment_uid,
                "vocals_offset": self.vocals_offset,
                "accompaniment_offset": self.accompaniment_offset,
                "n_samples": self.n_samples,
                "vocals_gain_db": self.vocals_gain_db,
                "accompaniment_gain_db": self.accompaniment_gain_db,
                "pitch_semitones": self.pitch_semitones,
                "seed": self.seed,
                "n": self.n,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclass
class _Source:
    uid: str
    song: str
    shard: str
    key: str
    n_samples: int
    license: str
    #: valid start frames of a vocal segment (None: not a vocal source)
    vocal_starts: np.ndarray | None = None


def _song(row) -> str:
    s = row.song_key
    return s if isinstance(s, str) and s else str(row.uid)


def plan_id(sources: pd.DataFrame, seed: int, options: AugmentOptions, config: SpectrogramConfig) -> str:
    """8 hex digits identifying a remix sequence: sources (by content), options, seed, config."""
    h = hashlib.sha256()
    head = {"augment": AUGMENT_VERSION, "seed": int(seed), "options": options.to_dict(), "config": config.hash}
    h.update(json.dumps(head, sort_keys=True).encode())
    for row in sources.itertuples(index=False):
        h.update(f"\n{row.uid}|{_song(row)}|{row.n_frames}|{row.norm!r}|{row.source_fingerprint}".encode())
    return h.hexdigest()[:8]


class RemixPlanner:
    """The deterministic sequence of remix plans of a DataDir for a seed and options.

    Reads, for every source, only its shard attributes and its per-frame vocal energy (a few
    KB per track). ``plans(count)`` returns plans ``0..count-1``; plan ``n`` does not depend on
    ``count``.

    Source choice: remix ``n`` takes the vocal source used least often as vocals so far, then
    the accompaniment source of another song used least often as accompaniment, preferring a
    pair not made yet; ties are broken by random priorities drawn from ``default_rng([seed, n])``.
    So uses of two sources in one role differ by at most one or two.
    """

    def __init__(self, datadir: DataDir, seed: int, options: AugmentOptions, reader: ShardReader | None = None):
        self.config = datadir.config
        self.seed = int(seed)
        self.options = options
        self.segment = options.segment_samples(self.config)
        if self.config.n_frames(self.segment) < min_segment_frames(self.config):
            need = min_segment_seconds(self.config)
            raise StemforgeError(
                f"segment of {options.segment_seconds} s is shorter than a training patch "
                f"({min_segment_frames(self.config)} frames at this DataDir's geometry); use at least {need:.2f} s"
            )
        table = remix_sources(datadir.manifest)
        self.plan_id = plan_id(table, self.seed, options, self.config)
        own_reader = reader is None
        reader = reader or datadir.reader()
        hop = self.config.hop_length
        win = self.segment // hop
        self.too_short: list[str] = []
        self.no_voice: list[str] = []
        sources: list[_Source] = []
        try:
            for row in table.itertuples(index=False):
                g = reader.group(row.shard, row.key)
                n_samples = int(g.attrs["n_samples"])
                if n_samples < self.segment:
                    self.too_short.append(row.uid)
                    continue
                src = _Source(row.uid, _song(row), row.shard, row.key, n_samples, _text(row.license))
                active = dsp.vocal_activity(reader.read_vocal_energy(row.shard, row.key)).astype(np.int32)
                last = (n_samples - self.segment) // hop
                csum = np.concatenate([[0], np.cumsum(active)])
                stop = np.minimum(np.arange(last + 1) + win, active.size)
                frac = (csum[stop] - csum[: last + 1]) / float(win)
                starts = np.flatnonzero(frac >= options.min_vocal_activity - 1e-9)
                if starts.size:
                    src.vocal_starts = starts.astype(np.int64)
                else:
                    self.no_voice.append(row.uid)
                sources.append(src)
        finally:
            if own_reader:
                reader.close()
        self.sources = sources
        self.n_sources = len(table)
        song_ids = {song: i for i, song in enumerate(sorted({s.song for s in sources}))}
        self._song_id = np.array([song_ids[s.song] for s in sources], dtype=np.int64)
        self._vocal_pool = np.array([i for i, s in enumerate(sources) if s.vocal_starts is not None], dtype=np.int64)
        if len(song_ids) < 2 or self._vocal_pool.size == 0:
            raise StemforgeError(self._not_enough())
        self.vocal_uses = np.zeros(len(sources), dtype=np.int64)
        self.accompaniment_uses = np.zeros(len(sources), dtype=np.int64)
        self._pairs: dict[tuple[int, int], int] = {}
        self._plans: list[RemixPlan] = []

    def _not_enough(self) -> str:
        return (
            f"cannot remix: {self.n_sources} train track(s) as sources, {len(self.too_short)} shorter than the "
            f"{self.options.segment_seconds} s segment, {len(self.no_voice)} without a segment of "
            f"{self.options.min_vocal_activity:.0%} voiced frames; a remix needs a vocal track and an "
            "accompaniment track of two different songs (lower --segment-seconds or --min-vocal-activity, "
            "or ingest more train songs)"
        )

    def plans(self, count: int) -> list[RemixPlan]:
        """Plans ``0..count-1`` (computed once and kept)."""
        while len(self._plans) < count:
            self._plans.append(self._next(len(self._plans)))
        return self._plans[:count]

    def _next(self, n: int) -> RemixPlan:
        rng = np.random.default_rng([self.seed, n])
        pool = self._vocal_pool
        pri = rng.random(pool.size)
        v = int(pool[np.lexsort((pri, self.vocal_uses[pool]))[0]])
        cand = np.flatnonzero(self._song_id != self._song_id[v])
        if cand.size == 0:  # only when every source is one song (checked in __init__)
            raise StemforgeError(self._not_enough())
        pri = rng.random(len(self.sources))[cand]
        uses = self.accompaniment_uses[cand]
        order = cand[np.lexsort((pri, uses))]
        least = self.accompaniment_uses[order[0]]
        a = -1
        best = None
        for i in order:
            if self.accompaniment_uses[i] != least:
                break
            used = self._pairs.get((v, int(i)), 0)
            if used == 0:
                a = int(i)
                break
            if best is None or used < best[0]:
                best = (used, int(i))
        if a < 0:
            a = best[1] if best is not None else int(order[0])
        vs, acc = self.sources[v], self.sources[a]
        start = int(vs.vocal_starts[rng.integers(vs.vocal_starts.size)]) * self.config.hop_length
        acc_offset = int(rng.integers(0, acc.n_samples - self.segment + 1))
        lo, hi = self.options.vocal_gain_db
        gain = round(float(rng.uniform(lo, hi)), 2) + 0.0
        pitch = 0.0
        if self.options.pitch_semitones > 0:
            pitch = round(float(rng.uniform(-self.options.pitch_semitones, self.options.pitch_semitones)), 2) + 0.0
        self.vocal_uses[v] += 1
        self.accompaniment_uses[a] += 1
        self._pairs[(v, a)] = self._pairs.get((v, a), 0) + 1
        licences = sorted({x for x in (vs.license, acc.license) if x})
        return RemixPlan(
            n=n,
            plan_id=self.plan_id,
            vocals_uid=vs.uid,
            vocals_song=vs.song,
            vocals_shard=vs.shard,
            vocals_key=vs.key,
            vocals_offset=start,
            accompaniment_uid=acc.uid,
            accompaniment_song=acc.song,
            accompaniment_shard=acc.shard,
            accompaniment_key=acc.key,
            accompaniment_offset=acc_offset,
            n_samples=self.segment,
            vocals_gain_db=gain,
            accompaniment_gain_db=0.0,
            pitch_semitones=pitch,
            seed=self.seed,
            license="; ".join(licences),
        )

    def usage(self) -> dict[str, dict[str, float]]:
        """Uses per source in each role over the plans made so far: min, max, mean (over the role's pool)."""
        out = {}
        for role, uses, pool in (
            ("vocals", self.vocal_uses, self._vocal_pool),
            ("accompaniment", self.accompaniment_uses, np.arange(len(self.sources))),
        ):
            u = uses[pool] if pool.size else np.zeros(1)
            out[role] = {"sources": int(pool.size), "min": int(u.min()), "max": int(u.max()), "mean": float(u.mean())}
        return out


def _text(v: object) -> str:
    return v if isinstance(v, str) else ""


def _db(gain_db: float) -> np.float32:
    return np.float32(10.0 ** (gain_db / 20.0))


def render_remix(reader: ShardReader, plan: RemixPlan, config: SpectrogramConfig) -> tuple[dict, TrackArrays]:
    """Read the two segments, apply pitch and gains, compute the arrays; -> (manifest row, arrays).

    Reads ``plan.n_samples`` samples of each stem (every channel), nothing else. The stored
    waveforms are the processed segments, so ``mixture == |STFT(vocals + accompaniment)| / norm``
    holds for what is stored, at the config's rate and channels (a stereo DataDir gives stereo
    remixes: the same gain on both channels, the pitch shift per channel). Raises AudioError
    when the segment's vocals are silent.
    """
    from stemforge.ingest.engine import compute_arrays
    from stemforge.recipes.base import TrackAudio

    stop_v = plan.vocals_offset + plan.n_samples
    stop_a = plan.accompaniment_offset + plan.n_samples
    voc = np.asarray(reader.read_wave(plan.vocals_shard, plan.vocals_key, "vocals", plan.vocals_offset, stop_v), dtype=np.float32)
    acc = np.asarray(
        reader.read_wave(plan.accompaniment_shard, plan.accompaniment_key, "accompaniment", plan.accompaniment_offset, stop_a),
        dtype=np.float32,
    )
    if voc.shape[-1] != plan.n_samples or acc.shape[-1] != plan.n_samples:
        raise StemforgeError(
            f"{plan.uid}: segment out of range ({voc.shape[-1]} vocal / {acc.shape[-1]} accompaniment samples read, "
            f"{plan.n_samples} planned); the DataDir changed since planning"
        )
    if plan.pitch_semitones:
        import librosa

        voc = librosa.effects.pitch_shift(voc, sr=config.sample_rate, n_steps=plan.pitch_semitones).astype(np.float32)
        voc = voc[..., : plan.n_samples]
    if plan.vocals_gain_db:
        voc = voc * _db(plan.vocals_gain_db)
    if plan.accompaniment_gain_db:
        acc = acc * _db(plan.accompaniment_gain_db)
    track = TrackAudio(
        vocals=voc, accompaniment=acc, mixture=None, source_sample_rate=config.sample_rate, source_channels=config.channels
    )
    where = f"{plan.uid} (vocals of {plan.vocals_uid} at sample {plan.vocals_offset})"
    arrays, figures = compute_arrays(track, config, vocals_path=where, mixture_path=plan.uid)
    row = {
        "uid": plan.uid,
        "dataset": DATASET,
        "track_id": plan.track_id,
        "song_key": plan.song_key,
        "artist": "",
        "title": "",
        "split": "train",
        "vocals_kind": VOCALS_KIND,
        "source_path": "",
        "source_sample_rate": config.sample_rate,
        "source_channels": config.channels,
        "duplicate_of": None,
        "parents": plan.parents(),
        "license": plan.license,
        "config_hash": config.hash,
        "stemforge_version": __version__,
        "source_fingerprint": f"augment{AUGMENT_VERSION}:{plan.plan_id}",
        **figures,
    }
    return row, arrays


# -- before writing: how much, where, how often each source is used ------------------------
@dataclass(frozen=True)
class AugmentEstimate:
    """What a run is about to write, known before anything is written.

    ``remixes`` to render (``planned`` in all, the others already stored) of ``segment_s``
    seconds; ``bytes`` they take in shards (about: what the shard writer reserves), and
    ``margin_bytes`` left free beyond them; ``free_bytes`` on the DataDir's filesystem.
    ``vocal_sources``/``accompaniment_sources``: tracks in each role's pool and
    ``vocal_source_s``/``accompaniment_source_s`` their seconds; ``vocal_uses``/
    ``accompaniment_uses``: mean uses of a source in that role over the ``planned`` remixes.
    :attr:`reuse`: remixes per second of source audio, the larger of the two roles.
    """

    remixes: int
    planned: int
    segment_s: float
    bytes: int
    margin_bytes: int
    free_bytes: int
    vocal_sources: int
    accompaniment_sources: int
    vocal_source_s: float
    accompaniment_source_s: float
    vocal_uses: float
    accompaniment_uses: float

    @property
    def fits(self) -> bool:
        """Whether the disk holds what will be written and the margin."""
        return self.bytes + self.margin_bytes <= self.free_bytes

    @property
    def vocal_reuse(self) -> float:
        """Remixes each second of the vocal sources' audio goes into (about)."""
        return self.planned * self.segment_s / self.vocal_source_s if self.vocal_source_s > 0 else 0.0

    @property
    def accompaniment_reuse(self) -> float:
        """Remixes each second of the accompaniment sources' audio goes into (about)."""
        return self.planned * self.segment_s / self.accompaniment_source_s if self.accompaniment_source_s > 0 else 0.0

    @property
    def reuse(self) -> float:
        return max(self.vocal_reuse, self.accompaniment_reuse)

    @property
    def heavy_reuse(self) -> bool:
        """Past :data:`REUSE_WARNING`: worth a warning."""
        return self.reuse > REUSE_WARNING

    def lines(self) -> list[str]:
        """What the run is about to write, said before it writes (a warning line last when
        :attr:`heavy_reuse`)."""
        lines = [
            f"augment: {self.remixes:,} remixes of {self.segment_s:g} s to write ({self.remixes * self.segment_s / 3600:.2f} h): "
            f"about {_gb(self.bytes)}, with {_gb(self.free_bytes)} free on the DataDir's disk",
            f"augment: {self.vocal_sources} vocal and {self.accompaniment_sources} accompaniment source track(s) "
            f"({self.vocal_source_s / 60:.1f} and {self.accompaniment_source_s / 60:.1f} min); each is used about "
            f"{self.vocal_uses:,.1f} times as vocals and {self.accompaniment_uses:,.1f} times as accompaniment, each second of "
            f"their audio in about {self.vocal_reuse:,.1f} and {self.accompaniment_reuse:,.1f} remixes",
        ]
        if self.heavy_reuse:
            lines.append(
                f"warning: each second of source audio goes into about {self.reuse:,.0f} remixes (more than {REUSE_WARNING:g}): "
                "these hours are mostly the same audio again; ingest more songs, or ask for fewer --hours"
            )
        return lines


def estimate(datadir: DataDir, planner: RemixPlanner, planned: int, to_render: int, per_shard: int = REMIXES_PER_SHARD) -> AugmentEstimate:
    """The :class:`AugmentEstimate` of rendering ``to_render`` of the ``planned`` remixes of
    ``planner`` into ``datadir`` (``planner.plans(planned)`` made: the uses count them)."""
    config = datadir.config
    one = track_bytes(config, config.n_frames(planner.segment), planner.segment)
    nbytes = to_render * one + -(-to_render // max(1, per_shard)) * SHARD_OVERHEAD
    usage = planner.usage()
    rate = float(config.sample_rate)
    vocal_s = sum(planner.sources[i].n_samples for i in planner._vocal_pool) / rate
    acc_s = sum(src.n_samples for src in planner.sources) / rate
    return AugmentEstimate(
        remixes=to_render,
        planned=planned,
        segment_s=planner.segment / rate,
        bytes=int(nbytes),
        margin_bytes=int(nbytes * MARGIN_FRACTION) + MARGIN_BYTES if to_render else 0,
        free_bytes=free_bytes(datadir.path),
        vocal_sources=usage["vocals"]["sources"],
        accompaniment_sources=usage["accompaniment"]["sources"],
        vocal_source_s=vocal_s,
        accompaniment_source_s=acc_s,
        vocal_uses=usage["vocals"]["mean"],
        accompaniment_uses=usage["accompaniment"]["mean"],
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# -- the run -------------------------------------------------------------------------------
@dataclass
class SplitHours:
    """Hours of the train split (duplicates left out): ingested tracks, remixes, total."""

    ingested_h: float
    remix_h: float

    @property
    def total_h(self) -> float:
        return self.ingested_h + self.remix_h


def train_hours(df: pd.DataFrame) -> SplitHours:
    """Hours of the train split of a manifest, as the trainer sees it (duplicates left out)."""
    if df.empty:
        return SplitHours(0.0, 0.0)
    dup = (df["duplicate_of"].isna() | (df["duplicate_of"] == "")).fillna(True)
    train = df[(df["split"] == "train").fillna(False) & dup]
    remix = is_remix(train)
    dur = train["duration_s"].astype("float64").fillna(0.0)
    return SplitHours(float(dur[~remix].sum()) / 3600.0, float(dur[remix].sum()) / 3600.0)


@dataclass
class AugmentReport:
    """What :func:`augment` did.

    ``before``/``after``: train hours; ``added``: rows stored; ``planned``: remixes of this plan
    the target needs in all (``already`` of them were stored before); ``dropped``: stale remixes
    removed; ``failed``: (uid, reason); ``usage``: per-role use counts over the planned remixes.
    """

    target_h: float
    before: SplitHours
    after: SplitHours
    plan_id: str = ""
    planned: int = 0
    already: int = 0
    added: list[dict] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    sources: int = 0
    too_short: int = 0
    no_voice: int = 0
    #: what the run was about to write (None when there was nothing to do)
    estimate: AugmentEstimate | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def nothing_to_do(self) -> bool:
        return not self.added and not self.failed and not self.dropped and self.before.total_h >= self.target_h

    @property
    def added_h(self) -> float:
        return sum(float(r["duration_s"]) for r in self.added) / 3600.0

    def summary_lines(self) -> list[str]:
        """The summary ``stemforge augment`` prints: the train hours before, added and after, the
        use of the sources, the plan, and the train split's size against the target."""
        b, a = self.before, self.after
        lines = [""]
        if self.dropped:
            lines.append(f"dropped {len(self.dropped)} stale remix(es) whose parents are no longer train tracks")
        if not self.added and not self.failed and b.total_h >= self.target_h - 1e-9:
            return lines + [f"train split already holds {b.total_h:.2f} h (>= {self.target_h:.2f} h): nothing to do"]
        rows = [
            {"train": "before", "ingested_h": b.ingested_h, "remix_h": b.remix_h, "total_h": b.total_h},
            {"train": "added", "ingested_h": 0.0, "remix_h": self.added_h, "total_h": self.added_h},
            {"train": "after", "ingested_h": a.ingested_h, "remix_h": a.remix_h, "total_h": a.total_h},
        ]
        lines += [format_table(rows), ""]
        usage = [{"role": role, **u} for role, u in self.usage.items()]
        if usage:
            lines += [format_table(usage, ["role", "sources", "min", "max", "mean"]), ""]
        return lines + [
            f"plan {self.plan_id}: {self.planned} remixes for {self.target_h:.2f} h, "
            f"{self.already} already stored, {len(self.added)} added ({self.added_h:.2f} h), {len(self.failed)} failed",
            f"sources: {self.sources} train tracks, {self.too_short} shorter than a segment, "
            f"{self.no_voice} without a voiced segment (accompaniment only)",
            f"train split: had {b.total_h:.2f} h, added {self.added_h:.2f} h, now {a.total_h:.2f} h (target {self.target_h:.2f} h)",
        ]


ProgressFn = Callable[[str, str, str], None]

_WORKER_READER: ShardReader | None = None


def _init_worker(reader: ShardReader) -> None:
    global _WORKER_READER
    _WORKER_READER = reader


def _render_in_worker(plan: RemixPlan, config: SpectrogramConfig) -> tuple[dict, TrackArrays]:
    """:func:`render_remix` in a worker; magnitudes come back as float16 (clipped like the shard
    writer does, so what is stored is the same bytes), which halves what is sent to the parent
    and takes the conversion off the parent, the one process that writes."""
    assert _WORKER_READER is not None
    row, arrays = render_remix(_WORKER_READER, plan, config)
    return row, arrays.as_float16()


def augment(
    datadir: DataDir,
    hours: float,
    seed: int = 0,
    options: AugmentOptions | None = None,
    workers: int = 1,
    progress: ProgressFn | None = None,
    remixes_per_shard: int = REMIXES_PER_SHARD,
    on_estimate: Callable[[AugmentEstimate], None] | None = None,
) -> AugmentReport:
    """Add remixes until the train split holds ``hours`` hours; returns what was done.

    Under the DataDir's write lock: if the train split (stale remixes, see
    :func:`stale_remixes`, left out) already holds ``hours``, the stale remixes are dropped and
    nothing else happens; otherwise the number of remixes of the current plan that the target
    needs is computed (the split then holds at least ``hours`` and less than ``hours`` + one
    segment) and what they will write is estimated (:func:`estimate`): when the disk cannot
    hold it with the margin, :class:`~stemforge.core.errors.DiskFullError` is raised and nothing
    is written (not even the drop of stale remixes). Otherwise the stale remixes are dropped,
    ``on_estimate(estimate)`` is called (bytes, free space, reuse of the sources: for the
    caller to say before the work starts), and the remixes not stored yet are rendered
    (``workers`` processes) and committed shard by shard. ``progress(event, uid, detail)`` is
    called with ``planned`` (detail: number to render), ``done``, ``failed`` and ``dropped``.
    """
    options = options or AugmentOptions()
    if not (math.isfinite(hours) and hours >= 0):
        raise StemforgeError(f"--hours must be a non-negative number of hours, got {hours}")
    note = progress or (lambda *_: None)
    config = datadir.config
    with datadir.writing():
        df = datadir.manifest
        before = train_hours(df)
        stale = stale_remixes(df)

        def drop_stale() -> pd.DataFrame:
            if not stale:
                return df
            datadir.commit([], drop_uids=[u for u, _ in stale])
            for uid, why in stale:
                note("dropped", uid, why)
            return datadir.manifest

        kept = df[~df["uid"].isin({u for u, _ in stale})] if stale else df
        report = AugmentReport(target_h=float(hours), before=before, after=train_hours(kept), dropped=stale)
        target_s = hours * 3600.0
        if train_hours(kept).total_h * 3600.0 >= target_s - 1e-6:
            drop_stale()
            note("planned", "", "0")
            return report
        df = kept
        reader = datadir.reader()
        try:
            planner = RemixPlanner(datadir, seed, options, reader)
        finally:
            reader.close()
        report.plan_id = planner.plan_id
        report.sources, report.too_short, report.no_voice = planner.n_sources, len(planner.too_short), len(planner.no_voice)
        mine = df[df["uid"].str.startswith(f"{DATASET}:{planner.plan_id}-").fillna(False)]
        hs = train_hours(df)
        base_s = hs.total_h * 3600.0 - float(mine["duration_s"].astype("float64").sum())
        seg_s = planner.segment / config.sample_rate
        count = max(0, math.ceil((target_s - base_s) / seg_s - 1e-9))
        plans = planner.plans(count)
        report.planned = count
        report.usage = planner.usage()
        have = set(mine["uid"])
        report.already = sum(1 for p in plans if p.uid in have)
        todo = [p for p in plans if p.uid not in have]
        report.estimate = estimate(datadir, planner, count, len(todo), remixes_per_shard)
        if not report.estimate.fits:
            e = report.estimate
            raise DiskFullError(
                datadir.path,
                f"not enough room: {len(todo):,} remixes need about {_gb(e.bytes)} and {_gb(e.margin_bytes)} kept free, "
                f"{_gb(e.free_bytes)} free",
                "nothing was written: free space, or ask for fewer --hours",
            )
        drop_stale()
        if on_estimate is not None:
            on_estimate(report.estimate)
        note("planned", "", str(len(todo)))
        if todo:
            _render_all(datadir, todo, workers, report, note, remixes_per_shard)
        report.after = train_hours(datadir.manifest)
    return report


def _render_all(datadir: DataDir, todo: list[RemixPlan], workers: int, report: AugmentReport, note, per_shard: int) -> None:
    """Render ``todo`` in ``workers`` processes and store the remixes in plan order (so the
    shards of a run do not depend on which worker finished first), committing shard by shard."""
    global _WORKER_READER
    try:
        with ShardSink(datadir, SHARD_PREFIX, per_shard) as sink:
            results = map_ordered(
                _render_in_worker, todo, (datadir.config,), workers, initializer=_init_worker, initargs=(datadir.reader(),)
            )
            with contextlib.closing(results):  # a failure in this loop stops the workers at once
                for plan, result, exc in results:
                    if exc is not None:
                        msg = str(exc) if isinstance(exc, StemforgeError) else f"{plan.uid}: {type(exc).__name__}: {exc}"
                        report.failed.append((plan.uid, msg))
                        note("failed", plan.uid, msg)
                        continue
                    row, arrays = result
                    sink.add(plan.track_id, plan.uid, row, arrays)
                    note("done", plan.uid, "")
        report.added.extend(sink.committed)
    except BrokenProcessPool:
        report.added.extend(sink.committed)
        raise StemforgeError(
            f"{datadir.path}: a worker process died (killed, or out of memory); {len(report.added)} remixes were "
            "committed and are kept; run the same command again to add the rest"
        ) from None
    finally:
        if _WORKER_READER is not None and workers <= 1:  # the inline run's reader
            _WORKER_READER.close()
            _WORKER_READER = None
