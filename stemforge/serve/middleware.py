"""What wraps every answer of the app: the security headers (:class:`SecurityHeaders`, ASGI
middleware) and the exception handlers that make every refusal one line of JSON
(``{"detail": "..."}``): ours and routing's HTTP errors, FastAPI's validation errors, and a
bug's 500 (no traceback, no server path).

(The Host/Origin guard, the outermost wrapper, is :class:`stemforge.serve.hosts.HostOriginGuard`;
the head deadline lives in the HTTP protocol, :mod:`stemforge.serve.connection`.)
"""

from __future__ import annotations

import logging
from typing import Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stemforge.serve.jobs import one_line

log = logging.getLogger("stemforge.serve")


class SecurityHeaders:
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


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every HTTPException (ours, routing's 404/405, StaticFiles') as ``{"detail": "one line"}``."""
    return JSONResponse({"detail": " ".join(str(exc.detail).split())}, status_code=exc.status_code, headers=exc.headers)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of validation problems as one line naming the parameter: 422."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("path", "query", "body", "header"))
        problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    detail = " ".join("; ".join(problems).split())[:300] or "invalid request"
    return JSONResponse({"detail": detail}, status_code=422)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: one line for the client (no traceback, no server paths); the log has the rest."""
    log.error("internal error on %s %s: %s", request.method, request.url.path, one_line(exc))  # the server logs the traceback
    return JSONResponse({"detail": f"internal server error ({type(exc).__name__}); see the server's log"}, status_code=500)


__all__ = ["SecurityHeaders", "http_error", "internal_error", "validation_error"]
