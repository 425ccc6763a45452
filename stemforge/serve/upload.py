"""Receiving a song: the multipart body streamed to disk, its format sniffed, the stored file probed.

A ``POST /api/jobs`` body is ``multipart/form-data`` with the song in the field ``file``. It is
fed chunk by chunk to python-multipart's streaming parser (:class:`MultipartUpload`), whose
callbacks write the file part straight into the job's folder: nothing is buffered whole in
memory, and reading stops with 413 the moment the file passes the limit. The stored name is
fixed, ``input<.ext>``, its extension sniffed from the file's first :data:`SNIFF_BYTES` bytes
(:func:`sniff_suffix`; the client's extension only when the bytes say nothing), and the file
appears under that name only once complete (:func:`stemforge.core.files.atomic_path`).
:func:`receive_upload` drives the parser from the ASGI ``receive`` with the body's deadlines
(408); :func:`probe` then reads the stored file's header and decodes its first samples (415,
422).

Every refusal is an :class:`UploadRefused`: an HTTP status and a one-line reason, answered by
the app as ``{"detail": "..."}``. Everything here but :func:`receive_upload` works on bytes and
paths, without a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Awaitable, Callable

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException

from stemforge.core import audio as audio_io
from stemforge.core import files
from stemforge.core.errors import AudioError, DecodeLimitError
from stemforge.core.names import song_name
from stemforge.serve.decode import job_limits
from stemforge.serve.jobs import one_line

#: Upload formats the page advertises (anything FFmpeg or libsndfile decodes is tried).
FORMATS = ("wav", "flac", "mp3", "ogg", "m4a", "aiff", "opus", "webm")
#: Bytes of multipart framing (boundaries, part headers, small fields) allowed beyond the file.
FORM_OVERHEAD = 64 * 1024
#: Form fields other than the file that are read at all (and then ignored).
MAX_PARTS = 8
#: Bytes of the file's beginning that decide its format (:func:`sniff_suffix`).
SNIFF_BYTES = 64
#: On a 413 or 408 the server closes the connection, so that the rest of the body is not even
#: received (uvicorn would otherwise read and discard it to keep the connection alive).
CLOSE = {"Connection": "close"}


class UploadRefused(HTTPException):
    """An upload the server does not take: ``status_code`` and a one-line ``detail`` (and the
    response ``headers``, e.g. :data:`CLOSE`)."""


@dataclass(frozen=True)
class StoredUpload:
    """A complete upload in the job's folder: ``path`` (``input<.ext>``), the client's file name
    (for display only), the file's size in bytes, and the name of the folder the client says the
    file is in (:func:`client_folder`; None when it gives none): with a generic file name it
    names the song, as ``stemforge separate`` names a file by its folder."""

    path: Path
    filename: str
    size: int
    folder: str | None = None


@dataclass(frozen=True)
class Probe:
    """Header facts of a stored upload: duration (0 when the container does not say), rate (Hz),
    channels."""

    duration_s: float
    sample_rate: int
    channels: int


# --------------------------------------------------------------------------- the request's head
def too_large(limit: int) -> str:
    """The reason of a 413 for an upload limit of ``limit`` bytes."""
    return f"upload over the limit of {limit / 1048576:g} MiB"


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; 415 for any other type."""
    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise UploadRefused(415, "send the song as multipart/form-data in the field 'file'")
    return boundary


def refuse_declared_oversize(content_length: str | None, limit: int) -> None:
    """413 (closing the connection) when the request's Content-Length says the body is over
    ``limit`` bytes plus :data:`FORM_OVERHEAD`: refused before a byte of it is read."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit + FORM_OVERHEAD:
        raise UploadRefused(413, too_large(limit), headers=CLOSE)


def display_name(raw: str | None) -> str:
    """The client's file name for display only: last path component, printable, <= 120 chars."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or "upload"


def client_folder(raw: str | None) -> str | None:
    """The folder the client's file name says the file is in (``Artist - Title/mixture.wav`` ->
    ``Artist - Title``): its last folder component, printable, <= 120 chars; None when the name
    has no folder (or only ``.``, ``..``). A name only: no server path is made from it."""
    parts = [p for p in (raw or "").replace("\\", "/").split("/")[:-1]]
    folder = "".join(ch for ch in (parts[-1] if parts else "") if ch.isprintable()).strip()[:120]
    return folder if folder not in ("", ".", "..") else None


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ ()+-]+")


def download_track(filename: str, folder: str | None = None) -> str:
    """The song's name a job's downloads are named by (``<track>-vocals.wav``): the name
    ``stemforge separate`` gives the track (:func:`stemforge.core.names.song_name`: the file name
    without its suffix, or the client's ``folder`` for a generic name such as ``mixture.mp3``),
    characters outside ``A-Za-z0-9._ ()+-`` replaced, at most 80 characters ("song" if none left)."""
    base = _SAFE_NAME.sub("_", song_name(filename, folder)).strip(" ._") or "song"
    return base[:80]


