"""The web app of ``stemforge serve``: a drag-and-drop page and the JSON API beneath it.

API (the OpenAPI schema is at ``/openapi.json``)::

    GET    /                                   the page (static/index.html, app.js, style.css)
    GET    /api/info                           limits, formats, model, jobs by state
    POST   /api/jobs                           multipart/form-data, field "file" -> 202 + job status
    GET    /api/jobs/{id}                      state, stage, progress, queue position, error
    GET    /api/jobs/{id}/{stem}.wav           stem in mixture | vocals | accompaniment (16-bit PCM)
    GET    /api/jobs/{id}/{stem}.png           its spectrogram
    DELETE /api/jobs/{id}                      forget the job, remove its files -> 204

Bad input is refused early and cheaply: a request whose Content-Length is over the limit gets 413
before a byte of its body is read; otherwise the body is read in chunks and written to the job's
folder, and reading stops with 413 as soon as the limit is passed (nothing is buffered whole in
memory). The stored file is probed (header plus the first decoded samples): 415 when it does not
decode, 422 when the song is longer than allowed or its header is over the decode bounds
(channels, rate; the job's decode keeps those bounds whatever the header said: see
:func:`stemforge.serve.jobs.decode_limited`). An upload that stalls or trickles gets 408 (see
:class:`ServeSettings`). Requests naming a host the server is not known by get 400, and job
creation or deletion from another page's origin 403 (:mod:`stemforge.serve.hosts`). Every
refusal, FastAPI's own validation errors included, is JSON ``{"detail": "one line"}``.
Interactive docs (``/docs``, ``/redoc``) are off: they load scripts from a public CDN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from stemforge import __version__
from stemforge.core.errors import AudioError, StemforgeError
from stemforge.serve.hosts import LOOPBACK_HOSTS, HostOriginGuard, normalize_origin
from stemforge.serve.jobs import (
    JOB_OUTPUTS,
    Job,
    JobState,
    JobStore,
    PngRenderer,
    QueueFullError,
    SeparatorLike,
    one_line,
    valid_job_id,
)

log = logging.getLogger("stemforge.serve")

STATIC_DIR = Path(__file__).parent / "static"
#: Upload formats the page advertises (anything FFmpeg or libsndfile decodes is tried).
FORMATS = ("wav", "flac", "mp3", "ogg", "m4a", "aiff", "opus", "webm")
#: Bytes of multipart framing (boundaries, part headers, small fields) allowed beyond the file.
FORM_OVERHEAD = 64 * 1024
#: Form fields other than the file that are read at all (and then ignored).
MAX_PARTS = 8
_CHUNK_WRITE = 1 << 16


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ServeSettings:
    """Limits and sizes of a server.

    Attributes:
        max_upload_mb: largest upload accepted, in MiB (the file itself).
        max_seconds: longest song accepted, in seconds.
        max_rate: the highest rate a job works at (Hz); a song above it is resampled to it
            block by block while it is decoded. With ``max_seconds`` and ``max_channels`` it
            bounds what a job holds: at most ``max_seconds x max_rate x max_channels`` samples
            per array (see docs/serve.md, "Limits in samples").
        max_channels: most channels of a song (more: 422).
        jobs: separations running at once (worker threads).
        expire_minutes: how long finished jobs and their files are kept.
        max_queue: jobs that may wait for a worker; beyond, POST answers 503.
        work_dir: folder for the jobs' files; None makes a temporary one, removed at shutdown.
        allowed_hosts: host names (``Host`` header, without port) the server answers; others
            get 400. ``*`` allows any, ``*.example.org`` a domain. Default: loopback names.
        allowed_origins: origins (``scheme://host[:port]``) besides the server's own from which
            a page may create or delete jobs; others get 403. ``*`` allows any.
        upload_timeout_s: no read of an upload's body may wait longer than this (seconds), and
            the body gets this long plus its size over ``upload_min_rate_kib``; beyond, 408.
            (The request head has the same deadline when the CLI runs the server:
            :func:`stemforge.serve.connection.head_timeout_protocol`.)
        upload_min_rate_kib: slowest average upload rate accepted past ``upload_timeout_s``,
            in KiB/s.
        warm_up: separate one second of noise when the server starts, so that the first job
            does not pay for the model's first call (lazy initialisation in torch).
    """

    max_upload_mb: float = 100.0
    max_seconds: float = 900.0
    max_rate: int = 48_000
    max_channels: int = 2
    jobs: int = 1
    expire_minutes: float = 60.0
    max_queue: int = 100
    work_dir: Path | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = ()
    upload_timeout_s: float = 30.0
    upload_min_rate_kib: float = 16.0
    warm_up: bool = False

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise StemforgeError(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if not self.max_seconds > 0:
            raise StemforgeError(f"max_seconds must be positive, got {self.max_seconds}")
        if not 8000 <= self.max_rate <= 384_000:
            raise StemforgeError(f"max_rate must be between 8000 and 384000 Hz, got {self.max_rate}")
        if self.max_channels < 1:
            raise StemforgeError(f"max_channels must be >= 1, got {self.max_channels}")
        if self.jobs < 1:
            raise StemforgeError(f"jobs must be >= 1, got {self.jobs}")
        if not self.expire_minutes > 0:
            raise StemforgeError(f"expire_minutes must be positive, got {self.expire_minutes}")
        if self.max_queue < 0:
            raise StemforgeError(f"max_queue must be >= 0, got {self.max_queue}")
        if not self.upload_timeout_s > 0:
            raise StemforgeError(f"upload_timeout_s must be positive, got {self.upload_timeout_s}")
        if not self.upload_min_rate_kib > 0:
            raise StemforgeError(f"upload_min_rate_kib must be positive, got {self.upload_min_rate_kib}")
        if not self.allowed_hosts:
            raise StemforgeError("allowed_hosts must name at least one host (or '*')")
        for origin in self.allowed_origins:
            if origin != "*":
                try:
                    normalize_origin(origin)
                except ValueError as exc:
                    raise StemforgeError(str(exc)) from None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_samples(self) -> int:
        """Most samples (per array, all channels) a job holds: ``max_seconds x max_rate x max_channels``."""
        return int(self.max_seconds * self.max_rate) * self.max_channels


# --------------------------------------------------------------------------- API models
class Stem(str, Enum):
    """The files a finished job offers."""

    mixture = "mixture"
    vocals = "vocals"
    accompaniment = "accompaniment"


class StemFiles(BaseModel):
    """Where to fetch one stem (URLs relative to the server)."""

    wav: str = Field(description="16-bit PCM WAV at the upload's sample rate and channels")
    png: str | None = Field(description="spectrogram picture (null when the server draws none)")


class JobStatus(BaseModel):
    """State of one job. Times are UTC; ``progress`` is a fraction."""

    id: str = Field(description="random, unguessable job id")
    state: JobState
    stage: str = Field(description="queued, decoding, separating, writing, done or failed")
    progress: float = Field(ge=0.0, le=1.0)
    queue_position: int | None = Field(description="1-based place among the jobs waiting for a worker; null unless queued")
    error: str | None = Field(description="one-line reason when the job failed")
    filename: str = Field(description="name of the uploaded file (display only)")
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="when the job and its files are removed")
    stems: dict[Stem, StemFiles] | None = Field(None, description="the result files, once done")


class ErrorMessage(BaseModel):
    """What every refusal carries."""

    detail: str


class ServerInfo(BaseModel):
    """The server's limits and what it is doing."""

    version: str
    max_upload_bytes: int
    max_seconds: float
    max_rate: int = Field(description="highest rate a job works at (Hz); songs above are resampled to it")
    max_channels: int
    max_samples: int = Field(description="most samples a job holds per array: max_seconds x max_rate x max_channels")
    jobs: int
    max_queue: int
    expire_minutes: float
    formats: list[str]
    stems: list[Stem]
    queued: int
    running: int
    model: dict[str, Any]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "a host name this server does not answer to",
        403: "a request from another origin (page)",
        404: "unknown or expired job, or no such file",
        408: "the upload stalled or was too slow",
        409: "the job is not done",
        413: "upload over the size limit",
        415: "not multipart/form-data, or a file that does not decode as audio",
        422: "no file in the form, a song over the length limit, or a bad path or query parameter",
        500: "the job's files could not be removed (retried later)",
        503: "too many jobs waiting; retry later",
    }
    return {c: {"model": ErrorMessage, "description": text[c]} for c in codes}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the song: wav, flac, mp3, ogg, m4a, ...",
                        }
                    },
                }
            }
        },
    }
}


