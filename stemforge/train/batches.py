"""The batches of a training run, step after step, from whichever source fits the device.

:func:`open_batches` is the one door: it picks a source and returns a :class:`BatchSource`, an
iterator of ``(mixture, target)`` float32 device tensors ``[batch, channels, n_bins,
patch_frames]`` (the model's bins; ``[batch, 1, 512, 128]`` at the seed geometry) for the steps
asked for, in step order, with the mode used and a sentence saying why. The sources:

* resident (:mod:`.resident`): the train magnitudes held in GPU memory or RAM, batches cut there;
* streaming (:mod:`.streaming`): crops read from the shards by worker processes;
* remix (:mod:`.remix`, ``remix="fresh"``): every example remixed at its step from the train
  split's stored waveforms (held in RAM), cut on a helper thread as the resident source's.

Both give the same batch for the same step (the crops of :class:`~stemforge.train.sampling.PatchSampler`
for ``(seed, rank, step)``), so the choice never changes a run. A new kind of batch (remixed on
the fly, say) is one more ``_..._source`` function below returning a :class:`BatchSource`, and
one more branch of :func:`open_batches`; the loop only ever iterates and closes it.
"""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from stemforge.core.errors import StemforgeError
from stemforge.train.config import DATA_MODES
from stemforge.train.layout import model_bins, to_device, track_norms
from stemforge.train.remix import RemixBatches
from stemforge.train.resident import ResidentBatches, resident_fits, resident_nbytes
from stemforge.train.sampling import PatchSampler
from stemforge.train.streaming import StreamingBatches, StreamingLoader, streaming_loader

if TYPE_CHECKING:  # pragma: no cover
    from stemforge.store import DataDir


def loader_workers(device: torch.device | str) -> int:
    """Loader processes when none are configured: 1 for CPU training (the model is the
    bottleneck and needs the cores), else half the cores, at most 8."""
    if getattr(device, "type", str(device)) == "cpu":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class ResidentIter:
    """The batches of a :class:`ResidentBatches` in step order. On the CPU the next batch is cut
    on a helper thread while the model computes (the tensor copies release the GIL), so cutting
    batches does not add to the step time; on a GPU cutting is asynchronous already."""

    def __init__(self, batches: ResidentBatches, steps: range):
        self.batches = batches
        self.steps = iter(steps)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._next: concurrent.futures.Future | None = None
        if batches.device.type == "cpu":
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stemforge-batches")
            self._submit()

    def _submit(self) -> None:
        step = next(self.steps, None)
        self._next = None if step is None else self._pool.submit(self.batches.batch, step)

    def __iter__(self) -> "ResidentIter":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pool is None:
            return self.batches.batch(next(self.steps))
        if self._next is None:
            raise StopIteration
        batch = self._next.result()
        self._submit()
        return batch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class StreamingIter:
    """The batches of a :class:`StreamingLoader`, moved to ``device`` as float32."""

    def __init__(self, loader: StreamingLoader, device: torch.device):
        self.loader = loader
        self.device = device

    def __iter__(self) -> "StreamingIter":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(next(self.loader), self.device)

    def close(self) -> None:
        self.loader.close()


@dataclass
class BatchSource:
    """What :func:`open_batches` returns.

    Attributes:
        batches: an iterator of ``(mixture, target)`` float32 ``[batch, channels, n_bins, P]`` on the
            device, one per step asked for, in order; it has a ``close()``.
        mode: ``"memory"``, ``"streaming"`` or ``"remix"``.
        message: how the batches are made, and why (for the user).
    """

    batches: Iterator
    mode: str
    message: str

    def __iter__(self) -> Iterator:
        return self.batches

    def close(self) -> None:
        self.batches.close()


@dataclass(frozen=True)
class _Request:
    """What every source is asked for (the arguments of :func:`open_batches`)."""

    datadir: "DataDir"
    sampler: PatchSampler
    target: str
    device: torch.device
    steps: range
    batch_size: int
    seed: int
    rank: int
    first_bin: int
    n_bins: int | None
    scale: np.ndarray | None
    progress: "Callable[[str, int, int], None] | None" = None
    remix: str = "stored"
    remix_aligned: float = 0.1
    remix_gain_db: float = 3.0
    remix_pitch: float = 0.0


