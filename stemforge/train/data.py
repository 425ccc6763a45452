"""Training data: crops of ``P`` frames cut from a DataDir's shards, as the U-Net sees them.

The network sees ``F`` stored bins from ``first_bin`` on (the model's
:attr:`~stemforge.train.model.UNetConfig.first_bin` and ``n_bins``) of ``P``-frame crops, every
channel of the DataDir::

    mixture  [batch, channels, F, P]   mixture magnitude as stored (the network input)
    target   [batch, channels, F, P]   magnitude of the target (vocals or accompaniment)

At the seed geometry that is ``[batch, 1, 512, 128]``: bins 1..512 of the stored 513 (the DC
bin dropped) of 128-frame crops; at the fullband one ``[batch, 2, 1024, 512]`` by default.
Every class below takes ``first_bin`` (default 1) and ``n_bins`` (default: every stored bin
from ``first_bin`` on, 512 at the seed geometry).

Three pieces:

* :class:`PatchSampler` decides *where* the crops of a step come from. Every crop position of
  every ``train`` row (remixes included, duplicates excluded) is equally likely, so tracks are
  weighted by their length; an option rejects crops whose vocals are nearly silent (from the
  stored per-frame vocal energy). The positions of step ``s`` are a pure function of
  ``(seed, rank, s)``: nothing depends on the worker that cuts them, on the number of workers or
  on what ran before, so a resumed run draws exactly the crops the uninterrupted run would have,
  and each distributed rank draws its own.
* :class:`StreamingBatches` reads those crops from the shards with the store's
  :class:`~stemforge.store.crops.CropReader` (only the crop: at most two ``pread`` calls per
  field straight into preallocated buffers), one batch per step index.
  :class:`StreamingLoader` cuts the batches of the coming steps ahead of time in worker
  processes that write into shared memory; no HDF5 handle or file descriptor is pickled, each
  worker opens the shards it needs lazily.
* :class:`ResidentBatches` copies the train split's magnitudes (the model's bins, float16) once to
  device memory (GPU) or RAM (CPU) and cuts batches there by a gather, so a fast GPU never
  waits for the CPU. Its batches are identical to the streaming ones for the same step.

:func:`validation_set` gives fixed crops of the ``valid`` rows (deterministic positions).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from stemforge.core.errors import ManifestError, StemforgeError
from stemforge.store.crops import CropReader, TrackList

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from stemforge.store import DataDir, ShardReader

#: Frames per training crop (about 4.1 s at 16 kHz, hop 512).
PATCH_FRAMES = 128
#: The first stored bin the network sees by default: 1 (bin 0, DC, is dropped and gets mask 0).
FIRST_BIN = 1
TARGETS = ("vocals", "accompaniment")

# Streams of the per-step SeedSequence, so that the crop positions and the dropout masks of a
# step are independent draws.
STREAM_POSITIONS = 0
STREAM_DROPOUT = 1


def step_seed_sequence(seed: int, rank: int, step: int, stream: int) -> np.random.SeedSequence:
    """The SeedSequence of one step of one rank: a pure function of its arguments.

    Every random draw of training (crop positions, dropout masks) comes from one of these, so a
    run is reproducible from ``seed`` alone and can be resumed at any step.
    """
    for name, value in (("seed", seed), ("rank", rank), ("step", step), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise StemforgeError(f"{name} must be a non-negative integer, got {value!r}")
    return np.random.SeedSequence([int(seed), int(rank), int(step), int(stream)])


def step_torch_seed(seed: int, rank: int, step: int, stream: int = STREAM_DROPOUT) -> int:
    """A 63-bit integer seed for a ``torch.Generator`` of one step (dropout masks)."""
    state = step_seed_sequence(seed, rank, step, stream).generate_state(1, np.uint64)[0]
    return int(state) >> 1


# --------------------------------------------------------------------------------------------
# Where crops come from
# --------------------------------------------------------------------------------------------


def _window_means(energy: np.ndarray, patch_frames: int) -> np.ndarray:
    """Mean of ``energy`` over every window of ``patch_frames`` frames that starts at 0..n-P
    (one window, zero-padded, when the track is shorter): float64 ``[max(1, n-P+1)]``."""
    e = np.asarray(energy, dtype=np.float64)
    if e.size < patch_frames:
        return np.array([e.sum() / patch_frames])
    c = np.concatenate(([0.0], np.cumsum(e)))
    return (c[patch_frames:] - c[:-patch_frames]) / patch_frames


class PatchSampler:
    """Crop positions for training steps: uniform over every crop position of every track.

    A track of ``n`` frames has ``max(1, n - P + 1)`` crop starts (a track shorter than ``P``
    frames gives one crop, zero-padded at the end); drawing uniformly among all starts weights
    tracks by length. With ``min_vocal_db`` set, a start is allowed only when the crop's mean
    per-frame vocal energy is within ``min_vocal_db`` dB of the track's loudest vocal frame
    (the stored ``vocal_energy``), which rejects crops of nearly silent vocals; a track whose
    vocals are silent throughout gives no crop.

    Args:
        tracks: the :class:`TrackList` to draw from.
        patch_frames: frames per crop ``P``.
        vocal_energy: per track, float ``[n_frames]`` (needed with ``min_vocal_db``).
        min_vocal_db: e.g. ``-30.0``; None keeps every crop.

    Raises:
        StemforgeError: no track, or no crop left after rejection.
    """

    def __init__(
        self,
        tracks: TrackList,
        patch_frames: int = PATCH_FRAMES,
        vocal_energy: Sequence[np.ndarray] | None = None,
        min_vocal_db: float | None = None,
    ):
        if patch_frames <= 0:
            raise StemforgeError(f"patch_frames must be positive, got {patch_frames}")
        if len(tracks) == 0:
            raise StemforgeError("no track to draw training crops from (is the train split empty?)")
        self.tracks = tracks
        self.patch_frames = int(patch_frames)
        self.min_vocal_db = None if min_vocal_db is None else float(min_vocal_db)
        counts = np.maximum(1, tracks.n_frames - self.patch_frames + 1).astype(np.int64)
        self.n_all_positions = int(counts.sum())
        self._cum = np.concatenate(([0], np.cumsum(counts)))  # [n_tracks + 1]
        self._allowed: np.ndarray | None = None
        if self.min_vocal_db is not None:
            if vocal_energy is None or len(vocal_energy) != len(tracks):
                raise StemforgeError("min_vocal_db needs the vocal energy of every track")
            factor = 10.0 ** (self.min_vocal_db / 10.0)
            allowed = []
            for i, energy in enumerate(vocal_energy):
                energy = np.asarray(energy, dtype=np.float64)[: tracks.n_frames[i]]
                peak = float(energy.max()) if energy.size else 0.0
                if peak <= 0.0:
                    continue
                ok = np.flatnonzero(_window_means(energy, self.patch_frames) >= peak * factor)
                allowed.append(ok + self._cum[i])
            self._allowed = np.concatenate(allowed).astype(np.int64) if allowed else np.zeros(0, np.int64)
            if self._allowed.size == 0:
                raise StemforgeError(
                    f"no training crop has vocals above {self.min_vocal_db} dB of its track's peak; "
                    "lower --min-vocal-db or drop it"
                )

    @classmethod
    def from_datadir(
        cls,
        datadir: "DataDir",
        split: str = "train",
        patch_frames: int = PATCH_FRAMES,
        min_vocal_db: float | None = None,
    ) -> "PatchSampler":
        """A sampler over ``datadir.select(split=split)`` (duplicates excluded, remixes included)."""
        tracks = TrackList.from_rows(datadir.select(split=split))
        if len(tracks) == 0:
            raise StemforgeError(f"{datadir.path}: no {split!r} rows to train on; ingest a corpus first")
        energy = None
        if min_vocal_db is not None:
            reader = datadir.reader()
            try:
                energy = [reader.read_vocal_energy(s, k) for s, k in zip(tracks.shards, tracks.keys)]
            finally:
                reader.close()
        return cls(tracks, patch_frames, energy, min_vocal_db)

    @property
    def n_positions(self) -> int:
        """Crop positions that can be drawn (after rejection)."""
        return self.n_all_positions if self._allowed is None else int(self._allowed.size)

    @property
    def rejected_fraction(self) -> float:
        """Fraction of crop positions rejected for silent vocals (0 without ``min_vocal_db``)."""
        return 1.0 - self.n_positions / self.n_all_positions

    @property
    def crops_per_epoch(self) -> float:
        """One epoch: as many crops as the train split holds non-overlapping crops (frames / P)."""
        return self.tracks.total_frames / self.patch_frames

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Steps in which all ranks together draw :attr:`crops_per_epoch` crops (rounded up)."""
        return max(1, math.ceil(self.crops_per_epoch / (batch_size * world_size)))

    def positions(self, seed: int, rank: int, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The crops of one step: ``(track index int64 [batch], start frame int64 [batch])``.

        A pure function of ``(seed, rank, step, batch_size)``.
        """
        rng = np.random.default_rng(step_seed_sequence(seed, rank, step, STREAM_POSITIONS))
        draw = rng.integers(0, self.n_positions, size=batch_size, dtype=np.int64)
        flat = draw if self._allowed is None else self._allowed[draw]
        track = np.searchsorted(self._cum, flat, side="right") - 1
        return track.astype(np.int64), (flat - self._cum[track]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Streaming batches (crops read from the shards)
# --------------------------------------------------------------------------------------------


def model_bins(n_stored: int, first_bin: int = FIRST_BIN, n_bins: int | None = None) -> tuple[int, int]:
    """``(first_bin, n_bins)`` of the bins a model sees among ``n_stored`` stored ones
    (``n_bins`` None: all from ``first_bin`` on); StemforgeError when they go past the stored bins."""
    first_bin = int(first_bin)
    n_bins = n_stored - first_bin if n_bins is None else int(n_bins)
    if first_bin < 0 or n_bins <= 0 or first_bin + n_bins > n_stored:
        raise StemforgeError(
            f"the model sees bins {first_bin}..{first_bin + n_bins - 1} ({n_bins} bins); "
            f"the DataDir stores {n_stored} bins (0..{n_stored - 1})"
        )
    return first_bin, n_bins


def to_model_layout(frames: np.ndarray, out: "torch.Tensor | None" = None, first_bin: int = FIRST_BIN,
                    n_bins: int | None = None) -> "torch.Tensor":
    """Stored crops float16 ``[batch, P, S]`` (mono) or ``[batch, P, channels, S]`` (stereo) ->
    float16 ``[batch, channels, n_bins, P]`` (bins ``first_bin .. first_bin + n_bins - 1``,
    frequency-major, contiguous), the network's layout; ``[batch, 1, 512, P]`` at the seed
    geometry. Convert the dtype on the device."""
    import torch

    a, n = model_bins(frames.shape[-1], first_bin, n_bins)
    if frames.ndim == 3:
        src = frames[:, :, a : a + n].transpose(0, 2, 1)[:, None]  # a view [batch, 1, F, P]
    else:
        src = frames[:, :, :, a : a + n].transpose(0, 2, 3, 1)  # a view [batch, C, F, P]
    if out is None:
        out = torch.empty(src.shape, dtype=torch.float16)
    np.copyto(out.numpy(), src)  # numpy's strided copy is ~1.5x torch's here
    return out


def track_norms(datadir: "DataDir", split: str) -> np.ndarray:
    """float32 ``[n_tracks]``: the stored ``norm`` (the divisor of max-normalized magnitudes)
    of the tracks of ``TrackList.from_rows(datadir.select(split=split))``, in its order.
    Multiplying a track's stored magnitudes by it gives back the plain ``|STFT|``."""
    rows = datadir.select(split=split)
    keep = rows["n_frames"].astype("int64").to_numpy() > 0
    norms = rows["norm"].astype("float64").to_numpy()[keep]
    if not np.isfinite(norms).all() or (norms <= 0).any():
        raise ManifestError(f"{datadir.path}: {split} rows without a positive 'norm': cannot give plain |STFT| magnitudes")
    return norms.astype(np.float32)


def _scaled(x: "torch.Tensor", scale: np.ndarray) -> "torch.Tensor":
    """float16 ``x [n, ...]`` times float32 ``scale [n]`` (per crop), rounded back to float16: the
    same elementwise operation in every loader, so their batches stay bit-identical."""
    import torch

    s = torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float32)).view((-1,) + (1,) * (x.dim() - 1))
    return (x.float() * s).to(torch.float16)


