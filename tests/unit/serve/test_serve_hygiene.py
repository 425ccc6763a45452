"""Hygiene of ``stemforge serve`` on a desk (issue 16 item 7): who may talk to the server
(Host: DNS rebinding; Origin: cross-site job creation), how long a connection may take (a head
that never completes, an upload that stalls or trickles), and no third-party assets (``/docs``).

The timeouts are tested against a real uvicorn server on a free 127.0.0.1 port, configured as
the CLI configures it (:func:`stemforge.serve.connection.server_config`), with raw sockets; every
wait is bounded and the server stops at the end of the module.
"""

from __future__ import annotations

import io
import json
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

from stemforge.core.errors import StemforgeError
from stemforge.serve import ServeSettings, create_app
from stemforge.serve.hosts import host_name, normalize_origin

from support.serve import serving

RATE = 8000


class Halves:
    """Separator stand-in: vocals and accompaniment are half the mixture each."""

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        return {"vocals": 0.5 * audio, "accompaniment": 0.5 * audio}


def wav_bytes(seconds: float = 0.3) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def client_for(tmp_path: Path, base_url: str = "http://127.0.0.1", **settings) -> TestClient:
    settings.setdefault("max_seconds", 5.0)
    settings.setdefault("work_dir", tmp_path / "work")
    app = create_app(Halves(), ServeSettings(**settings), render_png=None)
    return TestClient(app, base_url=base_url)


def post_song(client: TestClient, headers: dict | None = None):
    return client.post("/api/jobs", files={"file": ("song.wav", wav_bytes(), "audio/wav")}, headers=headers or {})


def one_line_json(r) -> str:
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str) and "\n" not in body["detail"], body
    return body["detail"]


def job_folders(tmp_path: Path) -> list[str]:
    root = tmp_path / "work"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --------------------------------------------------------------------------- Host (DNS rebinding)
def test_a_foreign_host_is_refused(tmp_path):
    with client_for(tmp_path, base_url="http://evil.example:8000") as client:
        for r in (client.get("/"), client.get("/api/info"), post_song(client)):
            assert r.status_code == 400
            assert "evil.example" in one_line_json(r) and "--allow-host" in r.json()["detail"]
        assert job_folders(tmp_path) == []  # refused before anything was stored


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000", "http://localhost", "http://LOCALHOST:1234", "http://[::1]:8000"])
def test_loopback_names_are_served_by_default(tmp_path, base_url):
    with client_for(tmp_path, base_url=base_url) as client:
        assert client.get("/api/info").status_code == 200
        assert post_song(client).status_code == 202


def test_configured_hosts_are_served(tmp_path):
    hosts = ("studio.lan", "*.example.org")
    for base_url, status in [
        ("http://studio.lan:8000", 200),
        ("http://a.example.org", 200),
        ("http://b.a.example.org", 200),
        ("http://example.org.evil", 400),
        ("http://127.0.0.1", 400),  # configuring hosts replaces the defaults (the CLI adds them back)
    ]:
        with client_for(tmp_path, base_url=base_url, allowed_hosts=hosts) as client:
            assert client.get("/api/info").status_code == status, base_url
    with client_for(tmp_path, base_url="http://anything.at.all", allowed_hosts=("*",)) as client:
        assert client.get("/api/info").status_code == 200


def test_host_names_and_origins_are_normalized():
    assert host_name("[::1]:8000") == "::1" and host_name("::1") == "::1"
    assert host_name("LocalHost:80") == "localhost" and host_name("10.0.0.2") == "10.0.0.2"
    assert normalize_origin("HTTP://Studio.LAN:8080/") == "http://studio.lan:8080"
    with pytest.raises(ValueError):
        normalize_origin("studio.lan")
    with pytest.raises(StemforgeError, match="not an origin"):
        ServeSettings(allowed_origins=("studio.lan",))


