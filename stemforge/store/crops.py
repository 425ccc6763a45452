"""Reading crops of stored magnitudes from a DataDir's shards, fast (beside :class:`ShardReader`).

:class:`TrackList` names the tracks (manifest rows: shard, key, frames); :class:`CropReader`
reads frames ``[start, start + P)`` of a track's magnitudes straight into a caller's buffer
(float16 ``[P, n_bins]`` at a mono geometry, ``[P, channels, n_bins]`` at a stereo one: the
stored layout, see docs/data-format.md): the HDF5 chunk index of each (track, field) is read once, after
which a crop is at most two ``os.preadv`` calls (chunks span whole rows and are stored
uncompressed, so the rows of a chunk are contiguous in the file). Other layouts are read
through ``ShardReader.read_frames_into`` (h5py ``read_direct``). The training loader
(``stemforge.train.streaming``) and validation cut their crops with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stemforge.core.errors import ManifestError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from stemforge.store.shards import ShardReader


@dataclass(frozen=True)
class TrackList:
    """Tracks to cut crops from (one entry per manifest row): the training sampler's list.

    Attributes:
        uids, shards, keys: manifest ``uid``, ``shard`` and ``key`` per track.
        n_frames: int64 ``[n_tracks]`` stored frames per track.
    """

    uids: tuple[str, ...]
    shards: tuple[str, ...]
    keys: tuple[str, ...]
    n_frames: np.ndarray

    @classmethod
    def from_rows(cls, rows: "pd.DataFrame") -> "TrackList":
        """From manifest rows (columns uid, shard, key, n_frames); rows with 0 frames are left out."""
        for col in ("uid", "shard", "key", "n_frames"):
            if col not in rows.columns:
                raise ManifestError(f"manifest lacks column {col!r}")
        if rows["n_frames"].isna().any() or rows["shard"].isna().any() or rows["key"].isna().any():
            bad = rows.loc[rows["n_frames"].isna() | rows["shard"].isna() | rows["key"].isna(), "uid"].tolist()
            raise ManifestError(f"manifest rows without shard/key/n_frames: {bad[:5]}")
        n = rows["n_frames"].astype("int64").to_numpy()
        keep = n > 0
        return cls(
            uids=tuple(rows["uid"].astype(str).to_numpy()[keep]),
            shards=tuple(rows["shard"].astype(str).to_numpy()[keep]),
            keys=tuple(rows["key"].astype(str).to_numpy()[keep]),
            n_frames=n[keep].astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.uids)

    @property
    def total_frames(self) -> int:
        return int(self.n_frames.sum())


class _Layout:
    """Where a float16 ``[n_frames, ...]`` dataset's rows (one frame: ``n_bins`` values, or
    ``channels x n_bins``) lie in its file, when they lie there plainly (uncompressed, chunks
    spanning whole rows, every chunk written)."""

    __slots__ = ("offsets", "chunk_rows", "row_bytes")

    def __init__(self, offsets: np.ndarray, chunk_rows: int, row_bytes: int):
        self.offsets = offsets
        self.chunk_rows = chunk_rows
        self.row_bytes = row_bytes


def _plain_layout(dset) -> _Layout | None:
    """The byte layout of an HDF5 dataset, or None when reads must go through h5py."""
    try:
        if dset.dtype != np.dtype("<f2") or dset.ndim < 2 or np.dtype("<f2") != np.dtype(np.float16):
            return None
        dcpl = dset.id.get_create_plist()
        if dcpl.get_nfilters() != 0 or dcpl.get_external_count() != 0:
            return None
        n_rows, row_shape = dset.shape[0], tuple(dset.shape[1:])
        row_bytes = int(np.prod(row_shape)) * 2
        if dset.chunks is None:
            offset = dset.id.get_offset()
            if offset is None:
                return None
            return _Layout(np.array([offset], dtype=np.int64), max(1, n_rows), row_bytes)
        chunk_rows, chunk_row_shape = dset.chunks[0], tuple(dset.chunks[1:])
        if chunk_row_shape != row_shape:
            return None
        n_chunks = -(-n_rows // chunk_rows)
        if dset.id.get_num_chunks() != n_chunks:
            return None
        offsets = np.full(n_chunks, -1, dtype=np.int64)
        infos: list = []
        if hasattr(dset.id, "chunk_iter"):  # one pass over the chunk index (HDF5 >= 1.12.3)
            dset.id.chunk_iter(infos.append)
        else:
            infos = [dset.id.get_chunk_info(i) for i in range(n_chunks)]
        for info in infos:
            if info.filter_mask != 0 or info.byte_offset is None or info.size != chunk_rows * row_bytes:
                return None
            offsets[info.chunk_offset[0] // chunk_rows] = info.byte_offset
        if (offsets < 0).any():
            return None
        return _Layout(offsets, chunk_rows, row_bytes)
    except Exception:  # an h5py/HDF5 build without the chunk query API, or an odd file
        return None


class CropReader:
    """Reads crops of stored magnitudes into preallocated buffers, fast.

    For each (track, field) the HDF5 chunk index is read once, and the whole array is checked
    against its CRC-32 (CorruptDataError naming shard, track and array when it fails; once per
    process: a crop cannot be checked alone); after that a crop of the geometry's patch length
    (128 frames at the seed geometry, 512 at fullband: ``shards.chunk_frames``) is at most two
    ``os.preadv`` calls straight into the caller's buffer (rows of a chunk, every channel and
    bin of a frame, are contiguous in the file because chunks span whole rows and are stored
    uncompressed). A
    dataset with another layout is read with ``ShardReader.read_frames_into`` (h5py
    ``read_direct``). Files are opened lazily and kept open; pickling drops every handle, so a
    ``CropReader`` can be sent to worker processes.

    Args:
        reader: the DataDir's :class:`~stemforge.store.ShardReader` (checks the config of each
            shard on first use).
        tracks: the tracks; ``read_into`` takes an index into it.
    """

    def __init__(self, reader: "ShardReader", tracks: TrackList):
        self.reader = reader
        self.tracks = tracks
        self._fds: dict[str, int] = {}
        self._layouts: dict[tuple[int, str], _Layout | None] = {}
        self.fast_reads = 0
        self.slow_reads = 0

    def __getstate__(self) -> dict:
        return {"reader": self.reader, "tracks": self.tracks}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["reader"], state["tracks"])

    def _fd(self, shard: str) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            path = Path(self.reader.root) / shard
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise ManifestError(f"{path}: cannot open shard ({exc})") from None
            self._fds[shard] = fd
        return fd

    def _layout(self, track: int, field: str) -> _Layout | None:
        key = (track, field)
        if key not in self._layouts:
            group = self.reader.group(self.tracks.shards[track], self.tracks.keys[track])
            try:
                dset = group[field]
            except KeyError:
                raise ManifestError(
                    f"{Path(self.reader.root) / self.tracks.shards[track]}: track {self.tracks.keys[track]!r} has no {field!r}"
                ) from None
            if int(dset.shape[0]) < int(self.tracks.n_frames[track]):
                raise ManifestError(
                    f"{self.tracks.uids[track]}: shard holds {dset.shape[0]} frames, the manifest says {self.tracks.n_frames[track]}"
                )
            # once per process and (track, field), on first use: the whole array against its CRC-32
            self.reader.verify(self.tracks.shards[track], self.tracks.keys[track], (field,))
            self._layouts[key] = _plain_layout(dset)
        return self._layouts[key]

    def read_into(self, track: int, start: int, fields: dict[str, np.ndarray]) -> None:
        """Fill ``fields[name]`` (C-contiguous float16 ``[P, n_bins]``, or ``[P, channels,
        n_bins]`` at a stereo geometry) with frames ``[start, start + P)`` of track ``track``;
        frames past the end are zeros."""
        n = int(self.tracks.n_frames[track])
        for name, out in fields.items():
            rows = out.shape[0]
            stop = min(start + rows, n)
            if stop < start + rows:
                out[max(0, stop - start) :] = 0
            if stop <= start:
                continue
            layout = self._layout(track, name)
            if layout is None or layout.row_bytes != out[0].size * 2:
                self.reader.read_frames_into(
                    self.tracks.shards[track], self.tracks.keys[track], start, {name: out[: stop - start]}
                )
                self.slow_reads += 1
                continue
            fd = self._fd(self.tracks.shards[track])
            dest = memoryview(out.reshape(-1).view(np.uint8))
            row = start
            while row < stop:
                chunk = row // layout.chunk_rows
                chunk_end = min(stop, (chunk + 1) * layout.chunk_rows)
                offset = int(layout.offsets[chunk]) + (row - chunk * layout.chunk_rows) * layout.row_bytes
                a, b = (row - start) * layout.row_bytes, (chunk_end - start) * layout.row_bytes
                got = os.preadv(fd, [dest[a:b]], offset)
                if got != b - a:
                    raise ManifestError(
                        f"{Path(self.reader.root) / self.tracks.shards[track]}: short read in track "
                        f"{self.tracks.keys[track]!r} ({got} of {b - a} bytes): truncated shard?"
                    )
                row = chunk_end
            self.fast_reads += 1

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._layouts.clear()
        self.reader.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  a finalizer runs at interpreter exit; raising there only prints noise
            pass
