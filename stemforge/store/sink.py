"""Writing many tracks into shards, committing the manifest shard by shard.

Ingest and augment both produce (row, arrays) per track in a parent process; :class:`ShardSink`
stores them into shards of bounded size and commits the manifest after every shard, so that a
killed run loses at most the shard being written and a re-run adds only what is missing.
"""

from __future__ import annotations

from typing import Callable

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
        """Store ``arrays`` under ``key``; ``row`` (the manifest row) gets ``key`` and ``shard``."""
        w = self._writer
        if w is not None and (w.n_tracks >= self.max_tracks or w.n_bytes >= self.max_bytes):
            self.flush()
        if self._writer is None:
            self._writer = self.datadir.shard_writer(self.prefix)
        self._writer.add(key, uid, arrays)
        row["key"] = key
        self._rows.append(row)

    def flush(self) -> None:
        """Close the current shard and commit its rows (nothing when no shard is open)."""
        if self._writer is None:
            return
        final = self._writer.close()
        self._writer = None
        for row in self._rows:
            row["shard"] = self.datadir.relative(final)
        self.datadir.commit(self._rows)
        if self.after_commit is not None:
            self.after_commit(self.datadir)
        self.committed.extend(self._rows)
        self._rows = []

    def abort(self) -> None:
        """Drop the shard being written (its rows are not committed)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self._rows = []

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
