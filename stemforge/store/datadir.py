"""The DataDir: ``stemforge.json`` + ``manifest.csv`` + ``shards/*.h5``.

Readers open it with :meth:`DataDir.open`; writers use :meth:`DataDir.create` and do all their
changes inside ``with datadir.writing():``, which takes an exclusive lock (``fcntl.flock`` on
``.stemforge.lock``; released by the kernel if the process dies), removes half-written shards left
by a killed writer and reloads the manifest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from stemforge import __version__
from stemforge.core import files
from stemforge.core.config import SpectrogramConfig, check_config
from stemforge.core.errors import DataDirLockedError, ManifestError
from stemforge.store import manifest as mf
from stemforge.store.shards import TMP_SUFFIX, ShardReader, ShardWriter

FORMAT_VERSION = 1
META_NAME = "stemforge.json"
MANIFEST_NAME = "manifest.csv"
SHARDS_DIR = "shards"
LOCK_NAME = ".stemforge.lock"
_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<n>\d{5})\.h5$")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _write_json_atomic(path: Path, data: dict) -> None:
    files.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class DataDir:
    """A stemforge data directory. Construct with :meth:`open` (read) or :meth:`create` (write)."""

    def __init__(self, path: Path, config: SpectrogramConfig, meta: dict):
        self.path = Path(path)
        self.config = config
        self.meta = meta
        self._manifest: pd.DataFrame | None = None
        self._manifest_hash = ""
        self._lock_fd: int | None = None

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, config: SpectrogramConfig | None = None) -> "DataDir":
        """Open an existing DataDir; ConfigMismatchError when ``config`` is given and differs."""
        p = Path(path)
        meta_path = p / META_NAME
        if not meta_path.exists():
            what = "does not exist" if not p.exists() else f"has no {META_NAME}"
            raise ManifestError(f"{p}: not a stemforge DataDir ({what}); create one with `stemforge ingest`")
        try:
            meta = json.loads(meta_path.read_text())
            stored = SpectrogramConfig.from_dict(meta["spectrogram"])
        except Exception as exc:
            raise ManifestError(f"{meta_path}: unreadable ({exc})") from None
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ManifestError(
                f"{p}: format version {meta.get('format_version')} is newer than this stemforge reads ({FORMAT_VERSION})"
            )
        if meta.get("config_hash") != stored.hash:
            raise ManifestError(f"{meta_path}: recorded hash {meta.get('config_hash')} does not match its config {stored.hash}")
        if config is not None:
            check_config(str(p), config, stored.hash, stored.to_dict())
        return cls(p, stored, meta)

    @classmethod
    def create(cls, path: str | os.PathLike, config: SpectrogramConfig | None = None) -> "DataDir":
        """Open ``path`` for writing, creating an empty DataDir there if it is not one yet.

        An existing DataDir made with another config raises ConfigMismatchError; a non-empty
        folder that is not a DataDir raises ManifestError (we never write into foreign folders).
        """
        config = config or SpectrogramConfig()
        p = Path(path)
        if (p / META_NAME).exists():
            return cls.open(p, config)
        if p.exists() and any(x for x in p.iterdir() if x.name not in (LOCK_NAME,)):
            raise ManifestError(f"{p}: folder exists, is not empty and is not a stemforge DataDir; choose another --out")
        (p / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "spectrogram": config.to_dict(),
            "config_hash": config.hash,
            "created": _now(),
            "created_by": f"stemforge {__version__}",
            "updated": _now(),
            "updated_by": f"stemforge {__version__}",
        }
        dd = cls(p, config, meta)
        with dd.writing():
            if not (p / MANIFEST_NAME).exists():
                mf.write_manifest(mf.empty_manifest(), p / MANIFEST_NAME)
            _write_json_atomic(p / META_NAME, meta)
        return dd

    # -- manifest ------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    @property
    def shards_path(self) -> Path:
        return self.path / SHARDS_DIR

    @property
    def manifest(self) -> pd.DataFrame:
        """The manifest (read once and cached; :meth:`reload` re-reads it). Its rows and
        :attr:`manifest_hash` come from the same read of the file."""
        if self._manifest is None:
            try:
                data = self.manifest_path.read_bytes()
            except FileNotFoundError:
                self._manifest, self._manifest_hash = mf.empty_manifest(), ""
            else:
                self._manifest = mf.read_manifest(self.manifest_path, data)
                self._manifest_hash = _bytes_hash(data)
        return self._manifest

    def reload(self) -> pd.DataFrame:
        self._manifest = None
        return self.manifest

    def select(
        self, split: str | None = None, dataset: str | None = None, include_duplicates: bool = False
    ) -> pd.DataFrame:
        """Rows of the manifest for a split and/or dataset; duplicates left out unless asked."""
        df = self.manifest
        mask = pd.Series(True, index=df.index)
        if split is not None:
            mask &= df["split"] == split
        if dataset is not None:
            mask &= df["dataset"] == dataset
        if not include_duplicates:
            mask &= df["duplicate_of"].isna() | (df["duplicate_of"] == "")
        return df[mask.fillna(False)]

    @property
    def manifest_hash(self) -> str:
        """SHA-256 (first 16 hex) of the bytes :attr:`manifest` was read from ("" without a
        manifest file): what a checkpoint records. Taken from the same read as the rows, so a
        writer committing in between (an augment) cannot make it describe other rows than those
        trained on."""
        self.manifest
        return self._manifest_hash

    def reader(self) -> ShardReader:
        """A picklable reader of this DataDir's shards (see :class:`ShardReader`)."""
        return ShardReader(self.path, self.config)

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self) -> Iterator["DataDir"]:
        """Hold the write lock; clean half-written shards; reload the manifest. Re-entrant."""
        if self._lock_fd is not None:
            yield self
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, files.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLockedError(f"{self.path}: another stemforge process (pid {holder}) is writing to this DataDir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        try:
            self.remove_temporary()
            self.reload()
            yield self
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise ManifestError(f"{self.path}: write attempted without the lock (use `with datadir.writing():`)")

    def remove_temporary(self) -> list[Path]:
        """Delete shards a killed writer left half-written (``*.h5.tmp``); returns them."""
        gone = []
        if self.shards_path.exists():
            for p in self.shards_path.glob(f"*{TMP_SUFFIX}"):
                p.unlink(missing_ok=True)
                gone.append(p)
        return gone

    def next_shard_path(self, prefix: str) -> Path:
        """``shards/<prefix>-NNNNN.h5`` with the next free number for that prefix."""
        self._require_lock()
        prefix = re.sub(r"[^A-Za-z0-9_.]+", "_", prefix) or "shard"
        used = [-1]
        for p in self.shards_path.iterdir():
            name = p.name[: -len(TMP_SUFFIX)] if p.name.endswith(TMP_SUFFIX) else p.name
            m = _SHARD_RE.match(name)
            if m and m.group("prefix") == prefix:
                used.append(int(m.group("n")))
        return self.shards_path / f"{prefix}-{max(used) + 1:05d}.h5"

    def shard_writer(self, prefix: str) -> ShardWriter:
        """A writer for a new shard (under the lock)."""
        self.shards_path.mkdir(parents=True, exist_ok=True)
        return ShardWriter(self.next_shard_path(prefix), self.config, __version__)

    def commit(self, rows: list[dict], drop_uids: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
        """Add (or replace) manifest rows and drop ``drop_uids``; writes the manifest atomically.

        Shards that no row references any more are deleted afterwards.
        """
        self._require_lock()
        df = self.manifest
        if drop_uids:
            df = df[~df["uid"].isin(set(drop_uids))]
        df = mf.upsert(df, rows)
        mf.write_manifest(df, self.manifest_path)
        self._manifest = df
        self._manifest_hash = _bytes_hash(self.manifest_path.read_bytes())  # under the lock: the bytes just written
        self.meta["updated"] = _now()
        self.meta["updated_by"] = f"stemforge {__version__}"
        _write_json_atomic(self.path / META_NAME, self.meta)
        self.remove_orphan_shards()
        return df

    def remove_orphan_shards(self) -> list[Path]:
        """Delete complete shards that no manifest row references (after --force re-runs)."""
        self._require_lock()
        used = set(self.manifest["shard"].dropna())
        gone = []
        for p in sorted(self.shards_path.glob("*.h5")):
            if f"{SHARDS_DIR}/{p.name}" not in used:
                p.unlink()
                gone.append(p)
        return gone

    def shard_files(self) -> list[Path]:
        return sorted(self.shards_path.glob("*.h5")) if self.shards_path.exists() else []

    def relative(self, shard_path: Path) -> str:
        return f"{SHARDS_DIR}/{Path(shard_path).name}"
