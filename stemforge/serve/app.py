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
:func:`stemforge.serve.decode.decode_limited`). An upload that stalls or trickles gets 408 (see
:class:`~stemforge.serve.settings.ServeSettings`). Requests naming a host the server is not
known by get 400, and job creation or deletion from another page's origin 403
(:mod:`stemforge.serve.hosts`). Every refusal, FastAPI's own validation errors included, is
JSON ``{"detail": "one line"}``.
Interactive docs (``/docs``, ``/redoc``) are off: they load scripts from a public CDN.

Where it lives: this module builds the app (:func:`create_app`: state, lifespan, handlers,
middleware); :mod:`~stemforge.serve.routes` holds the handlers, :mod:`~stemforge.serve.upload`
the upload (multipart, sniffing, probing), :mod:`~stemforge.serve.schemas` the JSON models,
:mod:`~stemforge.serve.middleware` the headers and one-line errors,
:mod:`~stemforge.serve.settings` the limits, :mod:`~stemforge.serve.jobs` the job store,
:mod:`~stemforge.serve.decode` a job's decode and :mod:`~stemforge.serve.outputs` its files.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Literal

import numpy as np
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from stemforge import __version__
from stemforge.serve import routes
from stemforge.serve.hosts import HostOriginGuard
from stemforge.serve.jobs import JobStore, SeparatorLike, one_line
from stemforge.serve.middleware import SecurityHeaders, http_error, internal_error, validation_error
from stemforge.serve.outputs import PngRenderer, spectrogram_png
from stemforge.serve.settings import ServeSettings

log = logging.getLogger("stemforge.serve")


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
        settings: limits (defaults: :class:`~stemforge.serve.settings.ServeSettings`).
        render_png: draws the spectrogram pictures (see :data:`~stemforge.serve.outputs.PngRenderer`);
            "auto" uses :func:`~stemforge.serve.outputs.spectrogram_png`, None draws none.
        model_info: plain facts about the model shown by ``/api/info`` (a checkpoint summary).

    What the routes read is in ``app.state``: ``settings``, ``separator``, ``render_png``,
    ``model_info``, and ``store``, the job store, made when the app starts (:func:`lifespan`)
    and closed, its files removed, when it stops.
    """
    app = FastAPI(
        title="stemforge serve",
        version=__version__,
        description="Drop a song, get its vocals and accompaniment back.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a public CDN
        redoc_url=None,
    )
    app.state.settings = settings = settings or ServeSettings()
    app.state.separator = separator
    app.state.render_png = spectrogram_png if render_png == "auto" else render_png
    app.state.model_info = model_info
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
    app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    app.include_router(routes.router)
    app.add_middleware(SecurityHeaders)
    # Outermost: a request for a foreign host or from a foreign page is refused before routing.
    app.add_middleware(HostOriginGuard, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins)
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's life: the job store (in ``settings.work_dir``, or a temporary folder removed at
    the end) started before the first request, the model warmed up when asked, and the store
    closed at shutdown (running jobs get 10 s; every job folder is removed)."""
    settings: ServeSettings = app.state.settings
    separator = app.state.separator
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
        render_png=app.state.render_png,
    )
    store.start()
    app.state.store = store
    try:
        if settings.warm_up:
            await run_in_threadpool(warm_up, separator)
        yield
    finally:
        await run_in_threadpool(store.close, 10.0, own_root)


def warm_up(separator: SeparatorLike) -> None:
    """Separate one second of quiet noise (16 kHz mono, fixed seed): torch builds its kernels on a
    model's first call (about a second for the default U-Net on a CPU), which would otherwise
    land on the first job. A failure is logged: the jobs will report it."""
    noise = 0.05 * np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)
    try:
        separator.separate(noise, 16000)
    except Exception as exc:
        log.warning("the model's warm-up run failed: %s", one_line(exc))


def model_info(checkpoint: Path, separator: object) -> dict[str, Any]:
    """Plain facts about the model for ``/api/info`` (``create_app(model_info=...)``): the
    checkpoint's file name (no server paths), its summary, the separator's target and post-filter."""
    info: dict[str, Any] = {"checkpoint": Path(checkpoint).name}
    summary = getattr(getattr(separator, "checkpoint", None), "summary", None)
    if summary is not None:
        info.update({k: v for k, v in summary().items() if k != "path"})
    target = getattr(separator, "target", None)
    if isinstance(target, str):
        info["target"] = target
    post = getattr(separator, "post_filter", None)
    if isinstance(post, str):
        info["post_filter"] = post
    return info


__all__ = ["create_app", "lifespan", "model_info", "warm_up"]
