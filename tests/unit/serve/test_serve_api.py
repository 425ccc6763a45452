"""The JSON API of ``stemforge serve`` through FastAPI's TestClient, with a stand-in separator.

The stand-in has the Separator's interface (``separate(audio [channels, samples], sample_rate)``)
and returns known stems, so the tests check what the server does with them: the files, the
states, the refusals. The real model is exercised in tests/integration/test_serve_browser.py.
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
    from fastapi.testclient import TestClient

from stemforge.serve import JOB_OUTPUTS, ServeSettings, create_app
from stemforge.serve.jobs import valid_job_id
from stemforge.serve.outputs import LEVELS, PLOT_HEIGHT, PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PNG_HEIGHT, PNG_WIDTH, spectrogram_png

RATE = 8000
#: A host name the server answers by default (TestClient's own "testserver" is refused: not loopback).
BASE_URL = "http://127.0.0.1"
FIXED_NAMES = {f"{s}.{k}" for s in JOB_OUTPUTS for k in ("wav", "png")}


# --------------------------------------------------------------------------- helpers
def tone(seconds: float, channels: int = 2, rate: int = RATE) -> np.ndarray:
    """``[channels, samples]`` float32: a different sine per channel at -10 dBFS."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


def encode(audio: np.ndarray, fmt: str, rate: int = RATE) -> bytes:
    """``audio`` as the bytes of a wav / flac / ogg / mp3 / m4a file."""
    if fmt == "m4a":
        import tempfile

        import av

        layout = "stereo" if audio.shape[0] == 2 else "mono"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.m4a"
            with av.open(str(path), "w", format="mp4") as out:
                stream = out.add_stream("aac", rate=rate, layout=layout)
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
                frame.rate = rate
                for packet in stream.encode(frame):
                    out.mux(packet)
                for packet in stream.encode(None):
                    out.mux(packet)
            return path.read_bytes()
    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format={"wav": "WAV", "flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[fmt],
             subtype="PCM_16" if fmt == "wav" else None)
    return buf.getvalue()