def sniff_suffix(head: bytes, filename: str) -> str | None:
    """The extension that routes a stored upload to the right decoder, from its first bytes;
    the client's extension only when the bytes say nothing (and only from a fixed set).
    None: not a recognized audio file."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".opus" if b"OpusHead" in head else ".ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return ".aiff"
    if head[4:8] == b"ftyp":
        return ".m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return ".mp3"
    ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext in audio_io.SOUNDFILE_EXTENSIONS | audio_io.PYAV_EXTENSIONS:
        return ext
    return None


# --------------------------------------------------------------------------- the body
class MultipartUpload:
    """A ``multipart/form-data`` body fed in chunks (:meth:`write`), parsed by python-multipart's
    streaming :class:`~python_multipart.multipart.MultipartParser`: the part named ``file`` (with
    a file name) goes to ``folder/input<.ext>``, other fields are read past and ignored.

    The file's first :data:`SNIFF_BYTES` bytes are held until they decide its extension
    (:func:`sniff_suffix`); from then on every chunk goes to a temporary file beside its final
    name, renamed when the part ends (a file in no recognized format is counted, not stored).
    Memory stays at a chunk whatever the upload's size.

    Raises :class:`UploadRefused`: 413 once the file passes ``limit`` bytes or the body
    ``limit + FORM_OVERHEAD``; 422 for more than :data:`MAX_PARTS` fields, a second file, or a
    malformed body; and from :meth:`finish`, 422 when no file came, 415 when it is empty or not
    a recognized format. Call :meth:`close` in the end whatever happened: it drops an unfinished
    file.
    """

    def __init__(self, boundary: bytes, folder: Path, limit: int):
        self.folder, self.limit = Path(folder), int(limit)
        self.received = 0  # bytes of the body
        self.size = 0  # bytes of the file
        self.parts = 0
        self.filename: str | None = None
        self.client_dir: str | None = None  # the folder the client's file name gives
        self.head = b""
        self.suffix: str | None = None
        self.path: Path | None = None
        self.done = False  # the file part ended
        self._sniffed = False
        self._in_file = False
        self._target: contextlib.ExitStack | None = None
        self._file: IO[bytes] | None = None
        self._field, self._value = b"", b""
        self._headers: dict[bytes, bytes] = {}
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def write(self, chunk: bytes) -> None:
        """Feed the next ``chunk`` of the body."""
        self.received += len(chunk)
        if self.received > self.limit + FORM_OVERHEAD:
            raise UploadRefused(413, too_large(self.limit), headers=CLOSE)
        if chunk:
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise UploadRefused(422, f"malformed multipart body ({exc})") from None

    def finish(self) -> StoredUpload:
        """The body is complete: the stored file, or :class:`UploadRefused`."""
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise UploadRefused(422, f"malformed multipart body ({exc})") from None
        if not self.done:
            raise UploadRefused(422, "no file in the form field 'file'")
        if self.size == 0:
            raise UploadRefused(415, "the file is empty")
        if self.path is None:
            raise UploadRefused(415, f"not a recognized audio file (accepted: {', '.join(FORMATS)})")
        return StoredUpload(path=self.path, filename=self.filename or "upload", size=self.size, folder=self.client_dir)

    def close(self) -> None:
        """Drop the file being written, if any (a finished one stays)."""
        target, self._target, self._file = self._target, None, None
        if target is not None:
            target.__exit__(_Unfinished, _Unfinished(), None)  # atomic_path removes its temporary file

    # -- parser callbacks ---------------------------------------------------------------------
    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadRefused(422, f"too many form fields (at most {MAX_PARTS})")
        self._headers, self._field, self._value, self._in_file = {}, b"", b"", False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name != "file" or b"filename" not in params:
            return  # another field: read past, ignore
        if self.done or self._in_file:
            raise UploadRefused(422, "send one file per request")
        raw = params[b"filename"].decode("utf-8", "replace")
        self.filename, self.client_dir = display_name(raw), client_folder(raw)
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        self.size += end - start
        if self.size > self.limit:
            raise UploadRefused(413, too_large(self.limit), headers=CLOSE)
        piece = data[start:end]
        if not self._sniffed:
            need = SNIFF_BYTES - len(self.head)
            self.head += piece[:need]
            if len(self.head) < SNIFF_BYTES:
                return
            piece = piece[need:]
            self._open()
        if self._file is not None and piece:
            self._file.write(piece)

    def _part_end(self) -> None:
        if not self._in_file:
            return
        if not self._sniffed and self.size > 0:
            self._open()  # a file shorter than SNIFF_BYTES
        target, self._target, self._file = self._target, None, None
        if target is not None:
            target.close()  # closes the file, renames it to input<.ext>
        self._in_file = False
        self.done = True

    def _open(self) -> None:
        """The head is in: decide the extension and open the file (or count only)."""
        self._sniffed = True
        self.suffix = sniff_suffix(self.head, self.filename or "")
        if self.suffix is None:
            return
        path = self.folder / f"input{self.suffix}"
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(files.atomic_path(path, fsync=False))  # the upload is decoded once, then removed
            self._file = stack.enter_context(open(tmp, "wb"))  # noqa: SIM115 - closed with the stack
            self._file.write(self.head)
            self._target = stack.pop_all()
        self.path = path


class _Unfinished(Exception):
    """Thrown into an unfinished upload's :func:`~stemforge.core.files.atomic_path` block."""