# --------------------------------------------------------------------------- the app
def create_app(
    separator: SeparatorLike,
    settings: ServeSettings | None = None,
    *,
    render_png: PngRenderer | None | Literal["auto"] = "auto",
    model_info: dict[str, Any] | None = None,
) -> FastAPI:
    """The FastAPI app serving ``separator`` (see :class:`~stemforge.serve.jobs.SeparatorLike`).

    Args:
        separator: shared by the worker threads; a ``stemforge.separate.separator.Separator`` or any object
            with the same ``separate(audio [channels, samples], sample_rate)``.
        settings: limits (defaults: :class:`ServeSettings`).
        render_png: draws the spectrogram pictures (see :data:`~stemforge.serve.jobs.PngRenderer`);
            "auto" uses :func:`~stemforge.serve.jobs.spectrogram_png`, None draws none.
        model_info: plain facts about the model shown by ``/api/info`` (a checkpoint summary).

    The job store (``app.state.store``) is made when the app starts (lifespan) and closed, its
    files removed, when it stops.
    """
    settings = settings or ServeSettings()
    renderer = _default_renderer() if render_png == "auto" else render_png

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_root = settings.work_dir is None
        root = Path(tempfile.mkdtemp(prefix="stemforge-serve-")) if own_root else Path(settings.work_dir)
        store = JobStore(
            root,
            separator,
            workers=settings.jobs,
            max_seconds=settings.max_seconds,
            max_rate=settings.max_rate,
            max_channels=settings.max_channels,
            expire_seconds=settings.expire_minutes * 60.0,
            max_queue=settings.max_queue,
            render_png=renderer,
        )
        store.start()
        app.state.store = store
        try:
            if settings.warm_up:
                await run_in_threadpool(_warm_up, separator)
            yield
        finally:
            await run_in_threadpool(store.close, 10.0, own_root)

    app = FastAPI(
        title="stemforge serve",
        version=__version__,
        description="Drop a song, get its vocals and accompaniment back.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a public CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)

    def store_of(request: Request) -> JobStore:
        return request.app.state.store

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info", response_model=ServerInfo, tags=["server"])
    async def info(request: Request) -> ServerInfo:
        """Limits of this server, accepted formats, the model, and how busy it is."""
        counts = store_of(request).counts()
        return ServerInfo(
            version=__version__,
            max_upload_bytes=settings.max_upload_bytes,
            max_seconds=settings.max_seconds,
            max_rate=settings.max_rate,
            max_channels=settings.max_channels,
            max_samples=settings.max_samples,
            jobs=settings.jobs,
            max_queue=settings.max_queue,
            expire_minutes=settings.expire_minutes,
            formats=list(FORMATS),
            stems=[Stem(s) for s in JOB_OUTPUTS],
            queued=counts["queued"],
            running=counts["running"],
            model=dict(model_info or {}),
        )

    @app.post(
        "/api/jobs",
        status_code=202,
        response_model=JobStatus,
        responses=_errors(403, 408, 413, 415, 422, 503),
        openapi_extra=_UPLOAD_BODY,
        tags=["jobs"],
    )
    async def create_job(request: Request) -> JSONResponse:
        """Upload a song (multipart field ``file``) and queue its separation.

        Answers 202 with the job's status (and a Location header) once the file is stored and
        probed; the separation itself runs later in the worker pool.
        """
        store = store_of(request)
        boundary = _multipart_boundary(request.headers.get("content-type"))
        limit = settings.max_upload_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit + FORM_OVERHEAD:
            raise HTTPException(413, _too_large(limit), headers=_CLOSE)
        job_id, folder = store.reserve()
        try:
            upload = await _receive_upload(
                request, boundary, folder, limit, settings.upload_timeout_s, settings.upload_min_rate_kib * 1024.0
            )
            probe = await run_in_threadpool(_probe, upload.path, settings)
            if probe.duration_s > settings.max_seconds:
                raise HTTPException(
                    422, f"the song lasts {probe.duration_s:.1f} s; this server accepts at most {settings.max_seconds:g} s"
                )
            try:
                job = store.submit(
                    job_id, upload.path, upload.filename, probe.duration_s or None, probe.sample_rate, probe.channels
                )
            except QueueFullError as exc:
                raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from None
        except BaseException:
            store.discard(job_id)
            raise
        return JSONResponse(
            _status(job).model_dump(mode="json"), status_code=202, headers={"Location": f"/api/jobs/{job.id}"}
        )

    @app.get("/api/jobs/{job_id}", response_model=JobStatus, responses=_errors(404), tags=["jobs"])
    async def get_job(request: Request, job_id: str) -> JobStatus:
        """State, progress, queue position and error of a job."""
        return _status(_job_or_404(store_of(request), job_id))

    @app.delete("/api/jobs/{job_id}", status_code=204, responses=_errors(403, 404, 500), tags=["jobs"])
    async def delete_job(request: Request, job_id: str) -> Response:
        """Forget a job (queued, running or finished) and remove its files (gone by the 204)."""
        if not valid_job_id(job_id):
            raise HTTPException(404, "no such job (unknown or expired)")
        try:
            deleted = await run_in_threadpool(store_of(request).delete, job_id)
        except StemforgeError as exc:
            raise HTTPException(500, str(exc)) from None
        if not deleted:
            raise HTTPException(404, "no such job (unknown or expired)")
        return Response(status_code=204)

    def file_route(kind: str, media_type: str) -> Callable:
        async def get_file(
            request: Request,
            job_id: str,
            stem: Stem = PathParam(),
            download: bool = False,
        ) -> FileResponse:
            store = store_of(request)
            job = _job_or_404(store, job_id)
            if job.state is not JobState.DONE:
                raise HTTPException(409, f"the job is {job.state.value}, not done")
            path = store.file(job_id, stem.value, kind)
            if path is None or not path.is_file():
                raise HTTPException(404, f"no {stem.value}.{kind} for this job")
            return FileResponse(
                path,
                media_type=media_type,
                filename=f"{_download_stem(job.filename)}-{stem.value}.{kind}",
                content_disposition_type="attachment" if download else "inline",
            )

        get_file.__doc__ = f"The {kind.upper()} file of one stem of a finished job (``?download=1``: as an attachment)."
        return get_file

    app.get(
        "/api/jobs/{job_id}/{stem}.wav",
        response_class=FileResponse,
        responses={200: {"content": {"audio/wav": {}}}, **_errors(404, 409)},
        tags=["jobs"],
        name="get_stem_wav",
    )(file_route("wav", "audio/wav"))
    app.get(
        "/api/jobs/{job_id}/{stem}.png",
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}}, **_errors(404, 409)},
        tags=["jobs"],
        name="get_stem_png",
    )(file_route("png", "image/png"))

    app.add_middleware(_SecurityHeaders)
    # Outermost: a request for a foreign host or from a foreign page is refused before routing.
    app.add_middleware(
        HostOriginGuard, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins
    )
    return app


