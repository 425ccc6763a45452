"""A live server for the serve tests: the app in uvicorn on a free loopback port, as `stemforge
serve` runs it (its ``server_config``), on a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator


@contextlib.contextmanager
def serving(app) -> Iterator[int]:
    """Run ``app`` (settings from ``app.state.settings``) in uvicorn on a free 127.0.0.1 port;
    yields the port once the server has started, and stops it on exit."""
    import uvicorn

    from stemforge.serve.connection import server_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, app.state.settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
