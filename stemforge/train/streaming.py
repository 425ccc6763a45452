"""Batches read from the shards, one per step, cut ahead of time by worker processes.

:class:`StreamingBatches` reads the crops of a step (:class:`~stemforge.train.sampling.PatchSampler`)
with the store's :class:`~stemforge.store.crops.CropReader` (only the crop: at most two ``pread``
calls per field straight into preallocated buffers). :class:`StreamingLoader` cuts the batches
of the coming steps in worker processes that write into shared memory; no HDF5 handle or file
descriptor is pickled, each worker opens the shards it needs lazily.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import pickle
import queue
import signal
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from stemforge.core import lifeline
from stemforge.core.errors import StemforgeError
from stemforge.model.config import TARGETS
from stemforge.store.crops import CropReader
from stemforge.train.layout import FIRST_BIN, Batch, crop_shape, model_bins, scaled, to_model_layout
from stemforge.train.sampling import PatchSampler

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import ShardReader


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
        shape = crop_shape(self.crops.reader.config, self.batch_size, self.sampler.patch_frames)
        if self._buffers is None or self._buffers["mixture"].shape != shape:
            self._buffers = {name: np.empty(shape, dtype=np.float16) for name in ("mixture", self.target)}
        track, start = self.sampler.positions(self.seed, self.rank, step, self.batch_size)
        self._track = track
        mix, tgt = self._buffers["mixture"], self._buffers[self.target]
        for i in range(self.batch_size):
            self.crops.read_into(int(track[i]), int(start[i]), {"mixture": mix[i], self.target: tgt[i]})
        return self._buffers

    def write_step(self, step: int, mixture: torch.Tensor | None = None, target: torch.Tensor | None = None):
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
            values = scaled(to_model_layout(raw[name], None, a, n), s)
            if dest is None:
                dest = values
            else:
                dest.copy_(values)
            out.append(dest)
        return out[0], out[1]

    def __getitem__(self, step: int) -> Batch:
        mix, tgt = self.write_step(int(step))
        return Batch(mix, tgt, int(step))

    def close(self) -> None:
        self.crops.close()


def _start_method(requested: str | None) -> str:
    methods = mp.get_all_start_methods()
    if requested is not None:
        if requested not in methods:
            raise StemforgeError(f"start method {requested!r} is not available here ({methods})")
        return requested
    return "fork" if "fork" in methods else "spawn"


def _shared_slots(shape: tuple[int, ...], method: str) -> torch.Tensor:
    """A float16 tensor of ``shape`` that worker processes started with ``method`` write into
    and this process reads: an anonymous shared mapping inherited by fork (not limited by the
    size of /dev/shm), else torch shared memory."""
    nbytes = int(np.prod(shape)) * 2
    if method == "fork":
        buf = mmap.mmap(-1, max(1, nbytes))  # MAP_SHARED | MAP_ANONYMOUS
        return torch.frombuffer(buf, dtype=torch.float16, count=int(np.prod(shape))).view(shape)
    return torch.empty(shape, dtype=torch.float16).share_memory_()


def _portable_error(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return StemforgeError(f"{type(exc).__name__}: {exc}")


def _loader_worker(batches: StreamingBatches, mix_slots, tgt_slots, tasks, results) -> None:
    """Worker process: cut the batch of each ``(step, slot)`` task into the shared slot."""
    lifeline.bind()  # die with the training process, however it ends (SIGKILL included)
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