def tiny_png(path: Path) -> None:
    """A valid 1x1 grey PNG (stands in for the spectrogram helper)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


class StandIn:
    """Separator stand-in: vocals = 0.25 * mix, accompaniment = 0.75 * mix.

    ``fail_mono``: raise on one-channel input (a crashing separation). ``gate``: when set, each
    call waits for it (to hold jobs in the pool). ``calls`` counts the calls.
    """

    def __init__(self, fail_mono: bool = False, gate: threading.Event | None = None, bad_shape: bool = False):
        self.fail_mono, self.gate, self.bad_shape = fail_mono, gate, bad_shape
        self.calls = 0
        self.started = threading.Semaphore(0)

    def separate(self, audio: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        self.calls += 1
        self.started.release()
        if self.gate is not None and not self.gate.wait(20):
            raise TimeoutError("gate never opened")
        if self.fail_mono and audio.shape[0] == 1:
            raise RuntimeError("boom: the model\nexploded on mono input")
        if self.bad_shape:
            return {"vocals": audio[:, :10], "accompaniment": audio}
        return {"vocals": 0.25 * audio, "accompaniment": 0.75 * audio}


def make_client(tmp_path: Path, separator=None, render_png=None, **settings) -> TestClient:
    settings.setdefault("max_upload_mb", 0.5)
    settings.setdefault("max_seconds", 5.0)
    settings.setdefault("work_dir", tmp_path / "work")
    render_png = render_png or (lambda audio, rate, path, reference: tiny_png(path) or 1.0)
    app = create_app(separator or StandIn(), ServeSettings(**settings), render_png=render_png)
    return TestClient(app, base_url=BASE_URL)


def upload(client: TestClient, data: bytes, filename: str = "song.wav", content_type: str = "audio/wav"):
    return client.post("/api/jobs", files={"file": (filename, data, content_type)})


def wait(client: TestClient, job_id: str, states=("done", "failed"), timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in states:
            return status
        time.sleep(0.03)
    raise AssertionError(f"job {job_id} still {status['state']} after {timeout} s")


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the happy paths
def test_upload_separate_download(tmp_path):
    mix = tone(1.5)
    with make_client(tmp_path) as client:
        r = upload(client, encode(mix, "wav"), "My Song (live).wav")
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/api/jobs/{job['id']}"
        assert valid_job_id(job["id"])
        assert job["state"] in ("queued", "running", "done")
        assert job["duration_s"] == pytest.approx(1.5)
        assert (job["sample_rate"], job["channels"]) == (RATE, 2)
        status = wait(client, job["id"])
        assert status["state"] == "done", status
        assert status["progress"] == 1.0 and status["error"] is None and status["queue_position"] is None
        assert status["expires_at"] > status["finished_at"]
        expected = {"mixture": mix, "vocals": 0.25 * mix, "accompaniment": 0.75 * mix}
        for stem in JOB_OUTPUTS:
            links = status["stems"][stem]
            r = client.get(links["wav"])
            assert r.status_code == 200
            assert r.headers["content-type"] == "audio/wav"
            assert r.headers["content-disposition"].startswith("inline")
            got, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
            assert rate == RATE and got.shape == (mix.shape[1], 2)
            np.testing.assert_allclose(got.T, expected[stem], atol=2e-4)  # 16-bit PCM
            r = client.get(links["png"])
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert r.content.startswith(b"\x89PNG")
        r = client.get(status["stems"]["vocals"]["wav"] + "?download=1")
        assert r.headers["content-disposition"].startswith("attachment")
        assert "My%20Song%20%28live%29-vocals.wav" in r.headers["content-disposition"]


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3", "m4a"])
def test_common_formats_are_accepted(tmp_path, fmt):
    # The client's name says nothing ("upload.bin"): the format is recognized from the bytes.
    mix = tone(1.0, channels=1 if fmt == "mp3" else 2)
    with make_client(tmp_path) as client:
        r = upload(client, encode(mix, fmt), "upload.bin", "application/octet-stream")
        assert r.status_code == 202, r.text
        status = wait(client, r.json()["id"])
        assert status["state"] == "done", status
        assert status["channels"] == mix.shape[0]
        got, rate = sf.read(io.BytesIO(client.get(status["stems"]["accompaniment"]["wav"]).content), always_2d=True)
        assert rate == RATE and got.shape[1] == mix.shape[0]
        assert abs(got.shape[0] - mix.shape[1]) < 0.2 * RATE  # codecs pad a little (AAC priming)


def test_page_and_static_files_are_self_contained(tmp_path):
    with make_client(tmp_path) as client:
        r = client.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "default-src 'self'" in r.headers["content-security-policy"]
        html = r.text
        for asset in ("/static/app.js", "/static/style.css"):
            assert asset in html
            r = client.get(asset)
            assert r.status_code == 200 and len(r.content) > 500
            assert "http://" not in r.text and "https://" not in r.text  # no CDN, nothing external
        assert 'type="file"' in html and 'id="drop"' in html
        info = client.get("/api/info").json()
        assert info["max_upload_bytes"] == int(0.5 * 1024 * 1024)
        assert info["max_seconds"] == 5.0 and info["jobs"] == 1
        assert {"wav", "flac", "mp3", "ogg", "m4a"} <= set(info["formats"])


def test_openapi_schema_describes_the_api(tmp_path):
    with make_client(tmp_path) as client:
        schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {"/api/info", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/{stem}.wav",
                          "/api/jobs/{job_id}/{stem}.png"}
    post = paths["/api/jobs"]["post"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["format"] == "binary"
    assert {"202", "413", "415", "422", "503"} <= set(post["responses"])
    assert "delete" in paths["/api/jobs/{job_id}"]
    components = schema["components"]["schemas"]
    status = components["JobStatus"]["properties"]
    assert {"id", "state", "progress", "queue_position", "error", "stems"} <= set(status)
    assert set(components["Stem"]["enum"]) == set(JOB_OUTPUTS)
    assert set(components["JobState"]["enum"]) == {"queued", "running", "done", "failed"}
    assert components["ErrorMessage"]["required"] == ["detail"]


# --------------------------------------------------------------------------- bad input
def test_oversize_upload_with_content_length_is_refused_unread(tmp_path):
    with make_client(tmp_path) as client:
        r = upload(client, b"\0" * (700 * 1024))
        assert r.status_code == 413
        assert "0.5 MiB" in r.json()["detail"]
        assert r.headers["connection"] == "close"  # uvicorn then stops receiving the body
        assert files_under(tmp_path / "work") == []


def test_oversize_upload_is_cut_off_while_streaming(tmp_path):
    """A chunked body (no Content-Length) is read only until the limit passes.

    TestClient reads a request body whole before the app sees it, so this test drives the ASGI
    app itself with a ``receive`` that hands out 64 KiB chunks and counts them.
    """
    chunk, n_chunks = 64 * 1024, 200  # 12.5 MiB offered, limit 0.5 MiB
    boundary = b"sfboundary"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n")
    parts = [head] + [b"\1" * chunk] * n_chunks + [b"\r\n--" + boundary + b"--\r\n"]
    taken = []
    messages = []

    async def receive():
        if len(taken) < len(parts):
            taken.append(1)
            return {"type": "http.request", "body": parts[len(taken) - 1], "more_body": len(taken) < len(parts)}
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/jobs", "raw_path": b"/api/jobs", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"multipart/form-data; boundary=" + boundary),
                    (b"transfer-encoding", b"chunked")],
    }
    with make_client(tmp_path) as client:
        asyncio.run(client.app(scope, receive, send))
        assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 413
        body = b"".join(m.get("body", b"") for m in messages[1:])
        assert b"0.5 MiB" in body
        assert len(taken) < 12, f"the server read {len(taken)} chunks of 64 KiB past a 0.5 MiB limit"
        assert files_under(tmp_path / "work") == []
        assert client.get("/api/info").status_code == 200


@pytest.mark.parametrize(
    "data, filename, reason",
    [
        (b"this is not audio at all, just text" * 40, "song.wav", "not a"),
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunkjunk" * 10, "song.wav", "decodable"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8, "song.mp3", "decodable"),
        (b"", "empty.wav", "empty"),
    ],
    ids=["text", "broken-wav", "broken-mp3", "empty"],
)
def test_undecodable_upload_is_415_with_reason(tmp_path, data, filename, reason):
    with make_client(tmp_path) as client:
        r = upload(client, data, filename)
        assert r.status_code == 415, r.text
        detail = r.json()["detail"]
        assert reason in detail and "\n" not in detail
        assert str(tmp_path) not in detail  # no server path in answers
        assert files_under(tmp_path / "work") == []


def test_not_multipart_is_415(tmp_path):
    with make_client(tmp_path) as client:
        r = client.post("/api/jobs", content=encode(tone(0.5), "wav"), headers={"content-type": "audio/wav"})
        assert r.status_code == 415
        assert "multipart/form-data" in r.json()["detail"]


def test_form_without_file_is_422(tmp_path):
    with make_client(tmp_path) as client:
        r = client.post("/api/jobs", data={"song": "x"}, files={"other": ("a.txt", b"x", "text/plain")})
        assert r.status_code == 422
        assert "file" in r.json()["detail"]
        assert files_under(tmp_path / "work") == []


def test_too_long_song_is_422(tmp_path):
    with make_client(tmp_path, max_seconds=2.0) as client:
        r = upload(client, encode(tone(3.0, channels=1), "wav"))
        assert r.status_code == 422
        assert "3.0 s" in r.json()["detail"] and "2 s" in r.json()["detail"]
        assert files_under(tmp_path / "work") == []


def test_unknown_ids_and_bad_stems(tmp_path):
    with make_client(tmp_path) as client:
        job = upload(client, encode(tone(0.5), "wav")).json()
        wait(client, job["id"])
        fresh = "A" * len(job["id"])  # the shape of an id, but none
        for path in (f"/api/jobs/{fresh}", f"/api/jobs/{fresh}/vocals.wav", f"/api/jobs/{fresh}/vocals.png",
                     "/api/jobs/nope", "/api/jobs/" + "x" * 100):
            assert client.get(path).status_code == 404, path
        assert client.delete(f"/api/jobs/{fresh}").status_code == 404
        for stem in ("drums", "VOCALS", "vocals.wav", "..", "input"):
            r = client.get(f"/api/jobs/{job['id']}/{stem}.wav")
            assert r.status_code in (404, 422), (stem, r.status_code)
        assert client.get(f"/api/jobs/{job['id']}/vocals.mp3").status_code == 404
        assert client.get(f"/api/jobs/{job['id']}/input.wav").status_code == 422


def test_every_refusal_is_one_line_of_json(tmp_path):
    """docs/serve.md promises ``{"detail": "one line"}`` for every refusal, FastAPI's own
    validation errors (a list of objects by default) and routing's 404/405 included."""
    with make_client(tmp_path) as client:
        job = upload(client, encode(tone(0.5), "wav")).json()["id"]
        wait(client, job)
        refusals = {
            ("get", f"/api/jobs/{job}/drums.wav"): (422, "stem"),
            ("get", f"/api/jobs/{job}/vocals.wav?download=maybe"): (422, "download"),
            ("get", "/api/jobs/" + "A" * len(job)): (404, "no such job"),
            ("get", "/api/nothing-here"): (404, "Not Found"),
            ("get", "/static/missing.js"): (404, "Not Found"),
            ("put", f"/api/jobs/{job}"): (405, "Method Not Allowed"),
            ("post", "/api/jobs"): (415, "multipart"),
            ("get", "/docs"): (404, "Not Found"),
        }
        for (method, path), (status, words) in refusals.items():
            r = getattr(client, method)(path)
            assert r.status_code == status, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json", path
            body = r.json()
            assert list(body) == ["detail"] and isinstance(body["detail"], str), (path, body)
            assert "\n" not in body["detail"] and words in body["detail"], (path, body)
        assert "mixture" in client.get(f"/api/jobs/{job}/drums.wav").json()["detail"]  # says what is allowed


