"""Load test of ``stemforge serve`` on loopback: concurrent uploads against a bounded worker pool.

Starts ``stemforge serve`` as a subprocess on 127.0.0.1 (a free port) with a tiny random-weight
U-Net saved to a temporary checkpoint, fires --uploads uploads at once from as many threads
(synthetic songs of --seconds s, 44.1 kHz stereo; every other one as mp3), plus one oversize
upload (must get 413 without the server reading it all) and one non-audio upload (415), then
polls every job to its end. Every finished job's stems are downloaded and checked (shape, rate,
vocals + accompaniment = mixture). Meanwhile the server's RSS is sampled from
/proc/<pid>/status (VmRSS) and the latency of status requests is measured.

Prints the counts (accepted, done, failed, lost), the wall time, the largest queue position
seen, status latency, and the server's RSS (idle after start-up, peak, after the load).
With --slow-clients N it then opens N connections that never finish (half send nothing, half a
request head and the start of an upload, then stall) and reports how many the server closed, and
when (it runs with --upload-timeout; they must all be closed soon after it).
Stops by itself: every loop is bounded and --time-limit (s) caps the whole run; the server is
stopped (SIGINT, then SIGKILL) whatever happens.

    python benchmarks/serve_load.py --uploads 20 --jobs 2 --seconds 5
    python benchmarks/serve_load.py --uploads 2 --slow-clients 500 --upload-timeout 5
"""

from __future__ import annotations

import argparse
import io
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