def _warm_up(separator: SeparatorLike) -> None:
    """Separate one second of quiet noise (16 kHz mono, fixed seed): torch builds its kernels on a
    model's first call (about a second for the default U-Net on a CPU), which would otherwise
    land on the first job. A failure is logged: the jobs will report it."""
    import numpy as np

    noise = 0.05 * np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)
    try:
        separator.separate(noise, 16000)
    except Exception as exc:
        log.warning("the model's warm-up run failed: %s", one_line(exc))


# --------------------------------------------------------------------------- one-line errors
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every HTTPException (ours, routing's 404/405, StaticFiles') as ``{"detail": "one line"}``."""
    return JSONResponse({"detail": " ".join(str(exc.detail).split())}, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of validation problems as one line naming the parameter: 422."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("path", "query", "body", "header"))
        problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    detail = " ".join("; ".join(problems).split())[:300] or "invalid request"
    return JSONResponse({"detail": detail}, status_code=422)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: one line for the client (no traceback, no server paths); the log has the rest."""
    log.error("internal error on %s %s: %s", request.method, request.url.path, one_line(exc))  # the server logs the traceback
    return JSONResponse({"detail": f"internal server error ({type(exc).__name__}); see the server's log"}, status_code=500)


def _default_renderer() -> PngRenderer:
    from stemforge.serve.jobs import spectrogram_png

    return spectrogram_png