async def receive_upload(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    boundary: bytes,
    folder: Path,
    limit: int,
    timeout_s: float,
    min_rate: float,
) -> StoredUpload:
    """Read a request's multipart body from the ASGI ``receive`` into ``folder`` (see
    :class:`MultipartUpload`); ``limit`` is the file's size limit in bytes.

    Deadlines (as Apache's mod_reqtimeout ``body=timeout,MinRate=rate``): no read waits more
    than ``timeout_s`` seconds, and the whole body must be in by ``timeout_s + received /
    min_rate`` seconds after it began (``min_rate`` in bytes/s); beyond, 408 and the connection
    is closed. A client that stalls or trickles holds a socket for a bounded time only. A client
    that goes away: 400. Nothing of a refused upload is left in ``folder``.
    """
    upload = MultipartUpload(boundary, folder, limit)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        more = True
        while more:
            wait = min(timeout_s, began + timeout_s + upload.received / min_rate - loop.time())
            try:
                if wait <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise UploadRefused(
                    408,
                    f"upload too slow: {upload.received} bytes in {loop.time() - began:.0f} s (a pause of at most "
                    f"{timeout_s:g} s, and {min_rate / 1024:g} KiB/s past the first {timeout_s:g} s)",
                    headers=CLOSE,
                ) from None
            if message["type"] == "http.disconnect":
                raise UploadRefused(400, "the client went away during the upload")
            more = message.get("more_body", False)
            upload.write(message.get("body", b""))
        return upload.finish()
    finally:
        upload.close()


# --------------------------------------------------------------------------- the stored file
def probe(path: Path, max_seconds: float, max_channels: int) -> Probe:
    """Header facts of a stored upload, after decoding its first samples.

    415 when it does not decode; 422 when its header is over the server's bounds (channels, a
    rate outside the library's range: :func:`~stemforge.serve.decode.job_limits`) or says the
    song lasts more than ``max_seconds``. A header that does not know the length passes (the
    job's decode counts the samples)."""
    limits = job_limits(max_seconds, max_channels)
    try:
        info = audio_io.info(path)
        limits.check(path, info.sample_rate, info.channels)
        known = info.n_samples > 0
        if known and info.duration_s > max_seconds:
            raise UploadRefused(
                422, f"the song lasts {info.duration_s:.1f} s; this server accepts at most {max_seconds:g} s"
            )
        _decode_head(path, limits)
    except UploadRefused:
        raise
    except DecodeLimitError as exc:
        raise UploadRefused(422, f"not accepted: {one_line(exc, hide=path.parent)}") from None
    except AudioError as exc:
        raise UploadRefused(415, f"not a decodable audio file: {one_line(exc, hide=path.parent)}") from None
    except Exception as exc:  # a decoder's own error type
        raise UploadRefused(415, f"not a decodable audio file: {type(exc).__name__}") from None
    if info.sample_rate <= 0 or info.channels <= 0:
        raise UploadRefused(415, "not a decodable audio file: no audio channels")
    return Probe(info.duration_s if known else 0.0, info.sample_rate, info.channels)


def _decode_head(path: Path, limits: audio_io.DecodeLimits, n_samples: int = 4096) -> None:
    """Decode the first samples of ``path`` within ``limits``; AudioError when none come out."""
    blocks = audio_io.decode_blocks(path, n_samples, limits=limits)
    try:
        for block in blocks:
            if block.shape[1] > 0:
                return
    finally:
        blocks.close()
    raise AudioError(path, "holds no samples")


__all__ = [
    "CLOSE",
    "FORMATS",
    "FORM_OVERHEAD",
    "MAX_PARTS",
    "SNIFF_BYTES",
    "MultipartUpload",
    "Probe",
    "StoredUpload",
    "UploadRefused",
    "client_folder",
    "display_name",
    "download_track",
    "multipart_boundary",
    "probe",
    "receive_upload",
    "refuse_declared_oversize",
    "sniff_suffix",
    "too_large",
]