def test_path_traversal_is_harmless(tmp_path):
    work = tmp_path / "work"
    names = ["../../../../evil.wav", "..\\..\\evil.wav", "/etc/passwd", "a/../../b.wav", "\x00../x.wav", "...."]
    ids = []
    with make_client(tmp_path) as client:
        for name in names:
            r = upload(client, encode(tone(0.3), "wav"), name)
            assert r.status_code == 202, (name, r.text)
            ids.append(r.json()["id"])
            assert "/" not in r.json()["filename"] and "\\" not in r.json()["filename"]
        for job_id in ids:
            assert wait(client, job_id)["state"] == "done"
        # Ids are random and distinct; every stored file is <id>/<fixed name>.
        assert len(set(ids)) == len(ids) and all(valid_job_id(i) for i in ids)
        stored = files_under(work)
        assert stored and all(p.parts[0] in ids and p.name in FIXED_NAMES and len(p.parts) == 2 for p in stored)
        assert not (tmp_path / "evil.wav").exists() and not list(tmp_path.parent.glob("evil.wav"))
        # Traversal in ids and file names of the API gets a 404, never a file.
        for path in ("/api/jobs/..%2F..%2Fetc%2Fpasswd", f"/api/jobs/{ids[0]}/..%2F..%2Fvocals.wav",
                     f"/api/jobs/{ids[0]}%2F..%2F{ids[1]}/vocals.wav", "/api/jobs/../../etc/passwd",
                     "/static/../app.py", "/static/..%2Fapp.py"):
            r = client.get(path)
            assert r.status_code in (404, 422), (path, r.status_code)
            assert b"import" not in r.content and b"root:" not in r.content
        assert client.delete("/api/jobs/..%2F..").status_code in (404, 405)
        assert work.is_dir() and files_under(work) == stored