# --------------------------------------------------------------------------- helpers
def _job_or_404(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise HTTPException(404, "no such job (unknown or expired)")
    return job


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc)


def _status(job: Job) -> JobStatus:
    stems = None
    if job.state is JobState.DONE:
        stems = {
            Stem(s): StemFiles(
                wav=f"/api/jobs/{job.id}/{s}.wav",
                png=f"/api/jobs/{job.id}/{s}.png" if (job.folder / f"{s}.png").is_file() else None,
            )
            for s in JOB_OUTPUTS
        }
    return JobStatus(
        id=job.id,
        state=job.state,
        stage=job.stage,
        progress=round(min(1.0, max(0.0, job.progress)), 4),
        queue_position=job.queue_position,
        error=job.error,
        filename=job.filename,
        duration_s=job.duration_s,
        sample_rate=job.sample_rate,
        channels=job.channels,
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        expires_at=_time(job.expires_at),
        stems=stems,
    )


#: On a 413 the server closes the connection, so that the rest of the body is not even received
#: (uvicorn would otherwise read and discard it to keep the connection alive).
_CLOSE = {"Connection": "close"}


def _too_large(limit: int) -> str:
    return f"upload over the limit of {limit / 1048576:g} MiB"


def _multipart_boundary(content_type: str | None) -> bytes:
    from python_multipart.multipart import parse_options_header

    ctype, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise HTTPException(415, "send the song as multipart/form-data in the field 'file'")
    return boundary


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ ()+-]+")


