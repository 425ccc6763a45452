"""Separation jobs of the web server: a store of jobs, a bounded pool of worker threads, expiry.

Why threads and not processes: the server holds one model; worker threads share it (one copy in
memory whatever ``workers`` is), and the heavy parts of a job (decoding in libsndfile/FFmpeg,
resampling in soxr, the STFT in scipy.fft, the U-Net in torch) run in native code that releases the
GIL, so the event loop keeps answering while ``workers`` jobs run. A Python exception anywhere in
a job is caught and turns that job into ``failed`` with a one-line reason; the pool goes on. What
threads do not isolate is a crash of native code or the kernel's OOM killer; the server bounds
what one job may cost instead (upload size, song length, ``workers`` jobs at a time, a bounded
queue), so that ``workers`` times the cost of the longest allowed song fits in memory.

Each job lives in its own folder ``root/<id>/``, named by a random id the server made
(:func:`secrets.token_urlsafe`); nothing a client sends is ever used to build a path. A job's
files are::

    input.<ext>                       the upload (removed once decoded)
    mixture.wav vocals.wav accompaniment.wav   16-bit PCM at the upload's rate and channels
    mixture.png vocals.png accompaniment.png   spectrograms

Finished jobs (done or failed) expire ``expire_seconds`` after they finish: a cleanup thread
removes them and their folder.

A job leaves the table only once its folder is gone (expiry, :meth:`JobStore.delete`): whoever
gets a 404 for a job can count on its files being removed. A folder that cannot be removed is
logged (warning, with the reason) and its job stays listed, its files no longer served, until a
later cleanup pass succeeds.

What a worker does with a job's files lives beside this store: the decode within the server's
bounds in :mod:`stemforge.serve.decode`, the WAVs and pictures it writes in
:mod:`stemforge.serve.outputs`.
"""

from __future__ import annotations

import collections
import inspect
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from stemforge.core import audio as audio_io
from stemforge.core.errors import AudioError, StemforgeError
from stemforge.serve.decode import decode_limited
from stemforge.serve.outputs import PngRenderer, write_pcm16

log = logging.getLogger("stemforge.serve")

#: What a finished job offers, in this order: the decoded mixture and the two stems of
#: :data:`stemforge.separate.separator.STEMS`, each as ``.wav`` and ``.png``.
JOB_OUTPUTS = ("mixture", "vocals", "accompaniment")
#: Length of the ids (``secrets.token_urlsafe(16)``: 128 random bits, 22 characters).
ID_BYTES = 16
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_ID_LENGTH = len(secrets.token_urlsafe(ID_BYTES))


