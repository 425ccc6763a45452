"""HDF5 shards: many tracks per file, each a group of time-major arrays.

Layout of one shard ``shards/<source>-NNNNN.h5``::

    /                     attrs: format_version, config_hash, config (JSON), stemforge_version
    /tracks/<key>/        attrs: uid, norm, n_frames, n_samples, sample_rate, config_hash
        mixture           float16 [n_frames, n_bins]  normalized magnitude (mono geometry)
                          float16 [n_frames, channels, n_bins]  (stereo geometry)
        vocals            same shape as mixture
        accompaniment     same shape as mixture
        vocal_energy      float32 [n_frames]          per-frame energy of the normalized vocals
                                                      (summed over bins and channels)
        wave_vocals       float32 [n_samples]         waveform at the config's rate (not normalized)
                          float32 [n_samples, channels]  (stereo geometry)
        wave_accompaniment same shape as wave_vocals

Every array is time-major (time on the first axis, channels inside a frame or a sample), so a
crop of frames or a segment of samples is one contiguous range of each chunk it touches. The
seed geometry (16 kHz mono) is exactly the layout shards had before other geometries existed.

Every dataset carries ``attrs["crc32"]``: the CRC-32 (``zlib.crc32``) of its bytes as stored
(little-endian, C order), written with the array and checked by ``stemforge validate``, by an
ingest re-run before it calls a track unchanged, and by readers that read an array whole
(:meth:`ShardReader.verify`). Shards written by an older stemforge have no such attribute;
they stay readable and are reported as unverifiable, not damaged.

Magnitudes are chunked by the geometry's training crop (:func:`chunk_frames`: 128 frames at
the seed and paper geometries, 512 at fullband), whole rows (every channel and bin) per chunk,
so a training crop touches at most two chunks, and stored uncompressed so a crop is one read. A shard is written under a temporary name and
renamed when complete: a file named ``*.h5`` is always whole. Before each track is handed to
libhdf5 its bytes are reserved on disk (:func:`stemforge.core.files.reserve`): libhdf5 crashes
the process when a write fails midway, so a full disk must be found before it writes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from stemforge.core import files
from stemforge.core.config import SpectrogramConfig, check_config, patch_frames
from stemforge.core.errors import CorruptDataError, ManifestError

SHARD_FORMAT_VERSION = 1
CHUNK_FRAMES = 128
WAVE_CHUNK = 128 * 512
MAG_FIELDS = ("mixture", "vocals", "accompaniment")
WAVE_FIELDS = ("vocals", "accompaniment")
TMP_SUFFIX = ".tmp"
#: Every array a track stores (magnitudes, vocal energy, waveforms): each has a checksum.
ARRAY_NAMES = MAG_FIELDS + ("vocal_energy",) + tuple(f"wave_{n}" for n in WAVE_FIELDS)
#: Dataset attribute holding the CRC-32 of the array's stored bytes.
CHECKSUM_ATTR = "crc32"
#: Disk reserved per shard beyond its arrays (superblock, groups, heaps) and per track/chunk.
_SHARD_OVERHEAD = 1 << 20
_TRACK_OVERHEAD = 64 << 10
_CHUNK_OVERHEAD = 128
_VERIFY_BYTES = 8 << 20
_F16_MAX = float(np.finfo(np.float16).max)


def chunk_frames(config: SpectrogramConfig) -> int:
    """Frames per magnitude chunk: the training crop of ``config``'s preset
    (:func:`stemforge.core.config.patch_frames`; 128 at the seed geometry, where it always was),
    so a crop of that many frames touches at most two chunks."""
    return max(CHUNK_FRAMES, patch_frames(config))


def mag_shape(config: SpectrogramConfig, n_frames: int) -> tuple[int, ...]:
    """Shape of a stored magnitude: ``(n_frames, n_bins)`` mono, ``(n_frames, channels, n_bins)`` stereo."""
    if config.channels == 1:
        return (n_frames, config.n_bins)
    return (n_frames, config.channels, config.n_bins)


@dataclass(frozen=True)
class TrackArrays:
    """Everything stored for one track.

    Magnitudes float32 (normalized, converted to float16 on write), time-major as stored:
    ``[n_frames, n_bins]`` mono or ``[n_frames, channels, n_bins]`` stereo;
    ``vocal_energy [n_frames]``; waveforms float32 at the config's rate in the package's
    waveform convention, ``[n_samples]`` mono or ``[channels, n_samples]`` stereo (the writer
    stores them time-major, ``[n_samples, channels]``).
    """

    mixture: np.ndarray
    vocals: np.ndarray
    accompaniment: np.ndarray
    norm: float
    vocal_energy: np.ndarray
    wave_vocals: np.ndarray
    wave_accompaniment: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.mixture.shape[0])

    def as_float16(self) -> "TrackArrays":
        """The same arrays with the magnitudes already converted as the shard stores them
        (clipped to the float16 range): what a worker process sends to the writing parent, half
        the bytes, and the conversion taken off the one process that writes."""
        import dataclasses

        half = {name: _to_float16(getattr(self, name)) for name in MAG_FIELDS}
        return dataclasses.replace(self, **half)


def _to_float16(data: np.ndarray) -> np.ndarray:
    return data if data.dtype == np.float16 else np.minimum(data, _F16_MAX).astype(np.float16)


def checksum(data: np.ndarray, crc: int = 0) -> int:
    """CRC-32 of ``data``'s bytes as a shard stores them (little-endian, C order), continuing
    ``crc``: the checksum of an array equals that of its leading-axis blocks chained in order."""
    little = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    return zlib.crc32(memoryview(little).cast("B"), crc)


def stored_checksum(ds: h5py.Dataset) -> int | None:
    """The CRC-32 recorded with a dataset, or None (a shard written by an older stemforge)."""
    value = ds.attrs.get(CHECKSUM_ATTR)
    return None if value is None else int(value)


def dataset_checksum(ds: h5py.Dataset, block_bytes: int = _VERIFY_BYTES, each=None) -> int:
    """CRC-32 of a whole dataset, read in blocks of about ``block_bytes``; ``each(block)`` sees
    every block (validate checks values on the same pass). Read errors propagate (OSError)."""
    crc = 0
    if not ds.shape or ds.shape[0] == 0:
        return checksum(np.zeros(0, ds.dtype))
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    step = max(1, block_bytes // row_bytes)
    for start in range(0, ds.shape[0], step):
        block = ds[start : start + step]
        crc = checksum(block, crc)
        if each is not None:
            each(block)
    return crc


def track_bytes(config: SpectrogramConfig, n_frames: int, n_samples: int | dict[str, int]) -> int:
    """Bytes a shard takes on disk for one track of ``n_frames`` frames and ``n_samples``
    samples per waveform (one count, or one per ``wave_*`` array): what libhdf5 allocates
    (whole chunks, the last one padded, float16 magnitudes, float32 energy and waveforms) plus
    its records. What :class:`ShardWriter` reserves before a track is written, and what
    ``augment`` counts before it writes anything."""
    lengths = n_samples if isinstance(n_samples, dict) else {f"wave_{name}": int(n_samples) for name in WAVE_FIELDS}
    shape = mag_shape(config, n_frames)
    row_items = int(np.prod(shape[1:]))
    chunk = min(chunk_frames(config), n_frames)
    mag_chunks = -(-n_frames // max(1, chunk))
    allocated = 3 * mag_chunks * chunk * row_items * 2 + 4 * n_frames
    n_chunks = 3 * mag_chunks + 1
    for length in lengths.values():
        wave_chunk = min(WAVE_CHUNK, max(1, length))
        chunks = -(-length // wave_chunk)
        allocated += chunks * wave_chunk * config.channels * 4
        n_chunks += chunks
    return allocated + _TRACK_OVERHEAD + _CHUNK_OVERHEAD * n_chunks


#: Bytes a shard takes beyond its tracks (superblock, groups, heaps): what its writer reserves first.
SHARD_OVERHEAD = _SHARD_OVERHEAD


class ShardWriter:
    """Write tracks into ``final_path`` through a temporary file; :meth:`close` renames it.

    Not thread-safe; one writer per shard. Use as a context manager: an exception aborts
    (the temporary file is removed, nothing named ``*.h5`` appears). Each :meth:`add` first
    reserves the track's bytes on disk and raises DiskFullError (naming the shard) when they
    are not there, before libhdf5 writes any of them.
    """

    def __init__(self, final_path: Path, config: SpectrogramConfig, version: str):
        self.final_path = Path(final_path)
        self.config = config
        self.n_tracks = 0
        self.n_bytes = 0
        self._reserved = 0
        self._file: h5py.File | None = None
        # the temporary name is <shard>.h5.tmp: DataDir.next_shard_path counts it as taken, and
        # remove_temporary and validate find what a killed writer left by it
        self._pending = files.PendingFile(self.final_path, self.final_path.with_name(self.final_path.name + TMP_SUFFIX))
        self.tmp_path = self._pending.tmp_path
        try:
            self._file = h5py.File(self.tmp_path, "w")  # keeps the mode the pending file was created with
            self._reserve(_SHARD_OVERHEAD)
        except BaseException as exc:
            if self._file is not None:
                self._file.close()
            self._pending.abort()
            if files.is_disk_full(exc):
                raise files.disk_full(self.final_path, exc) from None
            raise
        self._file.attrs["format_version"] = SHARD_FORMAT_VERSION
        self._file.attrs["config_hash"] = config.hash
        self._file.attrs["config"] = json.dumps(config.to_dict(), sort_keys=True)
        self._file.attrs["stemforge_version"] = version
        self._tracks = self._file.create_group("tracks")

    def _reserve(self, more: int) -> None:
        self._reserved += int(more)
        files.reserve(self._pending.fd, self._reserved, self.final_path)

    def add(self, key: str, uid: str, arrays: TrackArrays) -> None:
        """Store one track under ``/tracks/<key>``, each array with its CRC-32.

        ManifestError when the arrays do not have the config's layout (bins, channels).
        """
        cfg = self.config
        n_frames = int(arrays.mixture.shape[0])
        expected = mag_shape(cfg, n_frames)
        for name in MAG_FIELDS:
            if getattr(arrays, name).shape != expected:
                raise ManifestError(f"{uid}: {name} has shape {getattr(arrays, name).shape}, the config stores {expected}")
        chunk = (min(chunk_frames(cfg), n_frames),) + expected[1:]
        mags = {name: _to_float16(getattr(arrays, name)) for name in MAG_FIELDS}
        waves = {}
        for name in WAVE_FIELDS:
            w = getattr(arrays, f"wave_{name}").astype(np.float32, copy=False)
            if (w.ndim == 1) != (cfg.channels == 1) or (w.ndim == 2 and w.shape[0] != cfg.channels) or w.ndim > 2:
                raise ManifestError(f"{uid}: waveform {name} has shape {w.shape}, the config has {cfg.channels} channel(s)")
            waves[f"wave_{name}"] = w if w.ndim == 1 else np.ascontiguousarray(w.T)  # time-major on disk
        n_samples = int(arrays.wave_vocals.shape[-1])
        energy = arrays.vocal_energy.astype(np.float32, copy=False)
        wave_chunk = {name: min(WAVE_CHUNK, max(1, w.shape[0])) for name, w in waves.items()}
        self._reserve(track_bytes(cfg, n_frames, {name: w.shape[0] for name, w in waves.items()}))
        g = self._tracks.create_group(key)
        for name, data16 in mags.items():
            ds = g.create_dataset(name, data=data16, chunks=chunk)
            ds.attrs[CHECKSUM_ATTR] = np.uint32(checksum(data16))
            self.n_bytes += data16.nbytes
        ds = g.create_dataset("vocal_energy", data=energy)
        ds.attrs[CHECKSUM_ATTR] = np.uint32(checksum(energy))
        for name, wave in waves.items():
            ds = g.create_dataset(name, data=wave, chunks=(wave_chunk[name],) + wave.shape[1:])
            ds.attrs[CHECKSUM_ATTR] = np.uint32(checksum(wave))
            self.n_bytes += wave.nbytes
        g.attrs.update(
            uid=uid,
            norm=float(arrays.norm),
            n_frames=n_frames,
            n_samples=n_samples,
            sample_rate=self.config.sample_rate,
            config_hash=self.config.hash,
        )
        self.n_tracks += 1

    def close(self) -> Path:
        """Flush, give back the reserved bytes libhdf5 did not use, fsync and rename to the
        final name; returns the final path."""
        self._file.flush()
        size = int(self._file.id.get_filesize())  # libhdf5's end of file, within the reservation
        self._file.close()
        self._pending.sync(size)
        try:
            h5py.File(self.tmp_path, "r").close()
        except OSError as exc:  # never rename a shard that does not open
            raise CorruptDataError(f"{self.tmp_path}: shard unreadable after writing ({exc})") from None
        return self._pending.commit()

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            self._file.close()
        finally:
            self._pending.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


class ShardReader:
    """Reads crops of stored tracks; opens each shard lazily and keeps it open.

    Picklable: open handles are dropped when pickled (each worker process opens its own),
    so it can be handed to DataLoader workers or process pools.
    """

    def __init__(self, root: Path, config: SpectrogramConfig):
        self.root = Path(root)
        self.config = config
        self._files: dict[str, h5py.File] = {}

    def __getstate__(self) -> dict:
        return {"root": self.root, "config": self.config, "_files": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _file(self, shard: str) -> h5py.File:
        f = self._files.get(shard)
        if f is None:
            path = self.root / shard
            try:
                f = h5py.File(path, "r")
            except (OSError, FileNotFoundError) as exc:
                raise ManifestError(f"{path}: cannot open shard ({exc})") from None
            check_config(str(path), self.config, str(f.attrs.get("config_hash", "")), f.attrs.get("config"))
            self._files[shard] = f
        return f

    def group(self, shard: str, key: str) -> h5py.Group:
        f = self._file(shard)
        try:
            return f["tracks"][key]
        except KeyError:
            raise ManifestError(f"{self.root / shard}: track {key!r} not found") from None
        except (OSError, RuntimeError) as exc:
            raise CorruptDataError(f"{self.root / shard}: track {key!r} unreadable ({exc})") from None

    def read_frames(
        self, shard: str, key: str, start: int = 0, stop: int | None = None, fields: tuple[str, ...] = MAG_FIELDS
    ) -> dict[str, np.ndarray]:
        """Frames ``[start, stop)`` of the given magnitude fields: float16 ``[stop-start, n_bins]``
        each (mono geometry) or ``[stop-start, channels, n_bins]`` (stereo), as stored.

        Reads only that slice from disk (hyperslab), never the whole track. When the slice is
        the whole array its checksum is checked on the way (CorruptDataError when it fails).
        """
        g = self.group(shard, key)
        out = {}
        for name in fields:
            ds = g[name]
            out[name] = self._checked(shard, key, name, ds, ds[start:stop])
        return out

    def read_frames_into(self, shard: str, key: str, start: int, out: dict[str, np.ndarray]) -> None:
        """Fill preallocated float16 arrays ``out[field]`` (``[n, n_bins]`` mono, ``[n, channels,
        n_bins]`` stereo) with frames ``[start, start+n)``."""
        g = self.group(shard, key)
        for name, buf in out.items():
            n = buf.shape[0]
            g[name].read_direct(buf, np.s_[start : start + n])

    def read_wave(self, shard: str, key: str, stem: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored waveform of ``stem`` (vocals | accompaniment) at the config's rate, samples
        ``[start, stop)``: float32 ``[n]`` mono, ``[channels, n]`` stereo (the package's waveform
        convention; on disk it is time-major ``[n_samples, channels]``, so a segment is one read).

        Reading it whole (evaluation, remixing) checks its checksum (CorruptDataError when it fails).
        """
        if stem not in WAVE_FIELDS:
            raise ManifestError(f"no stored waveform {stem!r}; stored: {WAVE_FIELDS}")
        ds = self.group(shard, key)[f"wave_{stem}"]
        data = self._checked(shard, key, f"wave_{stem}", ds, ds[start:stop])
        return data if data.ndim == 1 else np.ascontiguousarray(data.T)

    def read_vocal_energy(self, shard: str, key: str) -> np.ndarray:
        """Per-frame energy of the normalized vocals, float32 ``[n_frames]``."""
        ds = self.group(shard, key)["vocal_energy"]
        return self._checked(shard, key, "vocal_energy", ds, ds[:])

    def _checked(self, shard: str, key: str, name: str, ds: h5py.Dataset, data: np.ndarray) -> np.ndarray:
        """``data`` (just read from ``ds``); when it is the whole array, its CRC-32 must match."""
        if data.shape == ds.shape:
            expected = stored_checksum(ds)
            if expected is not None and checksum(data) != expected:
                raise CorruptDataError(f"{self.root / shard}: track {key!r}: {name} fails its checksum (damaged on disk)")
        return data

    def verify(self, shard: str, key: str, fields: tuple[str, ...] = ARRAY_NAMES) -> list[str]:
        """Read the named arrays of a track whole and check each against its CRC-32.

        Returns the arrays that have no checksum (written by an older stemforge). Raises
        CorruptDataError naming the shard, the track and the array when one is missing,
        unreadable or fails its checksum (a truncated or unopenable shard too).
        """
        where = f"{self.root / shard}: track {key!r}"
        try:
            g = self.group(shard, key)
        except ManifestError as exc:
            raise CorruptDataError(str(exc)) from None
        unchecked = []
        for name in fields:
            if name not in g:
                raise CorruptDataError(f"{where}: {name} is missing")
            ds = g[name]
            try:
                expected = stored_checksum(ds)
                got = dataset_checksum(ds)
            except (OSError, RuntimeError, ValueError) as exc:
                raise CorruptDataError(f"{where}: {name} is unreadable ({exc})") from None
            if expected is None:
                unchecked.append(name)
            elif got != expected:
                raise CorruptDataError(f"{where}: {name} fails its checksum (damaged on disk)")
        return unchecked

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except (OSError, RuntimeError, ValueError):  # h5py's errors on a file already closed or damaged: reading is over
                pass
        self._files.clear()

    def __del__(self) -> None:
        self.close()
