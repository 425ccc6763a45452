"""What every recipe returns: :class:`TrackSource`, a description of one track on disk.

A recipe module has the same surface for every corpus:

* ``NAME``: the corpus name used on the command line (``stemforge ingest NAME ROOT``);
* a module docstring (``LAYOUT``) that shows the expected folder layout;
* ``discover(root, **options) -> list[TrackSource]`` which only looks at the folder (no
  decoding) and raises :class:`~stemforge.core.errors.DatasetLayoutError` naming the expected
  layout and what it found when the root is not that corpus;
* ``check_options(**options)``: the checks ``discover`` makes on its options, without a root:
  :class:`~stemforge.core.errors.OptionError` naming the first bad one (the CLI calls it before
  anything is opened, so that a bad option is a usage error). :func:`check_choice` and
  :func:`check_name` are the checks several recipes share;
* optionally ``fixed_split(**options) -> str | None``: for a recipe whose ``valid_fraction`` and
  ``test_fraction`` do not decide the split under some options (MIR-1K's ``huang2014`` rule),
  a clause saying so, which the ingest's no-valid-split warning gives instead of recommending
  a fraction; None (or no such function) when they do.

A TrackSource says which files (or streams, or channels) sum into the mixture, the vocals and
the accompaniment. Everything downstream reads manifests and shards, never a corpus layout.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from stemforge.core.errors import DatasetLayoutError, OptionError

SPLITS = ("train", "valid", "test")
VOCALS_KINDS = ("stem", "channel", "derived", "remix")


def check_choice(option: str, value: object, allowed: tuple[str, ...]) -> None:
    """OptionError naming ``option`` unless ``value`` is one of ``allowed`` (None passes: the
    recipe's default)."""
    if value is not None and value not in allowed:
        raise OptionError(option, f"must be one of {', '.join(allowed)}, got {value!r}")


def check_name(name: object) -> None:
    """OptionError unless ``name`` (a dataset name, the uids' prefix) is letters, digits, '_', '-', '.'."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise OptionError("name", f"use letters, digits, '_', '-', '.' only, got {name!r}")


#: The text fields of a track that are stored as given (manifest columns, shard attributes).
TEXT_FIELDS = ("track_id", "artist", "title", "license")


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be stored as a name (a track id, an artist, a title), or None.

    Refused: a NUL byte (HDF5 attributes cannot hold one; C code reading the manifest stops at
    it), other control characters (line breaks, escapes: a name is one line, and every message
    naming it must stay one line) and text that is not valid UTF-8 (the bytes of a file name in
    another encoding, which Python keeps as lone surrogates: the manifest is UTF-8). A tab is
    allowed.
    """
    if not isinstance(value, str) or not value:
        return None
    if "\x00" in value:
        return "holds a NUL byte (\\x00)"
    bad = next((c for c in value if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F), None)
    if bad is not None:
        return f"holds the control character {bad!r}"
    lone = next((c for c in value if 0xD800 <= ord(c) <= 0xDFFF), None)
    if lone is not None:
        byte = ord(lone) - 0xDC00 if 0xDC80 <= ord(lone) <= 0xDCFF else None
        what = f"the byte \\x{byte:02x}" if byte is not None else f"{lone!r}"
        return f"is not valid UTF-8 ({what}; a file name in another encoding?)"
    return None


def shown_text(value: str, limit: int = 80) -> str:
    """``value`` quoted for a one-line message: control characters escaped (``\\x00``,
    ``\\n``), the bytes of a name that is not UTF-8 as ``\\xff``, cut at ``limit`` characters."""
    parts = []
    for c in value[:limit]:
        code = ord(c)
        if 0xDC80 <= code <= 0xDCFF:
            parts.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            parts.append(repr(c)[1:-1])
        else:
            parts.append(c)
    return "'" + "".join(parts) + ("...'" if len(value) > limit else "'")


@dataclass(frozen=True)
class StemRef:
    """One contribution to a role: a file (relative to the track's root), a stream, a channel, a gain.

    ``channel=None`` keeps every channel (downmixed later); ``0``/``1`` take left/right only.
    ``stream`` picks an audio stream of a multi-stream container (``.stem.mp4``).
    ``gain`` multiplies the samples (MedleyDB mixing coefficients).
    """

    path: str
    stream: int = 0
    channel: int | None = None
    gain: float = 1.0


def inside_root(root: str | Path, *names: str) -> str:
    """A file name that a corpus's own metadata or list gives, checked to stay inside ``root``.

    ``names`` are pieces of one path relative to ``root`` (e.g. track folder, stem folder, file
    name; ``/`` separated); returned joined and normalized (``a/./b`` -> ``a/b``, ``a/../b`` ->
    ``b``). Raises DatasetLayoutError with a one-line reason (for the caller to prefix with the
    file it read the name from) when a piece is empty or absolute, or the path climbs out of
    ``root`` with ``..``. The check is on the names, not on the file system: symbolic links
    inside the root are followed, as the root itself may be one (a corpus assembled from
    several downloads); what it refuses is text in a file naming files elsewhere. Recipes
    whose format is documented to take paths anywhere (the ``csv`` and ``pairs`` lists) do not
    use it.
    """
    depth = 0
    for name in names:
        text = str(name)
        if not text.strip() or "\x00" in text:
            raise DatasetLayoutError(f"file name {text!r} is empty or not a file name")
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
            raise DatasetLayoutError(f"file name {text!r} is an absolute path; only names inside {root} are read")
        for part in text.replace("\\", "/").split("/"):  # a backslash separates on Windows
            if part in ("", "."):
                continue
            depth += -1 if part == ".." else 1
            if depth < 0:
                path = "/".join(str(n) for n in names)
                raise DatasetLayoutError(f"file name {path!r} leads outside {root}; only names inside it are read")
    return posixpath.normpath("/".join(str(n) for n in names))


@dataclass(frozen=True)
class TrackSource:
    """One track of a corpus, as a recipe found it.

    ``mixture`` may be empty: the mixture is then derived as vocals + accompaniment.
    ``loader`` names the function that turns this into audio: ``"stems"`` (sum the StemRefs,
    see :func:`stemforge.recipes.loading.load_stems`) or ``"module:function"`` for special
    cases (karaoke pairs, MUSDB18's ``.stem.mp4``, CSV rows with a derived stem). ``skip_reason`` marks a track found but not ingestible (instrumental,
    mixed-label voice stem, ...): ingest reports it as excluded without reading audio;
    ``error`` marks a track found but broken (an empty folder, a missing stem): ingest reports
    it as failed with that reason. ``length_tolerance`` is how many samples stems of one
    track may differ by (0 for PCM; a few for lossy codecs with padding).
    ``options`` lists recipe options that change the stored arrays; they enter the source
    fingerprint so a re-run with other options redoes the track. ``extra`` holds additional
    manifest columns as (name, value) pairs.
    """

    dataset: str
    track_id: str
    root: str
    artist: str = ""
    title: str = ""
    split: str = "train"
    mixture: tuple[StemRef, ...] = ()
    vocals: tuple[StemRef, ...] = ()
    accompaniment: tuple[StemRef, ...] = ()
    vocals_kind: str = "stem"
    license: str = ""
    loader: str = "stems"
    options: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, object], ...] = ()
    skip_reason: str | None = None
    error: str | None = None
    length_tolerance: int = 0
    group: str = field(default="")

    @property
    def uid(self) -> str:
        """``dataset:track_id``, the manifest's primary key."""
        return f"{self.dataset}:{self.track_id}"

    @property
    def source_path(self) -> str:
        """A path relative to the corpus root that identifies the track (its first file)."""
        for refs in (self.mixture, self.vocals, self.accompaniment):
            if refs:
                return refs[0].path
        return ""

    def text_problem(self) -> str | None:
        """Why a text field of this track cannot be stored (:func:`text_problem`), as
        ``field 'x': reason``, or None; the file names are checked for UTF-8 too. The ingest
        engine fails such a track in one line before reading it, whatever recipe made it."""
        for name in TEXT_FIELDS:
            problem = text_problem(getattr(self, name))
            if problem:
                return f"{name} {shown_text(getattr(self, name))} {problem}"
        for refs in (self.mixture, self.vocals, self.accompaniment):
            for ref in refs:
                problem = text_problem(ref.path)
                if problem:
                    return f"file name {shown_text(ref.path)} {problem}"
        for key, value in self.extra:
            problem = text_problem(value) if isinstance(value, str) else None
            if problem:
                return f"{key} {shown_text(value)} {problem}"
        return None

    def files(self) -> list[Path]:
        """Every distinct file this track reads, absolute, in a stable order."""
        seen: dict[str, None] = {}
        for refs in (self.mixture, self.vocals, self.accompaniment):
            for r in refs:
                seen.setdefault(r.path, None)
        return [Path(self.root) / p for p in seen]


@dataclass
class TrackAudio:
    """A track as waveforms at the config's ``sample_rate`` and ``channels``, float32
    ``[n_samples]`` (mono) or ``[channels, n_samples]``, before the STFT; what a loader returns
    (:mod:`stemforge.recipes.loading`). ``source_sample_rate`` and ``source_channels`` describe
    the files it came from.

    ``mixture`` None means "derive it as vocals + accompaniment". ``extra`` holds additional
    manifest columns the loader computed (alignment figures, ...).
    """

    vocals: np.ndarray
    accompaniment: np.ndarray
    mixture: np.ndarray | None
    source_sample_rate: int
    source_channels: int
    extra: dict = field(default_factory=dict)