def test_failing_separation_marks_the_job_failed_and_the_server_goes_on(tmp_path):
    sep = StandIn(fail_mono=True)
    with make_client(tmp_path, separator=sep) as client:
        bad = upload(client, encode(tone(0.5, channels=1), "wav"), "mono.wav").json()
        good = upload(client, encode(tone(0.5, channels=2), "wav"), "stereo.wav").json()
        failed = wait(client, bad["id"])
        assert failed["state"] == "failed" and failed["stage"] == "failed"
        assert failed["error"] == "RuntimeError: boom: the model exploded on mono input"  # one line
        assert failed["stems"] is None and failed["expires_at"] is not None
        assert client.get(f"/api/jobs/{bad['id']}/vocals.wav").status_code == 409
        assert client.get("/api/info").status_code == 200
        assert wait(client, good["id"])["state"] == "done"
        assert files_under(tmp_path / "work" / bad["id"]) == []  # the upload is gone
        store = client.app.state.store
        assert store.counts()["failed_total"] == 1 and store.counts()["done_total"] == 1


def test_separator_returning_wrong_shapes_fails_the_job(tmp_path):
    with make_client(tmp_path, separator=StandIn(bad_shape=True)) as client:
        job = upload(client, encode(tone(0.5), "wav")).json()
        status = wait(client, job["id"])
        assert status["state"] == "failed" and "vocals of shape" in status["error"]