def open_batches(
    datadir: "DataDir",
    sampler: PatchSampler,
    target: str,
    device: torch.device,
    steps: range,
    *,
    batch_size: int,
    seed: int,
    rank: int = 0,
    data_mode: str = "auto",
    workers: int | None = None,
    prefetch: int = 3,
    first_bin: int = 1,
    n_bins: int | None = None,
    plain: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    remix: str = "stored",
    remix_aligned: float = 0.1,
    remix_gain_db: float = 3.0,
    remix_pitch: float = 0.0,
) -> BatchSource:
    """The batches of ``steps`` (crops of ``sampler`` for ``(seed, rank, step)``).

    ``data_mode``: ``memory`` holds the train magnitudes on ``device`` when they take at most
    half its free memory (falling back to streaming, with the reason, when they do not);
    ``streaming`` reads crops with ``workers`` loader processes (None: :func:`loader_workers`);
    ``auto`` is memory when it fits. The fit check counts what the resident loader holds: the
    model's bins (``first_bin``, ``n_bins``; None: every stored bin from ``first_bin`` on) of
    every channel, mixture and target, float16. ``plain``: every track's magnitudes times its
    stored ``norm`` (plain ``|STFT|``, for a model trained on normalization "none").
    ``progress(message, done, total)``: while the resident source reads the train split (what
    it reads, as a sentence; tracks read so far, from 0, and in all). ``remix="fresh"``: the
    remix source (:mod:`.remix`; ``data_mode`` and ``workers`` do not apply), each example an
    aligned original with probability ``remix_aligned``, else a remix with a vocal gain within
    ``+-remix_gain_db`` dB and each stem's pitch and tempo changed within ``+-remix_pitch``
    semitones.
    """
    scale = track_norms(datadir, "train") if plain else None
    if data_mode not in DATA_MODES:
        raise StemforgeError(f"data_mode must be one of {DATA_MODES}, got {data_mode!r}")
    request = _Request(datadir, sampler, target, device, steps, batch_size, seed, rank, first_bin, n_bins, scale,
                       progress, remix, remix_aligned, remix_gain_db, remix_pitch)
    if remix == "fresh":
        return _remix_source(request, plain)
    if remix != "stored":
        raise StemforgeError(f"remix must be 'stored' or 'fresh', got {remix!r}")
    if data_mode in ("auto", "memory"):
        source, why = _resident_source(request)
        if source is not None:
            return source
        fallback = f"{why}; streaming from the shards instead"
    else:
        fallback = "streaming from the shards (asked for)"
    return _streaming_source(request, workers, prefetch, fallback)


def _resident_source(r: _Request) -> tuple[BatchSource | None, str]:
    """The resident source when the data fit on the device (None otherwise), and why."""
    where = "GPU memory" if r.device.type == "cuda" else "RAM"
    first_bin, n_bins = model_bins(r.datadir.config.n_bins, r.first_bin, r.n_bins)
    nbytes = resident_nbytes(r.sampler.tracks, r.sampler.patch_frames, n_bins, channels=r.datadir.config.channels)
    fits, why = resident_fits(nbytes, r.device)
    if not fits:
        return None, why
    tracks, config = r.sampler.tracks, r.datadir.config
    hours = float(np.sum(tracks.n_frames)) * config.hop_length / config.sample_rate / 3600
    length = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"
    what = (f"the train split into {where}: {len(tracks):,} track{'s' if len(tracks) != 1 else ''}, {length}, "
            f"{nbytes / 2**30:.2f} GiB")
    report = None
    if r.progress is not None:
        r.progress(what, 0, len(tracks))
        report = lambda done, total: r.progress(what, done, total)  # noqa: E731
    resident = ResidentBatches(r.sampler, r.datadir.reader(), r.target, r.batch_size, r.seed, r.rank, r.device,
                               progress=report, first_bin=first_bin, n_bins=n_bins, scale=r.scale)
    return BatchSource(ResidentIter(resident, r.steps), "memory", f"resident in {where}: {why}"), why


def _streaming_source(r: _Request, workers: int | None, prefetch: int, why: str) -> BatchSource:
    """The streaming source: ``workers`` loader processes (None: :func:`loader_workers`)."""
    n_workers = workers if workers is not None else loader_workers(r.device)
    streaming = StreamingBatches(r.sampler, r.datadir.reader(), r.target, r.batch_size, r.seed, r.rank, r.first_bin,
                                 r.n_bins, r.scale)
    loader = streaming_loader(streaming, r.steps, workers=n_workers, prefetch=prefetch)
    plural = "es" if n_workers != 1 else ""
    return BatchSource(StreamingIter(loader, r.device), "streaming", f"{why}, {n_workers} loader process{plural}")


def _remix_source(r: _Request, plain: bool) -> BatchSource:
    """The fresh-remix source: the train split's waveforms in RAM, examples remixed per step."""
    tracks = r.sampler.tracks
    config = r.datadir.config
    hours = float(np.sum(tracks.n_frames)) * config.hop_length / config.sample_rate / 3600
    length = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"
    what = f"the train split's waveforms into RAM: {len(tracks):,} track{'s' if len(tracks) != 1 else ''}, {length}"
    report = None
    if r.progress is not None:
        report = lambda done, total: r.progress(what, done, total)  # noqa: E731
    remix = RemixBatches(r.datadir, r.target, r.batch_size, r.seed, r.rank, r.device, r.sampler.patch_frames,
                         r.remix_aligned, r.remix_gain_db, r.first_bin, r.n_bins, plain=plain, progress=report,
                         pitch=r.remix_pitch)
    message = (f"fresh remixes every step from the train split's waveforms ({len(remix.tracks):,} tracks, {length}): "
               f"{r.remix_aligned:.0%} aligned originals, vocal gain within +-{r.remix_gain_db:g} dB")
    if r.remix_pitch > 0:
        message += f", each stem's pitch and tempo within +-{r.remix_pitch:g} semitones"
    return BatchSource(ResidentIter(remix, r.steps), "remix", message)
