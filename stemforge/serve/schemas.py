"""The JSON the API answers with: pydantic models (they make the OpenAPI schema at
``/openapi.json``), the error responses each route declares, and :func:`job_status`, a
:class:`~stemforge.serve.jobs.Job` as the client sees it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from stemforge.serve.jobs import JOB_OUTPUTS, Job, JobState
from stemforge.serve.upload import download_track


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
    track: str = Field(description="the song's name the downloads are named by (<track>-vocals.wav), as `stemforge "
                       "separate` names the track: the file name without its suffix, or, for a generic name such as "
                       "mixture.mp3, the folder the client sent with it (multipart filename 'Artist - Title/mixture.mp3')")
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
    generic_names: list[str] = Field(description="file stems that name a role, not a song (mixture, mix, ...): such a "
                                     "file is named after the folder the client sends with it")
    stems: list[Stem]
    queued: int
    running: int
    model: dict[str, Any]


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
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


UPLOAD_BODY = {
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


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, tz=timezone.utc)


def job_status(job: Job) -> JobStatus:
    """``job`` as the API shows it: times in UTC, progress rounded to 1e-4 within [0, 1], and the
    URLs of its files once it is done (a picture's only when it was drawn)."""
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
        track=job.track or download_track(job.filename),
        duration_s=job.duration_s,
        sample_rate=job.sample_rate,
        channels=job.channels,
        created_at=_time(job.created_at),
        started_at=_time(job.started_at),
        finished_at=_time(job.finished_at),
        expires_at=_time(job.expires_at),
        stems=stems,
    )


__all__ = [
    "UPLOAD_BODY",
    "ErrorMessage",
    "JobStatus",
    "ServerInfo",
    "Stem",
    "StemFiles",
    "error_responses",
    "job_status",
]
