"""HDF5 shards: many tracks per file, each a group of time-major arrays.

Layout of one shard ``shards/<source>-NNNNN.h5``::

    /                     attrs: format_version, config_hash, config (JSON), stemforge_version
    /tracks/<key>/        attrs: uid, norm, n_frames, n_samples, sample_rate, config_hash
        mixture           float16 [n_frames, n_bins]  normalized magnitude
        vocals            float16 [n_frames, n_bins]
        accompaniment     float16 [n_frames, n_bins]
        vocal_energy      float32 [n_frames]          per-frame energy of the normalized vocals
        wave_vocals       float32 [n_samples]         16 kHz mono waveform (not normalized)
        wave_accompaniment float32 [n_samples]

Magnitudes are chunked by 128 frames, so a 128-frame crop touches at most two chunks, and
stored uncompressed so a crop is one read. A shard is written under a temporary name and
renamed when complete: a file named ``*.h5`` is always whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from stemforge.core.config import SpectrogramConfig, check_config
from stemforge.core.errors import ManifestError

SHARD_FORMAT_VERSION = 1
CHUNK_FRAMES = 128
WAVE_CHUNK = 128 * 512
MAG_FIELDS = ("mixture", "vocals", "accompaniment")
WAVE_FIELDS = ("vocals", "accompaniment")
TMP_SUFFIX = ".tmp"
_F16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class TrackArrays:
    """Everything stored for one track.

    Magnitudes ``[n_frames, n_bins]`` float32 (normalized, converted to float16 on write),
    ``vocal_energy [n_frames]``, waveforms ``[n_samples]`` float32 at the config's rate.
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


class ShardWriter:
    """Write tracks into ``final_path`` through a temporary file; :meth:`close` renames it.

    Not thread-safe; one writer per shard. Use as a context manager: an exception aborts
    (the temporary file is removed, nothing named ``*.h5`` appears).
    """

    def __init__(self, final_path: Path, config: SpectrogramConfig, version: str):
        self.final_path = Path(final_path)
        self.tmp_path = self.final_path.with_name(self.final_path.name + TMP_SUFFIX)
        self.config = config
        self._file = h5py.File(self.tmp_path, "w")
        self._file.attrs["format_version"] = SHARD_FORMAT_VERSION
        self._file.attrs["config_hash"] = config.hash
        self._file.attrs["config"] = json.dumps(config.to_dict(), sort_keys=True)
        self._file.attrs["stemforge_version"] = version
        self._tracks = self._file.create_group("tracks")
        self.n_tracks = 0
        self.n_bytes = 0

    def add(self, key: str, uid: str, arrays: TrackArrays) -> None:
        """Store one track under ``/tracks/<key>``."""
        g = self._tracks.create_group(key)
        n_frames, n_bins = arrays.mixture.shape
        if n_bins != self.config.n_bins:
            raise ManifestError(f"{uid}: {n_bins} bins, the config stores {self.config.n_bins}")
        chunk = (min(CHUNK_FRAMES, n_frames), n_bins)
        for name in MAG_FIELDS:
            data = getattr(arrays, name)
            data16 = _to_float16(data)
            g.create_dataset(name, data=data16, chunks=chunk)
            self.n_bytes += data16.nbytes
        g.create_dataset("vocal_energy", data=arrays.vocal_energy.astype(np.float32))
        for name in WAVE_FIELDS:
            wave = getattr(arrays, f"wave_{name}").astype(np.float32, copy=False)
            g.create_dataset(f"wave_{name}", data=wave, chunks=(min(WAVE_CHUNK, max(1, wave.size)),))
            self.n_bytes += wave.nbytes
        g.attrs.update(
            uid=uid,
            norm=float(arrays.norm),
            n_frames=n_frames,
            n_samples=int(arrays.wave_vocals.size),
            sample_rate=self.config.sample_rate,
            config_hash=self.config.hash,
        )
        self.n_tracks += 1

    def close(self) -> Path:
        """Flush, fsync and rename to the final name; returns the final path."""
        self._file.flush()
        self._file.close()
        with open(self.tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp_path, self.final_path)
        return self.final_path

    def abort(self) -> None:
        """Drop the temporary file."""
        try:
            self._file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

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

    def read_frames(
        self, shard: str, key: str, start: int = 0, stop: int | None = None, fields: tuple[str, ...] = MAG_FIELDS
    ) -> dict[str, np.ndarray]:
        """Frames ``[start, stop)`` of the given magnitude fields: float16 ``[stop-start, n_bins]`` each.

        Reads only that slice from disk (hyperslab), never the whole track.
        """
        g = self.group(shard, key)
        return {name: g[name][start:stop] for name in fields}

    def read_frames_into(self, shard: str, key: str, start: int, out: dict[str, np.ndarray]) -> None:
        """Fill preallocated float16 arrays ``out[field] [n, n_bins]`` with frames ``[start, start+n)``."""
        g = self.group(shard, key)
        for name, buf in out.items():
            n = buf.shape[0]
            g[name].read_direct(buf, np.s_[start : start + n])

    def read_wave(self, shard: str, key: str, stem: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored 16 kHz mono waveform of ``stem`` (vocals | accompaniment), samples ``[start, stop)``."""
        if stem not in WAVE_FIELDS:
            raise ManifestError(f"no stored waveform {stem!r}; stored: {WAVE_FIELDS}")
        return self.group(shard, key)[f"wave_{stem}"][start:stop]

    def read_vocal_energy(self, shard: str, key: str) -> np.ndarray:
        """Per-frame energy of the normalized vocals, float32 ``[n_frames]``."""
        return self.group(shard, key)["vocal_energy"][:]

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:
                pass
        self._files.clear()

    def __del__(self) -> None:
        self.close()