def _crop_shape(config, batch: int, patch_frames: int) -> tuple[int, ...]:
    """Stored layout of ``batch`` crops: ``[batch, P, S]`` mono, ``[batch, P, channels, S]`` stereo."""
    if config.channels == 1:
        return (batch, patch_frames, config.n_bins)
    return (batch, patch_frames, config.channels, config.n_bins)


@dataclass
class Batch:
    """One training batch (float16 on the CPU from the loaders; see :func:`to_device`).

    Attributes:
        mixture: ``[batch, channels, n_bins, P]`` (``[batch, 1, 512, P]`` at the seed geometry).
        target: the same shape.
        step: the step it was drawn for.
    """

    mixture: "torch.Tensor"
    target: "torch.Tensor"
    step: int

    def pin_memory(self) -> "Batch":
        return Batch(self.mixture.pin_memory(), self.target.pin_memory(), self.step)


def to_device(batch: Batch, device: "torch.device | str", dtype: "torch.dtype | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """``(mixture, target)`` on ``device`` as ``dtype`` (float32 by default)."""
    import torch

    dtype = dtype or torch.float32
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    return (
        batch.mixture.to(device, non_blocking=non_blocking).to(dtype),
        batch.target.to(device, non_blocking=non_blocking).to(dtype),
    )


class StreamingBatches:
    """Batches read from the shards, one per step: a map-style ``Dataset`` whose index is the step.

    ``batches[step]`` is a :class:`Batch` of float16 ``[batch_size, channels, n_bins, P]``
    tensors, the crops :meth:`PatchSampler.positions` gives for ``(seed, rank, step)``. Use it
    through :class:`StreamingLoader` (worker processes, prefetching) or index it directly.

    Args:
        sampler: where the crops come from.
        reader: a :class:`ShardReader` of the DataDir (a fresh one: nothing opened yet).
        target: ``"vocals"`` or ``"accompaniment"``.
        batch_size, seed, rank: as in :meth:`PatchSampler.positions`.
        first_bin, n_bins: the stored bins the model sees (:func:`model_bins`).
        scale: None, or float32 ``[n_tracks]`` multiplying each track's magnitudes
            (:func:`track_norms`: plain ``|STFT|`` for a model trained on normalization "none").
    """

    def __init__(self, sampler: PatchSampler, reader: "ShardReader", target: str, batch_size: int, seed: int, rank: int = 0,
                 first_bin: int = FIRST_BIN, n_bins: int | None = None, scale: np.ndarray | None = None):
        if target not in TARGETS:
            raise StemforgeError(f"target must be one of {TARGETS}, got {target!r}")
        if batch_size <= 0:
            raise StemforgeError(f"batch_size must be positive, got {batch_size}")
        self.first_bin, self.n_bins = model_bins(reader.config.n_bins, first_bin, n_bins)
        self.channels = reader.config.channels
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float32)
        self._track: np.ndarray | None = None
        self.sampler = sampler
        self.crops = CropReader(reader, sampler.tracks)
        self.target = target
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self._buffers: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_buffers"] = None
        return state

    def read_step(self, step: int) -> dict[str, np.ndarray]:
        """The raw crops of ``step``: ``{"mixture", target}`` float16 in the stored layout,
        ``[batch, P, 513]`` at the seed geometry, ``[batch, P, channels, S]`` at a stereo one (a
        buffer reused by the next call)."""
        shape = _crop_shape(self.crops.reader.config, self.batch_size, self.sampler.patch_frames)
        if self._buffers is None or self._buffers["mixture"].shape != shape:
            self._buffers = {name: np.empty(shape, dtype=np.float16) for name in ("mixture", self.target)}
        track, start = self.sampler.positions(self.seed, self.rank, step, self.batch_size)
        self._track = track
        mix, tgt = self._buffers["mixture"], self._buffers[self.target]
        for i in range(self.batch_size):
            self.crops.read_into(int(track[i]), int(start[i]), {"mixture": mix[i], self.target: tgt[i]})
        return self._buffers

    def write_step(self, step: int, mixture: "torch.Tensor | None" = None, target: "torch.Tensor | None" = None):
        """The crops of ``step`` in the model's layout, float16 ``[batch, channels, n_bins, P]``,
        written into ``mixture``/``target`` when given (a loader's shared slots), else new
        tensors; returns ``(mixture, target)``."""
        raw = self.read_step(int(step))
        a, n = self.first_bin, self.n_bins
        if self.scale is None:
            return (to_model_layout(raw["mixture"], mixture, a, n), to_model_layout(raw[self.target], target, a, n))
        s = self.scale[self._track]
        out = []
        for name, dest in (("mixture", mixture), (self.target, target)):
            scaled = _scaled(to_model_layout(raw[name], None, a, n), s)
            if dest is None:
                dest = scaled
            else:
                dest.copy_(scaled)
            out.append(dest)
        return out[0], out[1]

    def __getitem__(self, step: int) -> Batch:
        mix, tgt = self.write_step(int(step))
        return Batch(mix, tgt, int(step))

    def close(self) -> None:
        self.crops.close()


def _start_method(requested: str | None) -> str:
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if requested is not None:
        if requested not in methods:
            raise StemforgeError(f"start method {requested!r} is not available here ({methods})")
        return requested
    return "fork" if "fork" in methods else "spawn"


def _shared_slots(shape: tuple[int, ...], method: str) -> "torch.Tensor":
    """A float16 tensor of ``shape`` that worker processes started with ``method`` write into
    and this process reads: an anonymous shared mapping inherited by fork (not limited by the
    size of /dev/shm), else torch shared memory."""
    import mmap

    import torch

    nbytes = int(np.prod(shape)) * 2
    if method == "fork":
        buf = mmap.mmap(-1, max(1, nbytes))  # MAP_SHARED | MAP_ANONYMOUS
        return torch.frombuffer(buf, dtype=torch.float16, count=int(np.prod(shape))).view(shape)
    return torch.empty(shape, dtype=torch.float16).share_memory_()


def _portable_error(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return StemforgeError(f"{type(exc).__name__}: {exc}")


def _loader_worker(batches: StreamingBatches, mix_slots, tgt_slots, tasks, results) -> None:
    """Worker process: cut the batch of each ``(step, slot)`` task into the shared slot."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    torch.set_num_threads(1)
    try:
        while True:
            task = tasks.get()
            if task is None:
                break
            step, slot = task
            try:
                batches.write_step(step, mix_slots[slot], tgt_slots[slot])
                results.put((step, slot, None))
            except BaseException as exc:  # reported to the parent, which raises it
                results.put((step, slot, _portable_error(exc)))
    finally:
        batches.close()


class StreamingLoader:
    """Batches for a sequence of steps, cut ahead of time by worker processes.

    Each worker holds its own :class:`StreamingBatches` (opening the shards itself) and writes
    the batch of a step straight into one of ``workers * prefetch`` slots of shared memory;
    only ``(step, slot)`` pairs travel between processes, so handing over a batch costs no copy
    (a ``DataLoader`` pickles every batch through shared-memory files, which costs more than
    cutting it). Batches come out in the order of ``steps`` whatever worker cut them, and a
    batch is the same as ``batches[step]``.

    A yielded :class:`Batch` is a view of a slot: it stays valid until the next batch is asked
    for (copy or convert it before; :func:`to_device` does). With ``workers=0`` batches are cut
    in this process when asked for. Use as a context manager or call :meth:`close`.

    Args:
        batches: the :class:`StreamingBatches` to cut (pickled to each worker).
        steps: the steps, in order.
        workers: worker processes (0: none).
        prefetch: batches queued ahead per worker.
        start_method: ``"fork"`` (default where available) or ``"spawn"``/``"forkserver"``.

    Raises (while iterating):
        the error a worker met (a ``StemforgeError`` for a bad shard), or StemforgeError when a
        worker process died.
    """

    def __init__(self, batches: StreamingBatches, steps: Iterable[int], workers: int = 2, prefetch: int = 3,
                 start_method: str | None = None):
        if workers < 0 or prefetch < 1:
            raise StemforgeError(f"workers must be >= 0 and prefetch >= 1, got {workers}, {prefetch}")
        self.batches = batches
        self.steps = [int(s) for s in steps]
        self.workers = int(workers)
        self._next = 0  # index in steps of the next batch to hand out
        self._issued = 0  # index in steps of the next task to issue
        self._held: int | None = None  # slot of the batch handed out last
        self._done: dict[int, tuple[int, BaseException | None]] = {}
        self._procs: list = []
        self._closed = False
        if self.workers == 0:
            return
        import multiprocessing as mp

        method = _start_method(start_method)
        ctx = mp.get_context(method)
        n_slots = self.workers * prefetch
        P = batches.sampler.patch_frames
        shape = (n_slots, batches.batch_size, batches.channels, batches.n_bins, P)
        self._mix = _shared_slots(shape, method)
        self._tgt = _shared_slots(shape, method)
        self._free = list(range(n_slots))
        self._tasks = ctx.SimpleQueue()
        self._results = ctx.Queue()
        for _ in range(self.workers):
            proc = ctx.Process(
                target=_loader_worker, args=(batches, self._mix, self._tgt, self._tasks, self._results), daemon=True
            )
            proc.start()
            self._procs.append(proc)
        self._issue()

    def _issue(self) -> None:
        while self._free and self._issued < len(self.steps):
            self._tasks.put((self.steps[self._issued], self._free.pop()))
            self._issued += 1

    def __iter__(self) -> "StreamingLoader":
        return self

    def __len__(self) -> int:
        return len(self.steps)

    def __next__(self) -> Batch:
        if self._closed or self._next >= len(self.steps):
            raise StopIteration
        step = self.steps[self._next]
        if self.workers == 0:
            self._next += 1
            return self.batches[step]
        import queue

        if self._held is not None:
            self._free.append(self._held)
            self._held = None
            self._issue()
        while step not in self._done:
            try:
                got_step, slot, error = self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    codes = ", ".join(str(p.exitcode) for p in dead)
                    self.close()
                    raise StemforgeError(f"a loader worker process died (exit code {codes})") from None
                continue
            self._done[got_step] = (slot, error)
        slot, error = self._done.pop(step)
        if error is not None:
            self.close()
            raise error
        self._held = slot
        self._next += 1
        return Batch(self._mix[slot], self._tgt[slot], step)

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._procs:
            try:
                self._tasks.put(None)
            except (OSError, ValueError):  # the queue is already closed or broken: the workers are joined below
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._procs = []

    def __enter__(self) -> "StreamingLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  a finalizer runs at interpreter exit; raising there only prints noise
            pass


def streaming_loader(
    batches: StreamingBatches, steps: Iterable[int], workers: int = 2, prefetch: int = 3, start_method: str | None = None
) -> StreamingLoader:
    """A :class:`StreamingLoader` yielding ``batches[step]`` for each step of ``steps``, in order."""
    return StreamingLoader(batches, steps, workers, prefetch, start_method)


# --------------------------------------------------------------------------------------------
# Resident (in GPU memory or RAM)
# --------------------------------------------------------------------------------------------


def resident_nbytes(tracks: TrackList, patch_frames: int = PATCH_FRAMES, n_bins: int = 512, fields: int = 2,
                    channels: int = 1) -> int:
    """Bytes :class:`ResidentBatches` holds for ``tracks``: float16, ``fields`` arrays of
    ``channels x n_bins`` per frame (the model's bins, not every stored one), tracks shorter
    than ``patch_frames`` padded to it."""
    rows = int(np.maximum(tracks.n_frames, patch_frames).sum())
    return rows * channels * n_bins * 2 * fields


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def resident_fits(nbytes: int, device: "torch.device | str", fraction: float = 0.5) -> tuple[bool, str]:
    """Whether ``nbytes`` fit in ``fraction`` of the free memory of ``device`` (GPU memory for
    cuda, available RAM for cpu), and a sentence saying so with the figures."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        where = f"free GPU memory on {device}"
    else:
        free = _available_ram()
        where = "available RAM"
        if free is None:
            return True, f"resident data {nbytes / 2**30:.2f} GiB ({where} unknown)"
    ok = nbytes <= fraction * free
    verb = "fits in" if ok else "does not fit in"
    return ok, f"resident data {nbytes / 2**30:.2f} GiB {verb} {fraction:.0%} of {where} ({free / 2**30:.2f} GiB)"


class ResidentBatches:
    """The train split's magnitudes (the model's bins, float16) held on ``device``; batches cut there.

    All tracks are concatenated along time into two frequency-major ``[channels, n_bins, rows]``
    float16 tensors (mixture and target; ``[1, 512, rows]`` at the seed geometry; a track shorter
    than ``P`` frames is zero-padded to ``P``), so a crop is a ``[channels, n_bins, P]`` window
    already in the network's layout. On a GPU a batch is one
    ``index_select`` over the windows at the step's start indices (computed from the
    :class:`PatchSampler` on the CPU: 2 x ``batch`` integers, microseconds) followed by the
    float conversion, so the GPU never waits on the CPU; on the CPU (RAM-resident) the windows
    are copied one by one, which is the fastest way there. The positions are those of the
    streaming loader, so the batches are identical to its.

    Args:
        sampler, target, batch_size, seed, rank: as in :class:`StreamingBatches`.
        reader: a :class:`ShardReader` of the DataDir; closed after loading.
        device: where the data lives (``"cuda:0"``, ``"cpu"``, ...).
        progress: optional ``callable(tracks_done, n_tracks)`` while loading.
        first_bin, n_bins: the stored bins the model sees (:func:`model_bins`).
        scale: as in :class:`StreamingBatches`.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        reader: "ShardReader",
        target: str,
        batch_size: int,
        seed: int,
        rank: int = 0,
        device: "torch.device | str" = "cpu",
        progress=None,
        first_bin: int = FIRST_BIN,
        n_bins: int | None = None,
        scale: np.ndarray | None = None,
    ):
        import torch

        if target not in TARGETS:
            raise StemforgeError(f"target must be one of {TARGETS}, got {target!r}")
        if batch_size <= 0:
            raise StemforgeError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.target = target
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.device = torch.device(device)
        tracks = sampler.tracks
        P = self.patch_frames = sampler.patch_frames
        a, n_bins = self.first_bin, self.n_bins = model_bins(reader.config.n_bins, first_bin, n_bins)
        channels = self.channels = reader.config.channels
        lengths = np.maximum(tracks.n_frames, P)
        self.offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        rows = int(lengths.sum())
        self.mixture = torch.zeros((channels, n_bins, rows), dtype=torch.float16, device=self.device)
        self.target_data = torch.zeros((channels, n_bins, rows), dtype=torch.float16, device=self.device)
        try:
            for i in range(len(tracks)):
                n = int(tracks.n_frames[i])
                got = reader.read_frames(tracks.shards[i], tracks.keys[i], 0, n, fields=("mixture", target))
                o = int(self.offsets[i])
                for name, dest in (("mixture", self.mixture), (target, self.target_data)):
                    arr = got[name]
                    if arr.shape[0] != n:
                        raise ManifestError(f"{tracks.uids[i]}: shard holds {arr.shape[0]} frames, the manifest says {n}")
                    # [n, S] mono / [n, C, S] stereo -> [C, n_bins, n]
                    arr = arr[:, None, a : a + n_bins] if arr.ndim == 2 else arr[:, :, a : a + n_bins]
                    values = torch.from_numpy(np.ascontiguousarray(arr.transpose(1, 2, 0)))
                    if scale is not None:
                        values = _scaled(values[None], np.asarray(scale, np.float32)[i : i + 1])[0]
                    dest[:, :, o : o + n].copy_(values)
                if progress is not None:
                    progress(i + 1, len(tracks))
        finally:
            reader.close()
        n_windows = rows - P + 1
        self._windows = [
            data.as_strided((n_windows, channels, n_bins, P), (1, n_bins * rows, rows, 1))
            for data in (self.mixture, self.target_data)
        ]

    @property
    def nbytes(self) -> int:
        return (self.mixture.numel() + self.target_data.numel()) * 2

    def starts(self, step: int) -> np.ndarray:
        """int64 ``[batch]``: first row (in the concatenation) of each crop of ``step``."""
        track, start = self.sampler.positions(self.seed, self.rank, step, self.batch_size)
        return self.offsets[track] + start

    def batch(self, step: int, dtype: "torch.dtype | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
        """``(mixture, target)`` ``[batch, channels, n_bins, P]`` on the device, contiguous, as ``dtype``
        (float32 by default); equal to ``to_device(StreamingBatches[step], device, dtype)``."""
        import torch

        dtype = dtype or torch.float32
        starts = self.starts(step)
        out = []
        if self.device.type == "cpu":
            for windows in self._windows:
                crops = torch.empty((self.batch_size,) + tuple(windows.shape[1:]), dtype=torch.float16)
                for i, s in enumerate(starts.tolist()):
                    crops[i].copy_(windows[s])
                out.append(crops.to(dtype))
        else:
            # pinned, so the copy is asynchronous; the caching host allocator keeps the buffer
            # alive until the copy is done
            index = torch.from_numpy(starts).pin_memory().to(self.device, non_blocking=True)
            for windows in self._windows:
                out.append(windows.index_select(0, index).to(dtype))
        return out[0], out[1]

    def __getitem__(self, step: int) -> Batch:
        """The float16 :class:`Batch` of ``step`` (on the device)."""
        import torch

        m, t = self.batch(step, torch.float16)
        return Batch(m, t, int(step))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass
class ValidationSet:
    """Fixed crops of the validation rows, float16 on the CPU.

    Attributes:
        mixture, target: ``[n_crops, channels, n_bins, P]`` (``[n_crops, 1, 512, P]`` at the seed geometry).
        uids: tuple of the track uid per crop; starts: int64 ``[n_crops]`` first frames.
    """

    mixture: "torch.Tensor"
    target: "torch.Tensor"
    uids: tuple[str, ...]
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.mixture.shape[0])


