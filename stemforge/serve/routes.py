"""The routes of the app: the page and the JSON API (see :mod:`stemforge.serve.app` for the list).

One :data:`router`, included by :func:`stemforge.serve.app.create_app`. The handlers are plain
module functions: what they need of the app comes through FastAPI dependencies that read
``app.state`` (:func:`store_of`, :func:`settings_of`, :func:`model_info_of`), so a handler can
be read, and called, without the app that serves it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from stemforge import __version__
from stemforge.core.errors import StemforgeError
from stemforge.serve.jobs import JOB_OUTPUTS, Job, JobState, JobStore, QueueFullError, valid_job_id
from stemforge.serve.schemas import UPLOAD_BODY, JobStatus, ServerInfo, Stem, error_responses, job_status
from stemforge.serve.settings import ServeSettings
from stemforge.core.names import GENERIC_NAMES
from stemforge.serve.upload import (
    download_track,
    FORMATS,
    multipart_boundary,
    probe,
    receive_upload,
    refuse_declared_oversize,
)

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter()


# --------------------------------------------------------------------------- dependencies
def store_of(request: Request) -> JobStore:
    """The app's job store (``app.state.store``, made when the app starts)."""
    return request.app.state.store


def settings_of(request: Request) -> ServeSettings:
    """The app's limits (``app.state.settings``)."""
    return request.app.state.settings


def model_info_of(request: Request) -> dict[str, Any]:
    """Plain facts about the model (``app.state.model_info``), as ``/api/info`` shows them."""
    return dict(request.app.state.model_info or {})


Store = Annotated[JobStore, Depends(store_of)]
Settings = Annotated[ServeSettings, Depends(settings_of)]
ModelInfo = Annotated[dict, Depends(model_info_of)]


# --------------------------------------------------------------------------- the page
@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


# --------------------------------------------------------------------------- the API
@router.get("/api/info", response_model=ServerInfo, tags=["server"])
async def info(store: Store, settings: Settings, model: ModelInfo) -> ServerInfo:
    """Limits of this server, accepted formats, the model, and how busy it is."""
    counts = store.counts()
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
        generic_names=sorted(GENERIC_NAMES),
        stems=[Stem(s) for s in JOB_OUTPUTS],
        queued=counts["queued"],
        running=counts["running"],
        model=model,
    )


@router.post(
    "/api/jobs",
    status_code=202,
    response_model=JobStatus,
    responses=error_responses(403, 408, 413, 415, 422, 503),
    openapi_extra=UPLOAD_BODY,
    tags=["jobs"],
)
async def create_job(request: Request, store: Store, settings: Settings) -> JSONResponse:
    """Upload a song (multipart field ``file``) and queue its separation.

    Answers 202 with the job's status (and a Location header) once the file is stored and
    probed; the separation itself runs later in the worker pool.
    """
    boundary = multipart_boundary(request.headers.get("content-type"))
    limit = settings.max_upload_bytes
    refuse_declared_oversize(request.headers.get("content-length"), limit)
    job_id, folder = store.reserve()
    try:
        upload = await receive_upload(
            request.receive, boundary, folder, limit, settings.upload_timeout_s, settings.upload_min_rate_kib * 1024.0
        )
        facts = await run_in_threadpool(probe, upload.path, settings.max_seconds, settings.max_channels)
        try:
            job = store.submit(
                job_id, upload.path, upload.filename, facts.duration_s or None, facts.sample_rate, facts.channels,
                track=download_track(upload.filename, upload.folder),
            )
        except QueueFullError as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "30"}) from None
    except BaseException:
        store.discard(job_id)
        raise
    return JSONResponse(
        job_status(job).model_dump(mode="json"), status_code=202, headers={"Location": f"/api/jobs/{job.id}"}
    )


@router.get("/api/jobs/{job_id}", response_model=JobStatus, responses=error_responses(404), tags=["jobs"])
async def get_job(job_id: str, store: Store) -> JobStatus:
    """State, progress, queue position and error of a job."""
    return job_status(_job_or_404(store, job_id))


@router.delete("/api/jobs/{job_id}", status_code=204, responses=error_responses(403, 404, 500), tags=["jobs"])
async def delete_job(job_id: str, store: Store) -> Response:
    """Forget a job (queued, running or finished) and remove its files (gone by the 204)."""
    if not valid_job_id(job_id):
        raise HTTPException(404, "no such job (unknown or expired)")
    try:
        deleted = await run_in_threadpool(store.delete, job_id)
    except StemforgeError as exc:
        raise HTTPException(500, str(exc)) from None
    if not deleted:
        raise HTTPException(404, "no such job (unknown or expired)")
    return Response(status_code=204)


@router.get(
    "/api/jobs/{job_id}/{stem}.wav",
    response_class=FileResponse,
    responses={200: {"content": {"audio/wav": {}}}, **error_responses(404, 409)},
    tags=["jobs"],
)
async def get_stem_wav(job_id: str, store: Store, stem: Stem = PathParam(), download: bool = False) -> FileResponse:
    """The WAV file of one stem of a finished job (``?download=1``: as an attachment)."""
    return _stem_file(store, job_id, stem, "wav", "audio/wav", download)


@router.get(
    "/api/jobs/{job_id}/{stem}.png",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 409)},
    tags=["jobs"],
)
async def get_stem_png(job_id: str, store: Store, stem: Stem = PathParam(), download: bool = False) -> FileResponse:
    """The PNG file of one stem of a finished job (``?download=1``: as an attachment)."""
    return _stem_file(store, job_id, stem, "png", "image/png", download)


# --------------------------------------------------------------------------- helpers
def _job_or_404(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise HTTPException(404, "no such job (unknown or expired)")
    return job


def _stem_file(store: JobStore, job_id: str, stem: Stem, kind: str, media_type: str, download: bool) -> FileResponse:
    """A finished job's ``stem.kind`` file: 404 for an unknown job or a missing file, 409 when
    the job is not done."""
    job = _job_or_404(store, job_id)
    if job.state is not JobState.DONE:
        raise HTTPException(409, f"the job is {job.state.value}, not done")
    path = store.file(job_id, stem.value, kind)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no {stem.value}.{kind} for this job")
    return FileResponse(
        path,
        media_type=media_type,
        filename=f"{job.track or download_track(job.filename)}-{stem.value}.{kind}",
        content_disposition_type="attachment" if download else "inline",
    )


def download_name(filename: str) -> str:
    """:func:`download_track` of a file name without a folder."""
    return download_track(filename)


__all__ = ["STATIC_DIR", "download_name", "download_track", "model_info_of", "router", "settings_of", "store_of"]