RATE = 44100


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """Peak VmRSS of one process, sampled every ``interval`` s in a thread."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_inputs(work: Path, n_songs: int, seconds: float, width: float) -> tuple[Path, list[tuple[str, bytes, np.ndarray]]]:
    """A checkpoint and ``n_songs`` distinct songs: (file name, bytes, decoded mixture)."""
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.synth.songs import synthesize_song
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.model import UNet, UNetConfig

    config = UNetConfig(width=width)
    ckpt = save_checkpoint(
        work / "model.pt", UNet(config, generator=torch.Generator().manual_seed(0)), config,
        SpectrogramConfig(), "vocals", step=0,
    )
    rng = np.random.default_rng(2024)
    songs = []
    base = [synthesize_song(rng, seconds, RATE).mixture for _ in range(min(n_songs, 4))]
    for i in range(n_songs):
        mix = base[i % len(base)] * np.float32(0.5 + 0.4 * (i / max(1, n_songs - 1)))
        fmt = "MP3" if i % 2 else "WAV"
        buf = io.BytesIO()
        sf.write(buf, mix.T, RATE, format=fmt, subtype="PCM_16" if fmt == "WAV" else None)
        data = buf.getvalue()
        decoded, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        songs.append((f"song{i:02d}.{fmt.lower()}", data, decoded.T))
    return ckpt, songs


def upload(base: str, name: str, data: bytes, timeout: float) -> tuple[int, dict]:
    with httpx.Client(base_url=base, timeout=timeout) as client:
        r = client.post("/api/jobs", files={"file": (name, data, "application/octet-stream")})
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, {}


def oversize(base: str, limit_mb: float, timeout: float) -> str:
    """Stream a body 20x the limit in 64 KiB chunks (no Content-Length); returns what came back."""
    sent = 0
    boundary = "loadtestboundary"

    def body():
        nonlocal sent
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.wav"\r\n\r\n').encode()
        for _ in range(int(20 * limit_mb * 16)):
            sent += 65536
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        with httpx.Client(base_url=base, timeout=timeout) as client:
            r = client.post("/api/jobs", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            return f"{r.status_code} after sending {sent / 1048576:.1f} MiB"
    except httpx.HTTPError as exc:  # the server may close the connection while we still send
        return f"{type(exc).__name__} (connection closed by the server) after sending {sent / 1048576:.1f} MiB"


def check_stems(base: str, status: dict, mixture: np.ndarray) -> str | None:
    """None when the stems are right, else what is wrong."""
    got = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for stem in ("mixture", "vocals", "accompaniment"):
            r = client.get(status["stems"][stem]["wav"])
            if r.status_code != 200 or r.headers.get("content-type") != "audio/wav":
                return f"{stem}: HTTP {r.status_code} {r.headers.get('content-type')}"
            data, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
            if rate != RATE or data.shape[1] != mixture.shape[0]:
                return f"{stem}: {rate} Hz, {data.shape[1]} channels"
            got[stem] = data.T
    if abs(got["mixture"].shape[1] - mixture.shape[1]) > RATE // 10:
        return f"mixture has {got['mixture'].shape[1]} samples, expected about {mixture.shape[1]}"
    if not np.allclose(got["vocals"] + got["accompaniment"], got["mixture"], atol=5e-4):
        return "vocals + accompaniment differ from the mixture"
    return None


def slow_clients(port: int, n: int, wait_s: float) -> tuple[int, float]:
    """Open ``n`` connections that never finish a request (even ones silent, odd ones a head and
    4 KiB of an upload); returns how many the server closed within ``wait_s`` and when the last
    one was closed (s after they were all open)."""
    socks = []
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=xx\r\nContent-Length: 10000000\r\n\r\n"
            "--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.wav\"\r\n\r\nRIFF").encode()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(head + bytes(4096))
        s.setblocking(False)
        socks.append(s)
    t0 = time.monotonic()
    open_ = set(range(n))
    last = 0.0
    while open_ and time.monotonic() - t0 < wait_s:
        ready, _, _ = select.select([socks[i] for i in open_], [], [], 0.5)
        for s in ready:
            try:
                while s.recv(65536):
                    pass
                closed = True
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            if closed:
                open_.discard(socks.index(s))
                last = time.monotonic() - t0
    for s in socks:
        s.close()
    return n - len(open_), last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each song")
    ap.add_argument("--width", type=float, default=0.125, help="U-Net width of the random model")
    ap.add_argument("--max-upload-mb", type=float, default=10.0)
    ap.add_argument("--time-limit", type=float, default=540.0, help="hard limit on the whole run (s)")
    ap.add_argument("--slow-clients", type=int, default=0, help="connections that never finish, opened after the load")
    ap.add_argument("--upload-timeout", type=float, default=30.0, help="the server's --upload-timeout (s)")
    args = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + args.time_limit

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        ckpt, songs = make_inputs(work, args.uploads, args.seconds, args.width)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        jobs_dir = work / "jobs"
        cmd = [
            sys.executable, "-m", "stemforge", "serve", str(ckpt), "--host", "127.0.0.1", "--port", str(port),
            "--jobs", str(args.jobs), "--max-upload-mb", str(args.max_upload_mb), "--max-queue", str(args.uploads + 5),
            "--work-dir", str(jobs_dir), "--upload-timeout", str(args.upload_timeout),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        try:
            # Wait until it answers (bounded).
            while time.monotonic() < min(deadline, t_start + 120):
                if server.poll() is not None:
                    print(server.stdout.read())
                    raise SystemExit(f"the server exited with {server.returncode}")
                try:
                    if httpx.get(base + "/api/info", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise SystemExit("the server did not answer within 120 s")
            idle_rss = rss_mb(server.pid)
            latencies: list[float] = []
            max_queue = 0
            results: dict[str, dict] = {}
            with RssSampler(server.pid) as rss:
                t0 = time.monotonic()
                with ThreadPoolExecutor(max_workers=args.uploads + 2) as pool:
                    futures = [pool.submit(upload, base, name, data, 120) for name, data, _ in songs]
                    bad_413 = pool.submit(oversize, base, args.max_upload_mb, 60)
                    bad_415 = pool.submit(upload, base, "notes.mp3", b"not audio at all " * 500, 60)
                    answers = [f.result() for f in futures]
                    bad = (bad_413.result(), bad_415.result()[0])
                upload_s = time.monotonic() - t0
                accepted = {body["id"]: i for i, (code, body) in enumerate(answers) if code == 202}
                refused = [code for code, _ in answers if code != 202]
                max_queue = max([body.get("queue_position") or 0 for _, body in answers] + [0])
                pending = set(accepted)
                with httpx.Client(base_url=base, timeout=30) as client:
                    while pending and time.monotonic() < deadline:
                        for job_id in sorted(pending):
                            q0 = time.monotonic()
                            r = client.get(f"/api/jobs/{job_id}")
                            latencies.append(time.monotonic() - q0)
                            if r.status_code != 200:
                                results[job_id] = {"state": f"HTTP {r.status_code}"}
                                pending.discard(job_id)
                                continue
                            status = r.json()
                            max_queue = max(max_queue, status.get("queue_position") or 0)
                            if status["state"] in ("done", "failed"):
                                results[job_id] = status
                                pending.discard(job_id)
                        time.sleep(0.2)
                wall = time.monotonic() - t0
            after_rss = rss_mb(server.pid)
            wrong = []
            for job_id, status in results.items():
                if status.get("state") == "done":
                    problem = check_stems(base, status, songs[accepted[job_id]][2])
                    if problem:
                        wrong.append(f"{job_id}: {problem}")
            slow = None
            if args.slow_clients:
                slow = slow_clients(port, args.slow_clients, min(args.upload_timeout + 30, max(1.0, deadline - time.monotonic())))
            still_alive = httpx.get(base + "/api/info", timeout=5).status_code == 200
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(5)
        leftovers = sum(1 for p in jobs_dir.rglob("*") if p.is_file()) if jobs_dir.exists() else 0

    done = sum(1 for s in results.values() if s.get("state") == "done")
    failed = [s.get("error") or s.get("state") for s in results.values() if s.get("state") != "done"]
    lost = len(accepted) - len(results)
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    audio_s = len(accepted) * args.seconds
    print(f"command: {' '.join(['python'] + sys.argv)}")
    print(f"server: stemforge serve --jobs {args.jobs} (U-Net width {args.width}, random weights), cpus {os.cpu_count()}")
    print(f"uploads {args.uploads} of {args.seconds:g} s (44.1 kHz stereo, wav/mp3 alternating), all at once")
    print(f"accepted {len(accepted)}  refused {len(refused)} {refused or ''}")
    print(f"done {done}  failed {len(failed)} {failed or ''}  lost {lost}  stems wrong {len(wrong)} {wrong or ''}")
    print(f"oversize upload: {bad[0]}; non-audio upload: HTTP {bad[1]}")
    print(f"all uploads answered in {upload_s:.1f} s; all jobs finished in {wall:.1f} s "
          f"({audio_s / wall:.1f} s of audio per second)")
    print(f"max queue position seen {max_queue}")
    print(f"status requests during the load: {len(latencies)}, latency median {np.median(lat):.0f} ms, "
          f"p95 {np.percentile(lat, 95):.0f} ms, max {lat.max():.0f} ms")
    print(f"server RSS: idle {idle_rss:.0f} MB, peak {rss.peak:.0f} MB, after the load {after_rss:.0f} MB")
    if slow is not None:
        print(f"slow clients: {slow[0]} of {args.slow_clients} closed by the server, the last "
              f"{slow[1]:.1f} s after all were open (--upload-timeout {args.upload_timeout:g})")
    print(f"server answered after the load: {still_alive}; job files left after shutdown: {leftovers}")
    ok = done == args.uploads and not failed and not lost and not wrong and still_alive and bad[1] == 415
    ok = ok and (slow is None or slow[0] == args.slow_clients)
    print("OK" if ok else "PROBLEMS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