# --------------------------------------------------------------------------- Origin (CSRF)
def test_job_creation_from_another_origin_is_refused(tmp_path):
    with client_for(tmp_path, base_url="http://127.0.0.1:8000") as client:
        for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "http://localhost:8000"):
            r = post_song(client, {"Origin": origin})
            assert r.status_code == 403, origin
            assert "another origin" in one_line_json(r) and "--allow-origin" in r.json()["detail"]
        assert job_folders(tmp_path) == []
        own = post_song(client, {"Origin": "http://127.0.0.1:8000"})  # the page the server served
        assert own.status_code == 202
        job = own.json()["id"]
        assert post_song(client).status_code == 202  # no Origin: not a browser page (curl, scripts)
        # reading is not a change (and a foreign page cannot read the answer without CORS headers)
        assert client.get(f"/api/jobs/{job}", headers={"Origin": "http://evil.example"}).status_code == 200
        assert client.delete(f"/api/jobs/{job}", headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.delete(f"/api/jobs/{job}", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 204


def test_configured_origins_may_create_jobs(tmp_path):
    with client_for(tmp_path, allowed_origins=("https://studio.example.org",)) as client:
        assert post_song(client, {"Origin": "https://studio.example.org"}).status_code == 202
        assert post_song(client, {"Origin": "https://other.example.org"}).status_code == 403
    with client_for(tmp_path, allowed_origins=("*",)) as client:
        assert post_song(client, {"Origin": "http://anywhere.example"}).status_code == 202


# --------------------------------------------------------------------------- no third-party assets
def test_interactive_docs_are_off_and_the_schema_stays(tmp_path):
    with client_for(tmp_path) as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
        assert client.get("/openapi.json").json()["info"]["title"] == "stemforge serve"
        page = client.get("/").text
        assert "cdn" not in page.lower() and "https://" not in page


# --------------------------------------------------------------------------- timeouts, on a socket
TIMEOUT = 1.0  # --upload-timeout of the test server
MIN_RATE_KIB = 64.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A uvicorn server as the CLI runs it, on a free 127.0.0.1 port; yields ``(port, app)``."""
    work = tmp_path_factory.mktemp("hygiene") / "work"
    settings = ServeSettings(
        max_upload_mb=4, max_seconds=5.0, work_dir=work, upload_timeout_s=TIMEOUT, upload_min_rate_kib=MIN_RATE_KIB
    )
    app = create_app(Halves(), settings, render_png=None)
    with serving(app) as port:
        yield port, app


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_closed(s: socket.socket, limit_s: float = 10.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when that was (s from
    now); fails the test if it stays open ``limit_s`` seconds."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    data = b""
    while time.monotonic() - t0 < limit_s:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"the connection was still open after {limit_s} s")
    return data, time.monotonic() - t0


def multipart_head(port: int, body_length: int, boundary: str = "b0undary") -> tuple[bytes, bytes]:
    """The request head and the part header of an upload whose body is ``body_length`` bytes."""
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {body_length}\r\n\r\n").encode()
    return head, part


def status_and_detail(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body.decode())["detail"]


def test_a_real_upload_still_goes_through(live):
    port, _ = live
    song, tail = wav_bytes(), b"\r\n--b0undary--\r\n"
    _, part = multipart_head(port, 0)
    head, _ = multipart_head(port, len(part) + len(song) + len(tail))
    with connect(port) as s:
        s.sendall(head + part + song + tail)
        s.settimeout(10)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]


def test_connections_that_never_send_a_request_are_closed(live):
    """Fifty connections that open and say nothing, one that sends its head a byte at a time
    (slowloris): all closed about --upload-timeout after they opened."""
    port, _ = live
    silent = [connect(port) for _ in range(50)]
    trickle = connect(port)
    head = f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
    t0 = time.monotonic()
    closed_by_server = False
    for byte in head:  # one byte every 0.1 s: the head would take 4 s
        try:
            trickle.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_by_server = True
            break
        time.sleep(0.1)
        if time.monotonic() - t0 > TIMEOUT + 2:
            break
    data, _ = read_until_closed(trickle, limit_s=5)
    assert closed_by_server or data == b""
    assert time.monotonic() - t0 < TIMEOUT + 4
    for s in silent:
        data, _ = read_until_closed(s, limit_s=TIMEOUT + 4)
        assert data == b""
        s.close()
    trickle.close()
    assert time.monotonic() - t0 < TIMEOUT + 6  # all of them, not one after another


def test_an_upload_that_stalls_gets_408_and_is_closed(live):
    port, app = live
    head, part = multipart_head(port, 1_000_000)
    with connect(port) as s:
        s.sendall(head + part + b"RIFF" + bytes(2000))  # then nothing more
        t0 = time.monotonic()
        data, _ = read_until_closed(s, limit_s=TIMEOUT + 5)
        waited = time.monotonic() - t0
    status, detail = status_and_detail(data)
    assert status == 408 and "too slow" in detail and "\n" not in detail
    assert TIMEOUT * 0.8 <= waited < TIMEOUT + 4
    assert _no_upload_left(app)


def test_an_upload_below_the_minimum_rate_gets_408(live):
    """1 KiB every 0.1 s (10 KiB/s, under the 64 KiB/s minimum): cut off once the deadline
    ``timeout + received / min_rate`` passes, although no single pause is long."""
    port, app = live
    head, part = multipart_head(port, 4_000_000)
    with connect(port) as s:
        s.sendall(head + part + b"RIFF")
        t0 = time.monotonic()
        refused = False
        while time.monotonic() - t0 < TIMEOUT + 5:
            try:
                s.sendall(bytes(1024))
            except (BrokenPipeError, ConnectionResetError):
                refused = True
                break
            s.settimeout(0.1)
            try:
                if s.recv(65536, socket.MSG_PEEK):
                    refused = True
                    break
            except socket.timeout:
                pass
        assert refused, "the trickling upload was never cut off"
        data, _ = read_until_closed(s, limit_s=5)
        elapsed = time.monotonic() - t0
    status, detail = status_and_detail(data)
    assert status == 408 and "KiB/s" in detail
    # about TIMEOUT + received / rate, i.e. a little over a second at 10 KiB/s against 64
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 4
    assert _no_upload_left(app)


def _no_upload_left(app) -> bool:
    """The refused upload's folder is gone (a moment after the answer)."""
    root = app.state.store.root
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(app.state.store.get(p.name) is not None for p in root.iterdir()):  # jobs only, no leftover
            return True
        time.sleep(0.05)
    return False