def validation_positions(tracks: TrackList, patch_frames: int = PATCH_FRAMES, max_crops: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic crops of ``tracks``: per track non-overlapping crops at 0, P, 2P, ...
    (one zero-padded crop for a track shorter than P); when there are more than ``max_crops``,
    ``max_crops`` of them evenly spread over the list. Returns ``(track int64 [n], start int64 [n])``."""
    track, start = [], []
    for i, n in enumerate(tracks.n_frames):
        k = max(1, int(n) // patch_frames)
        track.extend([i] * k)
        start.extend(range(0, k * patch_frames, patch_frames))
    track_a, start_a = np.asarray(track, dtype=np.int64), np.asarray(start, dtype=np.int64)
    if max_crops > 0 and track_a.size > max_crops:
        pick = np.unique(np.linspace(0, track_a.size - 1, max_crops).round().astype(np.int64))
        track_a, start_a = track_a[pick], start_a[pick]
    return track_a, start_a


def validation_set(
    datadir: "DataDir",
    target: str,
    split: str = "valid",
    patch_frames: int = PATCH_FRAMES,
    max_crops: int = 256,
    first_bin: int = FIRST_BIN,
    n_bins: int | None = None,
    plain: bool = False,
) -> ValidationSet | None:
    """Fixed crops of ``datadir.select(split=split)`` (see :func:`validation_positions`) at the
    model's bins (``first_bin``, ``n_bins``: :func:`model_bins`); None when the split has no rows.
    ``plain``: each track times its stored ``norm`` (:func:`track_norms`: plain ``|STFT|``)."""
    if target not in TARGETS:
        raise StemforgeError(f"target must be one of {TARGETS}, got {target!r}")
    tracks = TrackList.from_rows(datadir.select(split=split))
    if len(tracks) == 0:
        return None
    a, n = model_bins(datadir.config.n_bins, first_bin, n_bins)
    track, start = validation_positions(tracks, patch_frames, max_crops)
    crops = CropReader(datadir.reader(), tracks)
    try:
        shape = _crop_shape(datadir.config, track.size, patch_frames)
        raw = {name: np.empty(shape, np.float16) for name in ("mixture", target)}
        for i in range(track.size):
            crops.read_into(int(track[i]), int(start[i]), {name: raw[name][i] for name in raw})
    finally:
        crops.close()
    mix, tgt = to_model_layout(raw["mixture"], None, a, n), to_model_layout(raw[target], None, a, n)
    if plain:
        s = track_norms(datadir, split)[track]
        mix, tgt = _scaled(mix, s), _scaled(tgt, s)
    return ValidationSet(
        mixture=mix,
        target=tgt,
        uids=tuple(tracks.uids[i] for i in track),
        starts=start,
    )