def test_decode_failure_after_probe_fails_the_job(tmp_path):
    """A file whose header is fine but whose body is cut is refused by the worker, in one line."""
    data = encode(tone(1.0), "flac")
    with make_client(tmp_path) as client:
        r = upload(client, data[: len(data) // 3], "cut.flac")
        if r.status_code == 415:  # the probe saw it already: also a fine answer
            return
        assert r.status_code == 202
        status = wait(client, r.json()["id"])
        # libsndfile may decode what is there; then the job is done with a shorter song.
        assert status["state"] in ("failed", "done")
        if status["state"] == "failed":
            assert "\n" not in status["error"] and str(tmp_path) not in status["error"]


# --------------------------------------------------------------------------- pool, queue, expiry
def test_jobs_queue_beyond_the_pool_and_say_their_place(tmp_path):
    gate = threading.Event()
    sep = StandIn(gate=gate)
    with make_client(tmp_path, separator=sep, jobs=1, max_queue=2) as client:
        data = encode(tone(0.3), "wav")
        first = upload(client, data).json()["id"]
        assert sep.started.acquire(timeout=10)  # the first job holds the only worker
        second = upload(client, data).json()
        third = upload(client, data).json()
        assert (second["state"], second["queue_position"]) == ("queued", 1)
        assert third["queue_position"] == 2
        r = upload(client, data)  # two waiting already
        assert r.status_code == 503 and r.headers["retry-after"] == "30"
        # The server answers while the worker is busy.
        t0 = time.monotonic()
        assert client.get(f"/api/jobs/{first}").json()["state"] == "running"
        assert client.get("/api/info").json()["queued"] == 2
        assert time.monotonic() - t0 < 2.0
        # Deleting a waiting job moves the next one up.
        assert client.delete(f"/api/jobs/{second['id']}").status_code == 204
        assert client.get(f"/api/jobs/{third['id']}").json()["queue_position"] == 1
        assert client.get(f"/api/jobs/{second['id']}").status_code == 404
        gate.set()
        for job_id in (first, third["id"]):
            assert wait(client, job_id)["state"] == "done"
        assert sep.calls == 2
        assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted([first, third["id"]])


def test_two_workers_run_two_jobs_at_once(tmp_path):
    gate = threading.Event()
    sep = StandIn(gate=gate)
    with make_client(tmp_path, separator=sep, jobs=2) as client:
        ids = [upload(client, encode(tone(0.3), "wav")).json()["id"] for _ in range(3)]
        assert sep.started.acquire(timeout=10) and sep.started.acquire(timeout=10)
        states = [client.get(f"/api/jobs/{i}").json() for i in ids]
        assert [s["state"] for s in states].count("running") == 2
        assert [s["queue_position"] for s in states if s["state"] == "queued"] == [1]
        gate.set()
        assert all(wait(client, i)["state"] == "done" for i in ids)


def test_delete_removes_files_and_running_jobs(tmp_path):
    gate = threading.Event()
    with make_client(tmp_path, separator=StandIn(gate=gate)) as client:
        sep = client.app.state.store.separator
        running = upload(client, encode(tone(0.3), "wav")).json()["id"]
        assert sep.started.acquire(timeout=10)
        assert client.delete(f"/api/jobs/{running}").status_code == 204
        assert client.get(f"/api/jobs/{running}").status_code == 404
        gate.set()
        deadline = time.monotonic() + 10
        while (tmp_path / "work" / running).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (tmp_path / "work" / running).exists()
        done = upload(client, encode(tone(0.3), "wav")).json()["id"]
        wait(client, done)
        assert (tmp_path / "work" / done / "vocals.wav").is_file()
        assert client.delete(f"/api/jobs/{done}").status_code == 204
        assert not (tmp_path / "work" / done).exists()
        assert client.delete(f"/api/jobs/{done}").status_code == 404


def test_results_expire_and_their_files_are_removed(tmp_path):
    # 0.01 minutes = 0.6 s; the cleanup thread runs every second.
    with make_client(tmp_path, expire_minutes=0.01) as client:
        job = upload(client, encode(tone(0.3), "wav")).json()["id"]
        assert wait(client, job)["state"] == "done"
        assert (tmp_path / "work" / job).is_dir()
        deadline = time.monotonic() + 10
        while client.get(f"/api/jobs/{job}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get(f"/api/jobs/{job}").status_code == 404
        assert client.get(f"/api/jobs/{job}/vocals.wav").status_code == 404
        assert not (tmp_path / "work" / job).exists()


def test_a_job_is_listed_until_its_files_are_removed(tmp_path, monkeypatch):
    """Expiry and DELETE remove the folder first and drop the job after: a 404 for a job means
    its files are gone (the old order, table first, failed under load: issue 15)."""
    with make_client(tmp_path, expire_minutes=60) as client:
        store = client.app.state.store
        jobs = [upload(client, encode(tone(0.3), "wav")).json()["id"] for _ in range(2)]
        for job in jobs:
            wait(client, job)
        seen = {}
        real_rmtree = shutil.rmtree

        def watching_rmtree(path, *args, **kwargs):
            name = Path(path).name
            if name in jobs and name not in seen:  # the moment the removal starts
                seen[name] = (store.get(name) is not None, store.file(name, "vocals", "wav"))
            return real_rmtree(path, *args, **kwargs)

        monkeypatch.setattr(shutil, "rmtree", watching_rmtree)
        assert client.delete(f"/api/jobs/{jobs[0]}").status_code == 204
        assert not (tmp_path / "work" / jobs[0]).exists()
        assert store.cleanup_expired(now=time.time() + 7200) == 1  # the other one expires
        monkeypatch.undo()
        # listed while its files went, and none of them served any more
        assert seen == {jobs[0]: (True, None), jobs[1]: (True, None)}
        for job in jobs:
            assert store.get(job) is None and client.get(f"/api/jobs/{job}").status_code == 404
            assert not (tmp_path / "work" / job).exists()


def test_a_folder_that_cannot_be_removed_is_logged_and_retried(tmp_path, monkeypatch, caplog):
    with make_client(tmp_path, expire_minutes=60) as client:
        store = client.app.state.store
        job = upload(client, encode(tone(0.3), "wav")).json()["id"]
        wait(client, job)
        later = time.time() + 7200

        def failing_rmtree(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(shutil, "rmtree", failing_rmtree)
        with caplog.at_level(logging.WARNING, logger="stemforge.serve"):
            assert store.cleanup_expired(now=later) == 0
            r = client.delete(f"/api/jobs/{job}")
        warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(job in m and "Permission denied" in m for m in warnings_), warnings_
        assert r.status_code == 500 and "\n" not in r.json()["detail"] and "try again" in r.json()["detail"]
        # still listed (its files remain), but its files are not served any more
        assert client.get(f"/api/jobs/{job}").status_code == 200
        assert client.get(f"/api/jobs/{job}/vocals.wav").status_code == 404
        assert (tmp_path / "work" / job / "vocals.wav").is_file()
        monkeypatch.undo()
        assert store.cleanup_expired(now=later) == 1  # the next pass succeeds
        assert client.get(f"/api/jobs/{job}").status_code == 404 and not (tmp_path / "work" / job).exists()


def test_cleanup_keeps_unfinished_jobs_and_removes_stray_folders(tmp_path):
    gate = threading.Event()
    with make_client(tmp_path, separator=StandIn(gate=gate), expire_minutes=60) as client:
        store = client.app.state.store
        job = upload(client, encode(tone(0.3), "wav")).json()["id"]
        stray, folder = store.reserve()  # an upload whose request died
        old = time.time() - 7200
        import os

        os.utime(folder, (old, old))
        assert store.cleanup_expired(now=time.time() + 10 * 3600) == 0  # running: kept
        assert store.get(job) is not None and not folder.exists()
        gate.set()
        wait(client, job)
        assert store.cleanup_expired(now=time.time() + 10) == 0  # not yet
        assert store.cleanup_expired(now=time.time() + 3601) == 1
        assert store.get(job) is None and not (tmp_path / "work" / job).exists()


def test_shutdown_removes_a_temporary_work_dir(tmp_path):
    app = create_app(StandIn(), ServeSettings(max_seconds=5.0), render_png=None)
    with TestClient(app, base_url=BASE_URL) as client:
        job = upload(client, encode(tone(0.3), "wav")).json()["id"]
        status = wait(client, job)
        assert status["stems"]["vocals"]["png"] is None  # no renderer, no pictures
        root = client.app.state.store.root
        assert (root / job / "vocals.wav").is_file()
    assert not root.exists()


class Stepping:
    """Separator stand-in reporting progress like the Separator (``progress`` keyword), one step
    per ``go`` event, so the test can look at the job between two steps."""

    def __init__(self, steps: int = 4):
        self.steps = steps
        self.go = threading.Semaphore(0)
        self.reported = threading.Semaphore(0)
        self.calls = []

    def separate(self, audio, sample_rate, *, progress=None):
        self.calls.append((audio.shape, sample_rate))
        if progress is not None:
            progress(0.0)
            for k in range(1, self.steps + 1):
                if not self.go.acquire(timeout=20):
                    raise TimeoutError("the test never let the step run")
                progress(k / self.steps)
                self.reported.release()
        return {"vocals": 0.5 * audio, "accompaniment": 0.5 * audio}


def test_progress_moves_through_the_separating_stage(tmp_path):
    """The separator's own progress reaches the job's status as it comes (decoding 0-0.1,
    separating 0.1-0.8, writing 0.8-1): the first job does not sit at 0.1 (issue 15)."""
    sep = Stepping(steps=4)
    with make_client(tmp_path, separator=sep) as client:
        job = upload(client, encode(tone(0.5), "wav")).json()["id"]
        seen = []
        for _ in range(sep.steps - 1):
            sep.go.release()
            assert sep.reported.acquire(timeout=10)
            status = client.get(f"/api/jobs/{job}").json()
            seen.append((status["stage"], status["progress"]))
        sep.go.release()
        assert wait(client, job)["state"] == "done"
    assert seen == [("separating", 0.275), ("separating", 0.45), ("separating", 0.625)]


def test_the_model_is_warmed_up_before_the_first_job(tmp_path, caplog):
    sep = Stepping(steps=1)
    sep.go.release()  # the warm-up's one step
    with make_client(tmp_path, separator=sep, warm_up=True) as client:
        assert sep.calls == [((1, 16000), 16000)]  # one second of noise, before any upload
        assert client.get("/api/info").status_code == 200

    class Broken:
        def separate(self, audio, sample_rate):
            raise RuntimeError("no weights")

    with caplog.at_level(logging.WARNING, logger="stemforge.serve"):
        with make_client(tmp_path, separator=Broken(), warm_up=True) as client:  # still serves
            assert client.get("/api/info").status_code == 200
    assert any("warm-up" in r.getMessage() and "no weights" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- the real separator
def test_real_separator_with_a_tiny_model(tmp_path):
    """The whole path with stemforge's Separator (a random-weight width-0.125 U-Net): the stems
    keep the upload's rate and channels and add up to the mixture."""
    torch = pytest.importorskip("torch")
    separate = pytest.importorskip("stemforge.separate.separator")
    from stemforge.core.config import SpectrogramConfig
    from stemforge.model import UNet, UNetConfig

    model = UNet(UNetConfig(width=0.125), generator=torch.Generator().manual_seed(3))
    separator = separate.Separator(model, SpectrogramConfig(), "vocals", "cpu")
    mix = tone(2.0, channels=2, rate=22050)
    with make_client(tmp_path, separator=separator, render_png="auto") as client:
        job = upload(client, encode(mix, "wav", rate=22050)).json()
        status = wait(client, job["id"], timeout=30)
        assert status["state"] == "done", status
        stems = {}
        for stem in JOB_OUTPUTS:
            data, rate = sf.read(io.BytesIO(client.get(status["stems"][stem]["wav"]).content), dtype="float32", always_2d=True)
            assert rate == 22050 and data.shape == (mix.shape[1], 2)
            stems[stem] = data.T
            picture = Image.open(io.BytesIO(client.get(status["stems"][stem]["png"]).content))
            assert picture.format == "PNG" and picture.size == (PNG_WIDTH, PNG_HEIGHT)
        np.testing.assert_allclose(stems["vocals"] + stems["accompaniment"], stems["mixture"], atol=3e-4)
        assert np.abs(stems["vocals"]).max() > 1e-3 and np.abs(stems["accompaniment"]).max() > 1e-3


def test_spectrogram_png_draws_where_the_energy_is(tmp_path):
    rate = 16000
    t = np.arange(2 * rate) / rate
    loud = (0.5 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    ref = spectrogram_png(loud, rate, tmp_path / "loud.png")
    spectrogram_png(loud * 0.01, rate, tmp_path / "quiet.png", reference=ref)  # 40 dB lower
    loud_img = Image.open(tmp_path / "loud.png")
    assert loud_img.size == (PNG_WIDTH, PNG_HEIGHT) and loud_img.mode == "P"
    plot = (slice(PLOT_TOP, PLOT_TOP + PLOT_HEIGHT), slice(PLOT_LEFT, PLOT_LEFT + PLOT_WIDTH))
    loud_idx = np.asarray(loud_img).astype(int)[plot]  # palette index = level, 0 = silence
    quiet_idx = np.asarray(Image.open(tmp_path / "quiet.png")).astype(int)[plot]
    # 2 kHz of a 0..8 kHz picture: a quarter of the way up from the bottom.
    brightest_row = int(np.argmax(loud_idx.mean(axis=1)))
    assert abs(brightest_row - PLOT_HEIGHT * 3 / 4) <= 3
    assert loud_idx.max() == 63 and quiet_idx.max() < 63 - 25  # the shared reference shows -40 dB
    assert loud_idx[5].max() < 20  # nothing near 7.8 kHz
    # Silence and a few samples still give a picture.
    spectrogram_png(np.zeros(10, np.float32), rate, tmp_path / "silence.png")
    assert Image.open(tmp_path / "silence.png").size == (PNG_WIDTH, PNG_HEIGHT)


def test_spectrogram_png_has_time_and_frequency_axes(tmp_path, monkeypatch):
    """The plot area is all levels; around it, the axes: ticks and labels in the margins, drawn by
    matplotlib with the song's duration and the top frequency (kHz)."""
    from stemforge.serve import outputs

    drawn = []
    frame = outputs._axes_frame
    monkeypatch.setattr(outputs, "_axes_frame", lambda *args: drawn.append(args) or frame(*args))
    rate = 16000
    spectrogram_png(np.random.default_rng(0).standard_normal(3 * rate).astype(np.float32) * 0.1, rate, tmp_path / "n.png")
    idx = np.asarray(Image.open(tmp_path / "n.png")).astype(int)
    assert drawn == [((PNG_WIDTH, PNG_HEIGHT), (PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PLOT_HEIGHT), 3.0, 8.0)]
    plot = idx[PLOT_TOP : PLOT_TOP + PLOT_HEIGHT, PLOT_LEFT : PLOT_LEFT + PLOT_WIDTH]
    assert plot.max() < LEVELS  # colour-map levels only
    left, below = idx[:, : PLOT_LEFT - 1], idx[PLOT_TOP + PLOT_HEIGHT + 1 :, :]
    white = LEVELS + outputs._GREYS - 1
    for margin in (left, below):
        assert margin.min() >= LEVELS  # axes greys, never a level
        assert (margin < white - 8).sum() > 100  # dark ink: tick labels and the axis label
@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "m4a"])
def test_worker_stops_decoding_at_the_length_limit(tmp_path, fmt):
    """Headers can lie about the length; the worker decodes no more than max_seconds."""
    from stemforge.serve.decode import decode_limited
    from stemforge.serve.jobs import JobStore
    from stemforge.core.errors import StemforgeError

    path = tmp_path / f"long.{fmt}"
    path.write_bytes(encode(tone(3.0), fmt))
    with pytest.raises(StemforgeError, match="more than 1 s"):
        decode_limited(path, 1.0)
    audio, rate = decode_limited(path, 4.0)
    assert rate == RATE and audio.shape[0] == 2 and abs(audio.shape[1] - 3 * RATE) < 0.25 * RATE  # AAC priming
    # Through the pool, bypassing the upload's header check: the job fails with the reason.
    store = JobStore(tmp_path / "work", StandIn(), max_seconds=1.0)
    store.start()
    try:
        job_id, folder = store.reserve()
        (folder / path.name).write_bytes(path.read_bytes())
        store.submit(job_id, folder / path.name, path.name)
        deadline = time.monotonic() + 10
        while store.get(job_id).state.value not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(0.02)
        status = store.get(job_id)
        assert status.state.value == "failed" and "more than 1 s" in status.error
    finally:
        store.close()