class JobState(str, Enum):
    """Life of a job: queued -> running -> done | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class QueueFullError(StemforgeError):
    """The queue holds ``max_queue`` waiting jobs already; the client should retry later."""


class SeparatorLike(Protocol):
    """What the pool needs of a separator (``stemforge.separate.separator.Separator`` is one).

    ``separate(audio [channels, samples] float32, sample_rate)`` returns at least ``"vocals"`` and
    ``"accompaniment"``, each ``[channels, samples]`` at the same rate. It may take a keyword
    ``progress`` (a callable given a fraction in [0, 1]); the pool passes one when it does.
    """

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]: ...


@dataclass
class Job:
    """One separation request. Times are Unix seconds; ``progress`` is a fraction in [0, 1].

    ``filename`` is the name the client gave, kept for display only; ``track`` the song's name
    the downloads are named by (as ``stemforge separate`` names a track; "" : from ``filename``).
    """

    id: str
    folder: Path
    input_path: Path
    filename: str
    created_at: float
    state: JobState = JobState.QUEUED
    stage: str = "queued"
    progress: float = 0.0
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    queue_position: int | None = None
    expires_at: float | None = None
    cancelled: bool = field(default=False, repr=False)
    #: Its folder is being removed (expired or deleted): no file is served from it any more.
    removing: bool = field(default=False, repr=False)
    separating_since: float | None = field(default=None, repr=False)
    track: str = ""


def new_job_id() -> str:
    """A fresh random id: 22 URL-safe characters, 128 bits from :mod:`secrets`."""
    return secrets.token_urlsafe(ID_BYTES)


def valid_job_id(text: str) -> bool:
    """Whether ``text`` has the shape of an id this server makes (it may still be unknown)."""
    return isinstance(text, str) and len(text) == _ID_LENGTH and set(text) <= _ID_CHARS


def one_line(exc: BaseException, hide: str | os.PathLike | None = None) -> str:
    """A short one-line reason for ``exc``; paths inside the job folder ``hide`` (which decoders
    quote in their messages) become bare file names, so no server path reaches a client."""
    if isinstance(exc, AudioError):
        text = exc.reason
    elif isinstance(exc, StemforgeError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    if hide:
        # the job folder and the work root above it (a decoder may quote either, or a cut path)
        for folder in (Path(hide), Path(hide).parent):
            text = text.replace(str(folder) + os.sep, "").replace(str(folder), "")
    return text[:300] or "unknown error"


class JobStore:
    """Jobs by id, a FIFO queue, ``workers`` threads that separate, and a cleanup thread.

    Args:
        root: folder that holds one sub-folder per job (created; the store owns what is in it).
        separator: see :class:`SeparatorLike`; shared by the worker threads.
        workers: jobs separated at the same time (>= 1).
        max_seconds: longest song accepted (seconds); checked again while decoding, since a
            header may lie.
        max_rate: the rate a job works at, at most (Hz): a song above it is resampled to it
            block by block while it is decoded (see :func:`stemforge.serve.decode.decode_limited`).
        max_channels: most channels of a song.
        expire_seconds: how long a finished job and its files are kept.
        max_queue: most jobs waiting (not running) at once; :meth:`submit` raises
            :class:`QueueFullError` beyond.
        render_png: writes a spectrogram PNG (see :data:`stemforge.serve.outputs.PngRenderer`);
            None writes none.
        cleanup_interval: seconds between two cleanup passes (default: a quarter of
            ``expire_seconds``, between 1 and 60).
        clock: the time source (Unix seconds), replaceable in tests.

    Call :meth:`start` before submitting and :meth:`close` at the end.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        separator: SeparatorLike,
        workers: int = 1,
        max_seconds: float = 900.0,
        expire_seconds: float = 3600.0,
        max_rate: int = 48_000,
        max_channels: int = 2,
        max_queue: int = 100,
        render_png: PngRenderer | None = None,
        cleanup_interval: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if workers < 1:
            raise StemforgeError(f"workers must be >= 1, got {workers}")
        if max_queue < 0:
            raise StemforgeError(f"max_queue must be >= 0, got {max_queue}")
        if not max_seconds > 0:
            raise StemforgeError(f"max_seconds must be positive, got {max_seconds}")
        if not expire_seconds > 0:
            raise StemforgeError(f"expire_seconds must be positive, got {expire_seconds}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.separator = separator
        self.workers = int(workers)
        self.max_seconds = float(max_seconds)
        self.max_rate = int(max_rate)
        self.max_channels = int(max_channels)
        self.expire_seconds = float(expire_seconds)
        self.max_queue = int(max_queue)
        self.render_png = render_png
        self.cleanup_interval = (
            float(cleanup_interval) if cleanup_interval else min(60.0, max(1.0, self.expire_seconds / 4))
        )
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._running: set[str] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._progress_kw = _accepts_progress(separator)
        #: Seconds of audio separated per wall-clock second (running mean over past jobs), used
        #: to estimate the progress of a separator that reports none.
        self.speed: float | None = None
        self.failed_total = 0
        self.done_total = 0

    # ----------------------------------------------------------------- life cycle
    def start(self) -> None:
        """Start the worker threads and the cleanup thread (idempotent)."""
        if self._threads:
            return
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"stemforge-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._clean_loop, name="stemforge-cleanup", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self, timeout: float = 10.0, remove_root: bool = False) -> None:
        """Stop taking work: drop queued jobs, wait up to ``timeout`` s for running ones, and
        remove every job folder (and ``root`` itself when ``remove_root``)."""
        with self._cond:
            self._stop.set()
            self._queue.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        with self._cond:
            jobs = list(self._jobs.values())
            for job in jobs:
                job.removing = True
        for job in jobs:
            if remove_folder(job.folder):
                with self._cond:
                    self._jobs.pop(job.id, None)
        if remove_root:
            remove_folder(self.root)

    # ----------------------------------------------------------------- requests
    def reserve(self) -> tuple[str, Path]:
        """A fresh id and its (new, empty) folder, for an upload about to arrive. Give it back
        with :meth:`discard` if the upload is refused, or pass it to :meth:`submit`."""
        while True:
            job_id = new_job_id()
            folder = self.root / job_id
            try:
                folder.mkdir()
            except FileExistsError:  # 2**-128; but never reuse a folder
                continue
            return job_id, folder

    def discard(self, job_id: str) -> None:
        """Remove the folder of a reserved id that never became a job."""
        with self._cond:
            if job_id in self._jobs:
                return
        remove_folder(self.root / job_id)

    def submit(
        self,
        job_id: str,
        input_path: Path,
        filename: str,
        duration_s: float | None = None,
        sample_rate: int | None = None,
        channels: int | None = None,
        track: str = "",
    ) -> Job:
        """Queue the upload stored at ``input_path`` (inside the folder of reserved ``job_id``);
        ``track`` names its downloads (:attr:`Job.track`).

        Returns a snapshot of the queued job. Raises :class:`QueueFullError` when ``max_queue``
        jobs are waiting already (the caller then :meth:`discard`s the id).
        """
        job = Job(
            id=job_id,
            folder=self.root / job_id,
            input_path=Path(input_path),
            filename=filename,
            track=track,
            created_at=self.clock(),
            duration_s=duration_s,
            sample_rate=sample_rate,
            channels=channels,
        )
        with self._cond:
            if self._stop.is_set():
                raise StemforgeError("the server is shutting down")
            # A queued job that an idle worker is about to take does not count as waiting.
            idle_workers = max(0, self.workers - len(self._running))
            if len(self._queue) >= self.max_queue + idle_workers:
                raise QueueFullError(f"{len(self._queue)} jobs are waiting already; try again later")
            self._jobs[job_id] = job
            self._queue.append(job_id)
            self._cond.notify()
            return self._snapshot(job)

    def get(self, job_id: str) -> Job | None:
        """A copy of the job (with its current queue position), or None when unknown/expired."""
        with self._cond:
            job = self._jobs.get(job_id)
            return None if job is None else self._snapshot(job)

    def file(self, job_id: str, stem: str, kind: str) -> Path | None:
        """The path of a finished job's ``stem`` file (``kind`` "wav" or "png"), or None when the
        job is unknown or not done. ``stem`` and ``kind`` must come from the fixed sets."""
        if stem not in JOB_OUTPUTS or kind not in ("wav", "png"):
            raise StemforgeError(f"no such file: {stem!r}.{kind!r}")
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state is not JobState.DONE or job.removing:
                return None
            return job.folder / f"{stem}.{kind}"

    def delete(self, job_id: str) -> bool:
        """Forget a job (queued, running or finished) and remove its folder; returns False when
        the id is unknown.

        Blocking (file system work): call it from a worker thread, not the event loop. The folder
        is removed before the job leaves the table, so a later :meth:`get` answering None means
        the files are gone. A running job's worker is told to stop (it notices at its next
        step); with its folder gone it cannot write anything more. Raises
        :class:`~stemforge.core.errors.StemforgeError` when the folder cannot be removed (logged;
        the job stays listed, its files no longer served, and the cleanup thread tries again).
        """
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return False
            job.cancelled = job.removing = True
            if job_id in self._queue:
                self._queue.remove(job_id)
        if not remove_folder(job.folder):
            with self._cond:
                job.expires_at = self.clock()  # the cleanup thread retries
            raise StemforgeError("the job's files could not be removed; the server will try again")
        with self._cond:
            self._jobs.pop(job_id, None)
        return True

    def counts(self) -> dict[str, int]:
        """Jobs by state right now, plus totals since start (``done_total``, ``failed_total``)."""
        with self._cond:
            out = {s.value: 0 for s in JobState}
            for job in self._jobs.values():
                out[job.state.value] += 1
            out["done_total"] = self.done_total
            out["failed_total"] = self.failed_total
            return out

    def cleanup_expired(self, now: float | None = None) -> int:
        """Remove the finished jobs whose time is up, and stray folders; returns how many jobs."""
        now = self.clock() if now is None else now
        with self._cond:
            expired = [
                j for j in self._jobs.values()
                if j.expires_at is not None and j.expires_at <= now and j.id not in self._running
            ]
            for job in expired:
                job.removing = True  # its files are no longer served; it is still listed
            known = set(self._jobs)
        removed = 0
        for job in expired:
            if remove_folder(job.folder):  # first the files, then the entry: never gone with files left
                with self._cond:
                    self._jobs.pop(job.id, None)
                removed += 1
        # Folders of reservations whose request died, older than the expiry time.
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            entries = []
        wall = time.time()
        for entry in entries:
            if entry.name in known or not valid_job_id(entry.name):
                continue
            try:
                if wall - entry.stat().st_mtime > self.expire_seconds:
                    with self._cond:
                        if entry.name in self._jobs:
                            continue
                    remove_folder(Path(entry.path))
            except OSError as exc:
                log.warning("cannot look at %s: %s", entry.path, exc)
        return removed

    # ----------------------------------------------------------------- internals
    def _snapshot(self, job: Job) -> Job:
        position = None
        progress = job.progress
        if job.state is JobState.QUEUED:
            try:
                position = self._queue.index(job.id) + 1
            except ValueError:
                position = None
        elif job.stage == "separating" and not self._progress_kw and self.speed and job.duration_s:
            # No progress from the separator: estimate it from the speed of past jobs, never
            # claiming more than 95 % of the stage.
            expected = job.duration_s / self.speed
            elapsed = self.clock() - (job.separating_since or self.clock())
            progress = max(progress, _SEPARATE_FROM + _SEPARATE_SPAN * min(0.95, elapsed / max(expected, 1e-3)))
        return replace(job, queue_position=position, progress=progress)

    def _update(self, job: Job, **changes: Any) -> bool:
        """Apply ``changes`` under the lock; False when the job was deleted meanwhile."""
        with self._cond:
            for k, v in changes.items():
                setattr(job, k, v)
            return not job.cancelled

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                job_id = self._queue.popleft()
                job = self._jobs[job_id]
                self._running.add(job_id)
                job.state, job.stage, job.started_at = JobState.RUNNING, "decoding", self.clock()
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running.discard(job_id)
                    if job.state is JobState.DONE:
                        self.done_total += 1
                    elif job.state is JobState.FAILED:
                        self.failed_total += 1
                if job.cancelled and remove_folder(job.folder):  # deleted while it ran
                    with self._cond:
                        if self._jobs.get(job_id) is job:
                            del self._jobs[job_id]

    def _run(self, job: Job) -> None:
        """Decode, separate, write the stems and their pictures; never raises."""
        try:
            self._separate(job)
        except _Cancelled:
            return
        except Exception as exc:  # a bad job must never take the pool down
            if job.cancelled:  # deleted meanwhile (its folder vanished under the writer): no failure
                return
            reason = one_line(exc, hide=job.folder)
            log.warning("job %s failed: %s", job.id, reason, exc_info=not isinstance(exc, StemforgeError))
            now = self.clock()
            self._update(
                job, state=JobState.FAILED, stage="failed", error=reason, finished_at=now,
                expires_at=now + self.expire_seconds,
            )
        finally:
            job.input_path.unlink(missing_ok=True)

    def _step(self, job: Job, stage: str, progress: float) -> None:
        if not self._update(job, stage=stage, progress=progress) or self._stop.is_set():
            raise _Cancelled

    def _separate(self, job: Job) -> None:
        self._step(job, "decoding", 0.02)
        mixture, sample_rate = decode_limited(job.input_path, self.max_seconds, self.max_rate, self.max_channels)
        duration = mixture.shape[1] / sample_rate
        self._update(job, duration_s=duration, sample_rate=int(sample_rate), channels=int(mixture.shape[0]))
        job.input_path.unlink(missing_ok=True)
        self._step(job, "separating", _SEPARATE_FROM)
        kwargs: dict[str, Any] = {}
        if self._progress_kw:
            kwargs["progress"] = lambda f: self._step(
                job, "separating", _SEPARATE_FROM + _SEPARATE_SPAN * min(1.0, max(0.0, float(f)))
            )
        t0 = time.perf_counter()
        self._update(job, separating_since=self.clock())
        stems = self.separator.separate(mixture, int(sample_rate), **kwargs)
        speed = duration / max(time.perf_counter() - t0, 1e-6)
        with self._cond:
            self.speed = speed if self.speed is None else 0.7 * self.speed + 0.3 * speed
        outputs = {"mixture": mixture}
        for name in ("vocals", "accompaniment"):
            if not isinstance(stems, dict) or name not in stems:
                raise StemforgeError(f"the separator returned no {name}")
            stem = np.asarray(stems[name], dtype=np.float32)
            if stem.shape != mixture.shape:
                raise StemforgeError(f"the separator returned {name} of shape {stem.shape}, expected {mixture.shape}")
            outputs[name] = stem
        del stems, mixture
        reference = None
        for i, name in enumerate(JOB_OUTPUTS):  # the mixture first: its peak is the 0 dB of all three
            self._step(job, "writing", 0.8 + 0.06 * i)
            audio = outputs.pop(name)  # each array is let go as soon as it is written and drawn
            write_pcm16(job.folder / f"{name}.wav", audio, int(sample_rate))
            if self.render_png is not None:
                used = self.render_png(audio_io.to_mono(audio), int(sample_rate), job.folder / f"{name}.png", reference)
                reference = used if reference is None else reference
            del audio
        now = self.clock()
        if not self._update(
            job, state=JobState.DONE, stage="done", progress=1.0, finished_at=now, expires_at=now + self.expire_seconds
        ):
            raise _Cancelled

    def _clean_loop(self) -> None:
        while not self._stop.wait(self.cleanup_interval):
            try:
                removed = self.cleanup_expired()
                if removed:
                    log.info("removed %d expired jobs", removed)
            except Exception:  # cleanup must not die
                log.exception("cleanup failed")


def remove_folder(path: Path) -> bool:
    """Remove ``path`` and all it holds; True when it is gone (or never was).

    Never raises: a failure is logged as a warning naming the folder and the reason (and tried
    once more first, since a file being written at that moment makes the folder non-empty).
    """
    error: OSError | None = None
    for _ in range(2):
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass  # gone, or a file inside vanished meanwhile: look again
        except OSError as exc:
            error = exc
        if not os.path.lexists(path):
            return True
    log.warning("could not remove the job folder %s: %s", path, error.strerror if error and error.strerror else error)
    return False


#: The separation stage spans progress 0.1 .. 0.8 (decoding before, writing and drawing after).
_SEPARATE_FROM, _SEPARATE_SPAN = 0.1, 0.7


class _Cancelled(Exception):
    """The job was deleted (or the server is stopping) while it ran."""


def _accepts_progress(separator: Any) -> bool:
    try:
        params = inspect.signature(separator.separate).parameters
    except (TypeError, ValueError, AttributeError):
        return False
    return "progress" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
