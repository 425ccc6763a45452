"""Writing many tracks into shards, committing the manifest shard by shard.

Ingest and augment both produce (row, arrays) per track in a parent process; :class:`ShardSink`
stores them into shards of bounded size and commits the manifest after every shard, so that a
killed run loses at most the shard being written and a re-run adds only what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from stemforge.core.errors import DiskFullError
from stemforge.store.datadir import DataDir
from stemforge.store.shards import ShardWriter, TrackArrays

BYTES_PER_SHARD = 512 << 20


class ShardSink:
    """Add tracks with :meth:`add`; :meth:`close` (or leaving the ``with`` block) commits the rest.

    ``max_tracks``/``max_bytes`` bound a shard; ``after_commit(datadir)`` runs after each
    manifest commit (identity reconciliation). On an exception inside the ``with`` block the
    shard being written is dropped (its temporary file removed) and nothing of it is committed.
    Must be used under ``datadir.writing()``.
    """

    def __init__(
        self,
        datadir: DataDir,
        prefix: str,
        max_tracks: int,
        max_bytes: int = BYTES_PER_SHARD,
        after_commit: Callable[[DataDir], None] | None = None,
    ):
        self.datadir = datadir
        self.prefix = prefix
        self.max_tracks = max(1, int(max_tracks))
        self.max_bytes = max_bytes
        self.after_commit = after_commit
        self.committed: list[dict] = []
        self._rows: list[dict] = []
        self._writer: ShardWriter | None = None

    def add(self, key: str, uid: str, row: dict, arrays: TrackArrays) -> None:
        """Store ``arrays`` under ``key``; ``row`` (the manifest row) gets ``key`` and ``shard``.

        A full disk raises DiskFullError naming the DataDir and what it kept (every shard
        committed before; the shard being written is dropped).
        """
        w = self._writer
        if w is not None and (w.n_tracks >= self.max_tracks or w.n_bytes >= self.max_bytes):
            self.flush()
        try:
            if self._writer is None:
                self._writer = self.datadir.shard_writer(self.prefix)
            self._writer.add(key, uid, arrays)
        except DiskFullError as exc:
            raise self._disk_full(exc, len(self._rows) + 1) from None
        row["key"] = key
        self._rows.append(row)

    def flush(self) -> None:
        """Close the current shard and commit its rows (nothing when no shard is open).

        When the commit fails (a full disk while writing the manifest) the shard just renamed is
        deleted again, so the DataDir holds no shard its manifest does not reference.
        """
        if self._writer is None:
            return
        try:
            final = self._writer.close()
        except DiskFullError as exc:
            raise self._disk_full(exc, len(self._rows)) from None
        self._writer = None
        rel = self.datadir.relative(final)
        for row in self._rows:
            row["shard"] = rel
        try:
            self.datadir.commit(self._rows)
        except BaseException as exc:
            if rel in set(self.datadir.manifest["shard"].dropna()):  # the manifest made it
                self.committed.extend(self._rows)
                self._rows = []
            else:
                final.unlink(missing_ok=True)
            if isinstance(exc, DiskFullError):
                raise self._disk_full(exc, len(self._rows)) from None
            raise
        self.committed.extend(self._rows)
        self._rows = []
        if self.after_commit is not None:
            try:
                self.after_commit(self.datadir)
            except DiskFullError as exc:
                raise self._disk_full(exc, 0) from None

    def abort(self) -> None:
        """Drop the shard being written (its rows are not committed)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self._rows = []

    def _disk_full(self, exc: DiskFullError, n_dropped: int) -> DiskFullError:
        """``exc`` restated for the DataDir: where, why, and what it kept."""
        if exc.kept:
            return exc
        root = self.datadir.path
        try:
            what = str(Path(exc.path).resolve().relative_to(root.resolve()))
        except ValueError:
            what = exc.path
        kept = (
            f"kept the {len(self.datadir.manifest)} track(s) committed before ({len(self.committed)} by this run), "
            f"dropped the {n_dropped} of the shard being written; the DataDir is valid: free space and run again"
        )
        return DiskFullError(root, f"{exc.reason} while writing {what}", kept)

    @property
    def pending_keys(self) -> set[str]:
        """Keys used in the shard being written (keys must be unique within a shard)."""
        return {r["key"] for r in self._rows}

    def __enter__(self) -> "ShardSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.abort()
