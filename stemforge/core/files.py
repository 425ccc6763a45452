"""Atomic file writes, with the permissions a plain ``open()`` gives and a full disk as a typed error.

Every file stemforge writes appears whole or not at all: it is written under a temporary name in
the same folder (``.<name>.<random>.tmp``), fsynced, and renamed over the final name. The
temporary file is created with mode ``0o666``, so the kernel applies the user's umask exactly as
for ``open(path, "w")`` (``0o644`` under umask 022, ``0o640`` under 027, default ACLs included);
``tempfile.mkstemp`` would give ``0o600`` and lock colleagues out of a shared DataDir.

:func:`atomic_path`, :func:`atomic_open`, :func:`write_bytes` and :func:`write_text` do it for one
block; :class:`PendingFile` for a writer whose life spans several calls (a shard, filled track by
track), with an fd kept open for :func:`reserve`, truncation and fsync.

A full disk or quota (``ENOSPC``, ``EDQUOT``) raises :class:`~stemforge.core.errors.DiskFullError`
naming the file; the temporary file is removed and the previous file, if any, is untouched.

:func:`reserve` claims disk blocks ahead of a writer that cannot take a full disk gracefully
(libhdf5 crashes the process when a write fails midway): the bytes are allocated with
``posix_fallocate`` before the writer runs, so the writer's own writes land in blocks that are
already the file's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from pathlib import Path
from typing import IO, Iterator

from stemforge.core.errors import DiskFullError, OutputPathError

#: errno values that mean "no room": the disk is full or the user's quota is spent.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Mode of every created file before the umask is applied (what ``open()`` uses).
FILE_MODE = 0o666


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it wraps) is an ``OSError`` with ENOSPC or EDQUOT."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full(path: str | os.PathLike, exc: BaseException | None = None) -> DiskFullError:
    """The :class:`DiskFullError` for a failed write of ``path`` (reason from ``exc``'s errno)."""
    if isinstance(exc, DiskFullError):
        return exc
    if exc is not None and not isinstance(exc, OSError):
        exc = next((e for e in (exc.__cause__, exc.__context__) if isinstance(e, (OSError, DiskFullError))), None)
        if isinstance(exc, DiskFullError):
            return exc
    code = exc.errno if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS else errno.ENOSPC
    return DiskFullError(path, os.strerror(code))


#: What a file that is not a regular file is, by its type bits (``stat.S_IFMT``).
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def regular_file_problem(path: str | os.PathLike, kind: str = "file", missing: str = "file not found") -> str | None:
    """Why ``path`` cannot be read as a regular file, in a few words, or None when it can.

    Looks only at what ``stat`` says (symbolic links followed), never opens the file: opening a
    FIFO for reading blocks until a writer comes, and a device such as ``/dev/zero`` reads for
    ever. ``kind`` names what was expected (``"audio file"``, ``"stemforge checkpoint file"``);
    ``missing`` is the reason for a path that does not exist. The reasons: ``missing``, a
    dangling symbolic link, a symbolic link loop, a path through something that is not a folder,
    permission denied, a name that is too long or holds a NUL byte, a directory, or "not a
    regular file (a FIFO)" and the like for FIFOs, devices and sockets.
    """
    try:
        st = os.stat(path)
    except ValueError:  # os.stat refuses a name holding a NUL byte
        return "not a file name (it holds a NUL byte)"
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "a dangling symbolic link (what it points to does not exist)" if os.path.islink(path) else missing
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (too many levels of symbolic links)"
        if exc.errno == errno.ENOTDIR:
            return f"{missing} (a part of the path is a file, not a folder)"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied (a folder on the path cannot be searched)"
        if exc.errno == errno.ENAMETOOLONG:
            return "file name too long"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return f"is a directory, not {_article(kind)}"
    return f"not a regular file ({_FILE_KINDS.get(stat.S_IFMT(st.st_mode), 'a special file')})"


def _article(kind: str) -> str:
    return ("an " if kind[:1].lower() in "aeiou" else "a ") + kind


def temporary_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def create_new(path: str | os.PathLike) -> int:
    """Create ``path`` (which must not exist) for writing with mode ``0o666 & ~umask``; an fd."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PendingFile:
    """A file being written under a temporary name beside its final name ``path``.

    Creating it creates ``tmp_path`` (:func:`temporary_name` unless given: a caller that finds
    its leftovers by their name, as a DataDir does ``*.h5.tmp`` shards, names its own) with mode
    ``0o666 & ~umask`` and keeps ``fd`` open on it for writing; the writer may also open
    ``tmp_path`` by name. :meth:`sync` makes it durable, :meth:`commit` renames it over ``path``,
    :meth:`abort` removes it. ENOSPC/EDQUOT raise :class:`DiskFullError` naming ``path``.
    """

    def __init__(self, path: str | os.PathLike, tmp_path: str | os.PathLike | None = None):
        self.path = Path(path)
        self.tmp_path = Path(tmp_path) if tmp_path is not None else temporary_name(self.path)
        self.synced = False
        try:
            self.fd = create_new(self.tmp_path)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full(self.path, exc) from None
            raise

    def close(self) -> None:
        """Close ``fd`` (a writer that opens ``tmp_path`` by name needs no other)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def sync(self, size: int | None = None) -> None:
        """Cut the file to ``size`` bytes when it is longer (blocks :func:`reserve` claimed that
        the writer did not use), fsync it and close ``fd``."""
        try:
            if self.fd < 0:
                _fsync_path(self.tmp_path)
                return
            if size is not None and os.fstat(self.fd).st_size > size:
                os.ftruncate(self.fd, size)
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full(self.path, exc) from None
            raise
        finally:
            self.close()
        self.synced = True

    def commit(self, fsync: bool = True) -> Path:
        """:meth:`sync` (unless done, or ``fsync`` is False) and rename over ``path``; returns ``path``."""
        if fsync and not self.synced:
            self.sync()
        self.close()
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close ``fd`` and remove the temporary file."""
        self.close()
        with contextlib.suppress(OSError):
            self.tmp_path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (soundfile,
    matplotlib, a video muxer); when the block ends without an exception the file is fsynced and
    renamed over ``path``, otherwise removed.

    The temporary file already exists (empty, mode ``0o666 & ~umask``) when yielded; a writer
    that opens it for writing truncates it and keeps that mode. ENOSPC/EDQUOT anywhere in the
    block (or wrapped by the writer's own error) raises :class:`DiskFullError` naming ``path``.
    """
    pending = PendingFile(path)
    pending.close()
    try:
        yield pending.tmp_path
        pending.commit(fsync)
    except BaseException as exc:
        pending.abort()
        if is_disk_full(exc):
            raise disk_full(pending.path, exc) from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None, newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` (``mode`` "w"/"wb"); renamed over ``path`` when
    the block ends without an exception (after flush and fsync), removed otherwise.

    ENOSPC/EDQUOT raise :class:`DiskFullError` naming ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    if "b" in mode:
        encoding = None
    elif encoding is None:
        encoding = "utf-8"
    with atomic_path(path, fsync=False) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation); returns the path."""
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)


def check_outputs(outputs: list[str | os.PathLike], inputs: list[str | os.PathLike], force: bool = False) -> None:
    """OutputPathError naming the first of ``outputs`` that is one of ``inputs`` (never
    overwritten), is given twice, or exists while ``force`` is False."""
    resolved_inputs = {Path(p).resolve() for p in inputs}
    seen: set[Path] = set()
    for path in outputs:
        resolved = Path(path).resolve()
        if resolved in resolved_inputs:
            raise OutputPathError(f"{path}: refusing to overwrite an input file")
        if resolved in seen:
            raise OutputPathError(f"{path}: given for two outputs")
        seen.add(resolved)
        if resolved.exists() and not force:
            raise OutputPathError(f"{path}: exists (use --force to overwrite)")


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged user may still write on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return int(st.f_bavail) * int(st.f_frsize)


def reserve(fd: int, size: int, path: str | os.PathLike) -> None:
    """Make sure the file open as ``fd`` owns at least its first ``size`` bytes on disk.

    ``posix_fallocate`` allocates the blocks (the file grows to ``size`` if smaller), so later
    writes inside them cannot fail for space on ordinary filesystems (ext4, xfs, tmpfs; on
    copy-on-write ones such as btrfs and ZFS it is a best effort). Where the filesystem cannot
    allocate ahead, the free space is checked instead. Raises :class:`DiskFullError` naming
    ``path`` when the bytes are not there.
    """
    try:
        os.posix_fallocate(fd, 0, int(size))
        return
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise disk_full(path, exc) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
    missing = int(size) - os.fstat(fd).st_size
    if missing > 0 and free_bytes(Path(path).parent) < missing:
        raise disk_full(path)
