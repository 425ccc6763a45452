"""Typed errors raised by library code.

Library code raises these and never prints or exits; the CLI maps each to a one-line message
and an exit code (see ``stemforge.cli.common``).
"""

from __future__ import annotations


class StemforgeError(Exception):
    """Base class of every error stemforge raises on purpose."""


class AudioError(StemforgeError):
    """A file cannot be decoded, is truncated, empty, silent where it must not be, or mismatched."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.path, self.reason))


class DecodeLimitError(AudioError):
    """A file is over a decode bound (:class:`stemforge.core.audio.DecodeLimits`): too long, too
    many channels, a sample rate out of range, too many samples; ``bound`` names which
    (``"seconds"``, ``"channels"``, ``"rate"``, ``"samples"``)."""

    def __init__(self, path: object, reason: str, bound: str = ""):
        self.bound = bound
        super().__init__(path, reason)

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.path, self.reason, self.bound))


class OptionError(StemforgeError):
    """An option (a keyword argument such as ``valid_fraction``) has a value it cannot take.

    ``option`` names it, ``reason`` says why in one line; the CLI reports it as a usage error
    (exit 2) under the option's flag (``--valid-fraction``), before anything is opened.
    """

    def __init__(self, option: str, reason: str):
        self.option = option
        self.reason = reason
        super().__init__(f"{option}: {reason}")

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.option, self.reason))


class DatasetLayoutError(StemforgeError):
    """A corpus root does not have the layout its recipe expects."""


class ManifestError(StemforgeError):
    """A manifest or DataDir is missing, malformed, or inconsistent with its shards."""


class ConfigMismatchError(StemforgeError):
    """A stored object was made with another configuration than the reader's."""

    def __init__(self, what: str, expected: object, found: object):
        self.what = what
        self.expected = expected
        self.found = found
        super().__init__(f"{what}: configuration mismatch: expected {expected}, found {found}")

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.what, self.expected, self.found))


class CheckpointError(StemforgeError):
    """A checkpoint (or imported weights file) is missing, foreign or incomplete."""


class DataDirLockedError(StemforgeError):
    """Another process holds the write lock of a DataDir."""


class AlignmentError(StemforgeError):
    """An original/karaoke pair cannot be aligned with enough confidence."""


class OutputPathError(StemforgeError):
    """An output path cannot be made (bad template, unusable name) or would leave the folder it
    must stay in."""


class DiskFullError(StemforgeError):
    """A write found no room (ENOSPC: the disk is full; EDQUOT: the quota is spent).

    Raised before anything half-written could be taken as valid: the file being written is
    dropped and what was stored before stays. ``kept`` says what was kept (filled in by the
    DataDir layer, which knows); the CLI prints the one line and exits 3.
    """

    def __init__(self, path: object, reason: str = "No space left on device", kept: str = ""):
        self.path = str(path)
        self.reason = reason
        self.kept = kept
        super().__init__(f"{self.path}: disk full ({reason})" + (f"; {kept}" if kept else ""))

    def __reduce__(self):  # picklable across process pools
        return (type(self), (self.path, self.reason, self.kept))


class CorruptDataError(ManifestError):
    """Stored arrays are damaged: unreadable, truncated, or their bytes fail their checksum."""


class RunLockedError(StemforgeError):
    """Another ``stemforge train`` holds the lock of a run folder (it is training into it)."""


class PeerLostError(StemforgeError):
    """A process of a distributed run stopped answering (frozen, hung) or is gone (crashed,
    killed): the collective it was needed in timed out or its connection closed."""
