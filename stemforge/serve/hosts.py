"""Which requests the server answers at all: by the ``Host`` they name, and, for the requests
that change something, by the ``Origin`` of the page that sent them.

Why: ``stemforge serve`` is meant to run on one's desk, on 127.0.0.1, with no authentication.
Two attacks reach such a server from a web page the user merely visits:

* **DNS rebinding**: ``evil.example`` first resolves to the attacker and then to 127.0.0.1; the
  browser then lets that page read the local server as its own origin. The request still names
  ``Host: evil.example``, so answering only the host names the server is known by stops it.
* **Cross-site request forgery**: any page may POST a form (``multipart/form-data`` needs no
  CORS preflight) to ``http://127.0.0.1:8000/api/jobs``. Browsers send an ``Origin`` header with
  every such request, so a state-changing request (POST, PUT, PATCH, DELETE) whose Origin is not
  the server's own (or one configured) is refused. A request without Origin (curl, scripts) is
  not from a browser page and is let through.

Starlette's ``TrustedHostMiddleware`` checks the host but answers in plain text, and no stock
middleware refuses by Origin (CORS middleware only adds headers; the browser still sends a
simple POST), so both checks live here, answering JSON ``{"detail": "one line"}`` like every
other refusal of the server.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable
from urllib.parse import urlsplit

#: Host names a loopback server is always known by.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Methods that change something, and so need an acceptable Origin.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or netloc, lower case, without port or IPv6 brackets:
    ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost:80"`` -> ``"localhost"``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value  # a name, an IPv4 address or a bare IPv6 address


def normalize_origin(origin: str) -> str:
    """``"HTTP://Example.org:8080/"`` -> ``"http://example.org:8080"`` (scheme://host[:port])."""
    parts = urlsplit(origin.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class HostOriginGuard:
    """ASGI middleware: 400 for a ``Host`` not in ``allowed_hosts``; 403 for a state-changing
    request from a foreign ``Origin``.

    Args:
        app: the ASGI app to protect.
        allowed_hosts: host names (no port; ``*`` allows any host, ``*.example.org`` a domain and
            its subdomains). Compared case-insensitively, without the port.
        allowed_origins: origins (``scheme://host[:port]``) besides the server's own that may
            create or delete jobs; ``*`` allows any.

    The server's own origin is the one the request addresses: an Origin whose ``host[:port]``
    equals the request's (already allowed) ``Host`` header is same-origin. The scheme is not
    compared, so a TLS proxy in front (https outside, http here) needs no configuration.
    """

    def __init__(self, app: Callable, allowed_hosts: Iterable[str], allowed_origins: Iterable[str] = ()):
        self.app = app
        hosts = [host_name(h) if h != "*" else "*" for h in allowed_hosts]
        self.any_host = "*" in hosts
        self.hosts = frozenset(h for h in hosts if not h.startswith("*"))
        self.domains = tuple(h[1:] for h in hosts if h.startswith("*."))  # ".example.org"
        origins = list(allowed_origins)
        self.any_origin = "*" in origins
        self.origins = frozenset(normalize_origin(o) for o in origins if o != "*")

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if not name:
            return False
        return self.any_host or name in self.hosts or any(name.endswith(d) for d in self.domains)

    def origin_allowed(self, origin: str, host: str) -> bool:
        if self.any_origin:
            return True
        if origin == "null":  # sandboxed frames, file:// pages: never our page
            return False
        parts = urlsplit(origin)
        if parts.netloc and parts.netloc.lower() == host.strip().lower():
            return True
        try:
            return normalize_origin(origin) in self.origins
        except ValueError:
            return False

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":  # lifespan (the app has no websockets)
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not self.host_allowed(host):
            shown = host_name(host)[:100] or "(none)"
            await _refuse(send, 400, f"this server does not answer to the host name {shown!r}; start it with --allow-host to add one")
            return
        origin = headers.get("origin")
        if origin is not None and scope.get("method", "GET") in UNSAFE_METHODS and not self.origin_allowed(origin, host):
            await _refuse(send, 403, f"requests from the page at {origin[:100]!r} are refused (another origin); start the server with --allow-origin to allow it")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
