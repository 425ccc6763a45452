"""TrackSource -> arrays -> DataDir: decoding, STFT, normalization, shards, manifest rows.

:func:`ingest` is resumable and idempotent: a track already stored with the same source
fingerprint and config, whose stored arrays pass their checksums, is skipped (damaged ones are
redone); tracks are processed in worker processes, one track at a time
per worker, and written by the parent into shards that are committed to the manifest as each
shard completes, so a killed run loses at most the shard being written.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from stemforge import __version__
from stemforge.core import dsp, files
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, StemforgeError
from stemforge.recipes.identity import song_key
from stemforge.recipes.base import TrackAudio, TrackSource
from stemforge.recipes.loading import loader
from stemforge.core.parallel import map_ordered
from stemforge.store.datadir import META_NAME, DataDir
from stemforge.store.shards import TrackArrays
from stemforge.store.sink import ShardSink

#: Bump when the way arrays are computed changes: stored tracks are then redone.
INGEST_VERSION = "1"
FINGERPRINT_BYTES = 1 << 20
TRACKS_PER_SHARD = 16


@dataclass
class IngestReport:
    """What an ingest did: rows written, tracks skipped as unchanged, excluded, or failed."""

    ingested: list[dict] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: stored tracks whose source is unchanged but whose arrays were damaged: (uid, why); redone.
    repaired: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def compute_arrays(
    track: TrackAudio, config: SpectrogramConfig, vocals_path: str | Path = "vocals", mixture_path: str | Path = "mixture"
) -> tuple[TrackArrays, dict]:
    """Magnitudes, norm, vocal energy and the per-track figures for the manifest.

    The waveforms are ``[n_samples]`` (mono) or ``[channels, n_samples]`` (stereo) at
    ``config.sample_rate``. Magnitudes come back time-major as the shard stores them:
    ``[n_frames, n_bins]`` mono, ``[n_frames, channels, n_bins]`` stereo, every channel of
    the three divided by one number, the mixture's maximum over all channels. The vocal
    energy of a frame is summed over its bins and channels (``[n_frames]``), so vocal
    activity and the silent-vocals check mean the same at every geometry.

    Raises AudioError naming ``vocals_path`` when the vocals are silent and ``mixture_path``
    when the mixture is.
    """
    voc, acc = track.vocals, track.accompaniment
    derived = voc + acc
    mix = derived if track.mixture is None else track.mixture
    try:
        mags = dsp.normalized_magnitudes(mix, voc, acc, config)
    except StemforgeError as exc:
        raise AudioError(mixture_path, str(exc)) from None
    if mags.mixture.ndim == 3:  # [channels, n_frames, n_bins] -> time-major [n_frames, channels, n_bins]
        parts, norm = [mags.mixture, mags.vocals, mags.accompaniment], mags.norm
        del mags
        for i in range(3):  # one array at a time: a copy of one in memory at once, not of three
            parts[i] = np.ascontiguousarray(parts[i].transpose(1, 0, 2))
        mags = dsp.Magnitudes(*parts, norm)
        del parts
    n_frames = int(mags.mixture.shape[0])
    energy = dsp.frame_energy(mags.vocals.reshape(n_frames, -1))
    mix_energy = float(dsp.frame_energy(mags.mixture.reshape(n_frames, -1)).sum())
    if mix_energy > 0 and float(energy.sum()) <= mix_energy * 10 ** (dsp.SILENT_VOCALS_DB / 10):
        raise AudioError(vocals_path, f"vocals are silent (energy below {dsp.SILENT_VOCALS_DB:.0f} dB re. the mixture)")
    figures = {
        "vocal_activity": float(dsp.vocal_activity(energy).mean()),
        "mix_residual_db": float("nan") if track.mixture is None else dsp.energy_ratio_db((mix - derived).ravel(), mix.ravel()),
        "duration_s": voc.shape[-1] / config.sample_rate,
        "n_frames": n_frames,
        "norm": mags.norm,
    }
    arrays = TrackArrays(
        mixture=mags.mixture,
        vocals=mags.vocals,
        accompaniment=mags.accompaniment,
        norm=mags.norm,
        vocal_energy=energy,
        wave_vocals=voc,
        wave_accompaniment=acc,
    )
    return arrays, figures


def process_track(source: TrackSource, config: SpectrogramConfig) -> tuple[dict, TrackArrays]:
    """Load one track and compute its arrays and manifest fields (runs in a worker process).

    Raises AudioError naming the file at fault.
    """
    root = Path(source.root)
    first = root / source.source_path
    track = loader(source.loader)(source, config)
    arrays, figures = compute_arrays(
        track,
        config,
        vocals_path=root / source.vocals[0].path if source.vocals else first,
        mixture_path=root / source.mixture[0].path if source.mixture else first,
    )
    row = {
        "uid": source.uid,
        "dataset": source.dataset,
        "track_id": source.track_id,
        "song_key": song_key(source.artist, source.title or source.track_id),
        "artist": source.artist,
        "title": source.title,
        "split": source.split,
        "vocals_kind": source.vocals_kind,
        "source_path": source.source_path,
        "source_sample_rate": track.source_sample_rate,
        "source_channels": track.source_channels,
        "license": source.license,
        "config_hash": config.hash,
        "stemforge_version": __version__,
        **figures,
        **dict(source.extra),
        **track.extra,
    }
    return row, arrays


def fingerprint(source: TrackSource) -> str:
    """Content fingerprint of a track's sources: sizes and the first/last MiB of every file,
    how they are combined (streams, channels, gains), the loader and the recipe options.

    Content-based (not mtime or path based) so that a corpus copied elsewhere is still
    recognized, while an edited or replaced file is not.
    """
    h = hashlib.sha256()
    h.update(f"ingest{INGEST_VERSION}|{source.loader}|{source.options}|{source.vocals_kind}\n".encode())
    for role, refs in (("m", source.mixture), ("v", source.vocals), ("a", source.accompaniment)):
        for r in refs:
            h.update(f"{role}|{r.path}|{r.stream}|{r.channel}|{r.gain!r}\n".encode())
    for path in source.files():
        problem = files.regular_file_problem(path)
        if problem:  # a FIFO would block the read below; a loop is not "file not found"
            raise AudioError(path, problem)
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                h.update(f"{size}|".encode())
                h.update(f.read(FINGERPRINT_BYTES))
                if size > 2 * FINGERPRINT_BYTES:
                    f.seek(size - FINGERPRINT_BYTES)
                    h.update(f.read(FINGERPRINT_BYTES))
        except FileNotFoundError:
            raise AudioError(path, "file not found") from None
        except OSError as exc:
            raise AudioError(path, f"cannot read ({exc.strerror})") from None
    return h.hexdigest()[:20]


def _shard_key(track_id: str, used: set[str]) -> str:
    """An HDF5-safe group name for ``track_id``, unique among ``used``."""
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in track_id)[:120] or "track"
    key, i = base, 1
    while key in used:
        i += 1
        key = f"{base}~{i}"
    return key


ProgressFn = Callable[[str, str, str], None]


def ingest(
    datadir: DataDir,
    sources: Iterable[TrackSource],
    workers: int = 1,
    force: bool = False,
    progress: ProgressFn | None = None,
    tracks_per_shard: int | None = None,
    post_commit: Callable[[DataDir], None] | None = None,
) -> IngestReport:
    """Store ``sources`` into ``datadir``; returns what happened to each track.

    ``progress(event, uid, detail)`` is called for every track with event ``planned`` (detail:
    number of tracks to process), ``damaged`` (a stored track whose arrays are missing,
    unreadable or fail their checksum: it is redone; detail: why), ``done``, ``unchanged``,
    ``excluded`` or ``failed``. A track counts as unchanged only when its source fingerprint
    and config match and every stored array passes its CRC-32 (all are read).
    ``workers`` > 1 decodes in that many processes (one track each at a time). ``force``
    redoes tracks that are already stored. ``post_commit`` runs under the lock after every
    manifest commit (identity reconciliation). ``tracks_per_shard`` (default 16, or
    ``$STEMFORGE_SHARD_TRACKS``) bounds how many tracks a killed run can lose.
    """
    if tracks_per_shard is None:
        tracks_per_shard = int(os.environ.get("STEMFORGE_SHARD_TRACKS", TRACKS_PER_SHARD))
    report = IngestReport()
    note = progress or (lambda *_: None)
    config = datadir.config
    with datadir.writing():
        stored = datadir.manifest.set_index("uid") if len(datadir.manifest) else None
        reader = datadir.reader()
        todo: list[tuple[TrackSource, str]] = []
        for src in sources:
            if src.skip_reason:
                report.excluded.append((src.uid, src.skip_reason))
                note("excluded", src.uid, src.skip_reason)
                continue
            if src.error:
                report.failed.append((src.uid, src.error))
                note("failed", src.uid, src.error)
                continue
            problem = src.text_problem()  # a name that cannot be stored, whatever recipe gave it
            if problem:
                msg = f"{Path(src.root) / src.source_path}: {problem}; the track is not stored"
                report.failed.append((src.uid, msg))
                note("failed", src.uid, msg)
                continue
            try:
                fp = fingerprint(src)
            except AudioError as exc:
                report.failed.append((src.uid, str(exc)))
                note("failed", src.uid, str(exc))
                continue
            if not force and stored is not None and src.uid in stored.index:
                old = stored.loc[src.uid]
                if old["source_fingerprint"] == fp and old["config_hash"] == config.hash:
                    damage = _stored_damage(reader, old)
                    if damage is None:
                        report.unchanged.append(src.uid)
                        note("unchanged", src.uid, "")
                        continue
                    report.repaired.append((src.uid, damage))
                    note("damaged", src.uid, damage)
            todo.append((src, fp))
        reader.close()
        note("planned", "", str(len(todo)))
        if todo:
            _run(datadir, todo, workers, report, note, tracks_per_shard, post_commit)
        elif post_commit is not None:
            post_commit(datadir)
    return report


def _stored_damage(reader, row) -> str | None:
    """Why the stored arrays of a manifest row cannot be kept (missing shard or track,
    unreadable, failing a checksum), or None when they are whole. Reads them all (CRC-32)."""
    shard, key = row["shard"], row["key"]
    if not isinstance(shard, str) or not shard or not isinstance(key, str) or not key:
        return "no shard recorded"
    if not (reader.root / shard).exists():
        return f"{reader.root / shard}: shard is missing"
    try:
        reader.verify(shard, key)
    except StemforgeError as exc:
        return str(exc)
    return None


def _process(item: tuple[TrackSource, str], config: SpectrogramConfig) -> tuple[dict, TrackArrays]:
    """:func:`process_track` in a worker; magnitudes come back as float16 (see TrackArrays.as_float16)."""
    row, arrays = process_track(item[0], config)
    return row, arrays.as_float16()


def _run(datadir, todo, workers, report, note, tracks_per_shard, post_commit) -> None:
    """Process ``todo`` in ``workers`` processes (results in input order) and store them shard
    by shard; a killed run keeps every committed shard."""
    with ShardSink(datadir, "", tracks_per_shard, after_commit=post_commit) as sink:
        results = map_ordered(_process, todo, (datadir.config,), workers)
        with contextlib.closing(results):  # a failure in this loop stops the workers at once
            for (src, fp), result, exc in results:
                if exc is not None:
                    msg = str(exc) if isinstance(exc, StemforgeError) else f"{Path(src.root) / src.source_path}: {type(exc).__name__}: {exc}"
                    report.failed.append((src.uid, msg))
                    note("failed", src.uid, msg)
                    continue
                row, arrays = result
                if sink.prefix != src.dataset:  # one shard prefix per dataset
                    sink.flush()
                    sink.prefix = src.dataset
                row["source_fingerprint"] = fp
                sink.add(_shard_key(src.track_id, sink.pending_keys), src.uid, row, arrays)
                note("done", src.uid, "")
    report.ingested.extend(sink.committed)


def open_for_ingest(path: str | Path, config: SpectrogramConfig | None, discover: Callable[[], list[TrackSource]]
                    ) -> tuple[DataDir, list[TrackSource]]:
    """The DataDir at ``path`` to ingest into, and the corpus's tracks (``discover()``).

    ``config`` None: an existing DataDir keeps its geometry, a new one is the default. Another
    ``config`` than an existing DataDir's is a ConfigMismatchError before the corpus is read;
    a new DataDir is created only once ``discover`` has succeeded."""
    path = Path(path)
    existing = (path / META_NAME).exists()
    if existing and config is not None:
        DataDir.open(path, config)  # another geometry: refused before the corpus is read
    sources = discover()
    return (DataDir.open(path) if config is None and existing else DataDir.create(path, config)), sources


def default_workers() -> int:
    """One worker per available core (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
