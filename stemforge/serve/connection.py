"""A deadline for the head of every request: uvicorn's HTTP/1.1 protocol (h11), plus a timer.

Why: uvicorn closes a keep-alive connection that stays silent after a response
(``timeout_keep_alive``), but a connection that opens and never sends a complete request head,
or sends it a byte at a time (slowloris), is kept open for ever: a thousand of them hold a
thousand sockets. Uvicorn has no option for it, so this subclass of its h11 protocol (the class
uvicorn's ``http=`` setting takes) arms a timer when a connection opens and again after every
response, and closes the connection when no complete request head has arrived by then. What
happens once the head is in (the body) is the app's business: see the upload deadline in
``stemforge.serve.upload``.

:func:`listen` binds the socket ``stemforge serve`` hands uvicorn; :func:`is_loopback` says
whether an address is reachable from this machine only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from stemforge.core.errors import StemforgeError

if TYPE_CHECKING:
    import uvicorn

    from stemforge.serve.settings import ServeSettings

#: Seconds an idle keep-alive connection stays open after a response (uvicorn's own timer).
KEEP_ALIVE_S = 5


def head_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class, closing connections whose request head takes longer than
    ``seconds`` (counted from the connection's opening, or from the end of the previous
    response). Pass it as ``uvicorn.Config(..., http=head_timeout_protocol(30.0))``."""
    if not seconds > 0:
        raise ValueError(f"the head timeout must be positive, got {seconds}")

    class HeadTimeoutH11Protocol(H11Protocol):
        head_timeout = float(seconds)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            self._cancel_head_timer()
            idle = self.cycle is None or self.cycle.response_complete  # not when a pipelined request runs
            if idle and not self.transport.is_closing():
                waiting_after = self.cycle  # a new request replaces it as soon as its head is in
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out, waiting_after)

        def _cancel_head_timer(self) -> None:
            timer = getattr(self, "_head_timer", None)
            if timer is not None:
                timer.cancel()
                self._head_timer = None

        def _head_timed_out(self, waiting_after: object) -> None:
            self._head_timer = None
            if self.cycle is not waiting_after or self.transport.is_closing():
                return  # a request came in meanwhile
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
            self.transport.close()

    return HeadTimeoutH11Protocol


def server_config(app: object, settings: "ServeSettings", log_level: str = "warning") -> "uvicorn.Config":
    """The uvicorn configuration ``stemforge serve`` runs ``app`` with: the head deadline above
    (``settings.upload_timeout_s``), uvicorn's keep-alive timeout for idle connections between
    requests (5 s), and 5 s for running requests to finish at shutdown."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=head_timeout_protocol(settings.upload_timeout_s),
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=5,
        log_level=log_level,
        lifespan="on",
    )


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0: any free one); StemforgeError when the
    address is taken or unknown."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise StemforgeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StemforgeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