def _display_name(raw: str | None) -> str:
    """The client's file name for display only: last path component, printable, <= 120 chars."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:120] or "upload"


def _download_stem(filename: str) -> str:
    base = filename.rsplit(".", 1)[0] if "." in filename else filename
    base = _SAFE_NAME.sub("_", base).strip(" ._") or "song"
    return base[:80]


@dataclass
class _Upload:
    path: Path
    filename: str
    size: int


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    def __init__(self, received: int, elapsed: float):
        super().__init__(received, elapsed)
        self.received, self.elapsed = received, elapsed


class _FormError(Exception):
    pass


class _UploadSink:
    """Callbacks of the streaming multipart parser: the part named ``file`` goes to disk."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit = path, limit
        self.size = 0
        self.filename: str | None = None
        self.head = b""
        self.parts = 0
        self._file = None
        self._done = False
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False

    def callbacks(self) -> dict[str, Callable]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _FormError(f"too many form fields (at most {MAX_PARTS})")
        self._headers, self._field, self._value, self._in_file = {}, b"", b"", False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name != "file" or b"filename" not in params:
            return  # another field: read past, ignore
        if self._done or self._file is not None:
            raise _FormError("send one file per request")
        self.filename = _display_name(params[b"filename"].decode("utf-8", "replace"))
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in _part_end / close()
        self._in_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        n = end - start
        self.size += n
        if self.size > self.limit:
            raise _TooLarge
        if len(self.head) < 64:
            self.head += data[start : min(end, start + 64 - len(self.head))]
        self._file.write(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self._file.close()
            self._file = None
            self._in_file = False
            self._done = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def _receive_upload(
    request: Request, boundary: bytes, folder: Path, limit: int, timeout_s: float, min_rate: float
) -> _Upload:
    """Stream the multipart body into ``folder/upload.part`` and rename it ``input<.ext>``.

    The file name the client sent is kept for display only; the stored name is fixed and its
    extension comes from the file's first bytes (or, failing that, a known extension).

    Deadlines (as Apache's mod_reqtimeout ``body=timeout,MinRate=rate``): no read waits more
    than ``timeout_s`` seconds, and the whole body must be in by ``timeout_s + received /
    min_rate`` seconds after it began (``min_rate`` in bytes/s); beyond, 408 and the connection
    is closed. A client that stalls or trickles holds a socket for a bounded time only.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser
    from starlette.requests import ClientDisconnect

    sink = _UploadSink(folder / "upload.part", limit)
    parser = MultipartParser(boundary, sink.callbacks())
    received = 0
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        more = True
        while more:
            wait = min(timeout_s, began + timeout_s + received / min_rate - loop.time())
            try:
                if wait <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(request.receive(), wait)
            except TimeoutError:
                raise _TooSlow(received, loop.time() - began) from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            received += len(chunk)
            if received > limit + FORM_OVERHEAD:
                raise _TooLarge
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except _TooLarge:
        raise HTTPException(413, _too_large(limit), headers=_CLOSE) from None
    except _TooSlow as exc:
        raise HTTPException(
            408,
            f"upload too slow: {exc.received} bytes in {exc.elapsed:.0f} s (a pause of at most {timeout_s:g} s, "
            f"and {min_rate / 1024:g} KiB/s past the first {timeout_s:g} s)",
            headers=_CLOSE,
        ) from None
    except _FormError as exc:
        raise HTTPException(422, str(exc)) from None
    except FormParserError as exc:
        raise HTTPException(422, f"malformed multipart body ({exc})") from None
    except ClientDisconnect:
        raise HTTPException(400, "the client went away during the upload") from None
    finally:
        sink.close()
    if not sink._done:
        raise HTTPException(422, "no file in the form field 'file'")
    if sink.size == 0:
        raise HTTPException(415, "the file is empty")
    suffix = _sniff_suffix(sink.head, sink.filename or "")
    if suffix is None:
        raise HTTPException(415, f"not a recognized audio file (accepted: {', '.join(FORMATS)})")
    path = folder / f"input{suffix}"
    os.replace(sink.path, path)
    return _Upload(path=path, filename=sink.filename or "upload", size=sink.size)


def _sniff_suffix(head: bytes, filename: str) -> str | None:
    """The extension that routes a stored upload to the right decoder, from its first bytes;
    the client's extension only when the bytes say nothing (and only from a fixed set)."""
    from stemforge.core.audio import PYAV_EXTENSIONS, SOUNDFILE_EXTENSIONS

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
    if ext in SOUNDFILE_EXTENSIONS | PYAV_EXTENSIONS:
        return ext
    return None


@dataclass
class _Probe:
    duration_s: float
    sample_rate: int
    channels: int


def _probe(path: Path, settings: ServeSettings | None = None) -> _Probe:
    """Header facts of a stored upload, after decoding its first samples; 415 when it does not
    decode, 422 when its header is over the server's bounds (channels, a rate outside the
    library's range; the length is the caller's 422). ``duration_s`` is 0 when the container
    does not say (the worker checks then)."""
    from stemforge.core import audio
    from stemforge.core.errors import DecodeLimitError
    from stemforge.serve.jobs import job_limits

    settings = settings or ServeSettings()
    limits = job_limits(settings.max_seconds, settings.max_channels)
    try:
        info = audio.info(path)
        limits.check(path, info.sample_rate, info.channels)
        if info.n_samples > 0 and info.duration_s > settings.max_seconds:
            return _Probe(info.duration_s, info.sample_rate, info.channels)  # the caller's 422
        _decode_head(path, limits=limits)
    except DecodeLimitError as exc:
        raise HTTPException(422, f"not accepted: {one_line(exc, hide=path.parent)}") from None
    except AudioError as exc:
        raise HTTPException(415, f"not a decodable audio file: {one_line(exc, hide=path.parent)}") from None
    except Exception as exc:  # a decoder's own error type
        raise HTTPException(415, f"not a decodable audio file: {type(exc).__name__}") from None
    if info.sample_rate <= 0 or info.channels <= 0:
        raise HTTPException(415, "not a decodable audio file: no audio channels")
    return _Probe(info.duration_s if info.n_samples > 0 else 0.0, info.sample_rate, info.channels)


def _decode_head(path: Path, n_samples: int = 4096, limits=None) -> None:
    """Decode the first samples of ``path`` (within ``limits``, a DecodeLimits; default the
    library's); raise AudioError when none come out."""
    from stemforge.core import audio

    blocks = audio.decode_blocks(path, n_samples, limits=limits or audio.DEFAULT_LIMITS)
    try:
        for block in blocks:
            if block.shape[1] > 0:
                return
    finally:
        blocks.close()
    raise AudioError(path, "holds no samples")


class _SecurityHeaders:
    """ASGI wrapper: nosniff everywhere, no caching of API answers, a strict CSP on the page."""

    _CSP = (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; "
        "style-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )

    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if path.startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                if path == "/" or path.startswith("/static/"):
                    headers.append((b"content-security-policy", self._CSP.encode()))
                    headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = [
    "ErrorMessage",
    "JobStatus",
    "ServeSettings",
    "ServerInfo",
    "Stem",
    "StemFiles",
    "create_app",
]
