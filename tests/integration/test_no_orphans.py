"""No process outlives its command (issue 24; docs/reliability.md, "No process outlives its command").

Each command runs as ``python -m stemforge ...`` in its own session with stdout and stderr read
through pipes, as a scheduler, a notebook cell or a CI step runs it. Once it is busy (its
worker processes seen in /proc and using CPU, or its own work under way), it gets SIGKILL, SIGTERM
or SIGINT, and within a few seconds both pipes must reach end of file and no process of its
session may be alive. Whatever a failing case leaves behind is killed in a ``finally``.

Linux only (reads /proc).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: Seconds a command may take, after the signal, until its pipes close and its session is empty
#: (train's Ctrl-C takes longer: it finishes its step and writes last.pt first; see spec()).
GRACE_S = {signal.SIGKILL: 5.0, signal.SIGTERM: 10.0, signal.SIGINT: 10.0}
#: The exit status each signal must give: killed by SIGKILL; 143 (128 + SIGTERM) and 130 (Ctrl-C)
#: from the command's own orderly exit (docs/cli.md).
EXPECTED_STATUS = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}
#: Seconds a command may take to become busy (start-up on a loaded machine included).
BUSY_TIMEOUT_S = 90.0
#: CPU seconds a pool worker must have used to count as busy.
BUSY_CPU_S = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------- /proc
def _stat(pid: int) -> tuple[str, int, int, float] | None:
    """``(state, ppid, session, cpu seconds)`` of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[3]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def session_processes(sid: int) -> dict[int, tuple[int, float]]:
    """``{pid: (ppid, cpu seconds)}`` of the live (not zombie) processes of session ``sid``."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is not None and st[2] == sid and st[0] not in "ZX":
            out[int(name)] = (st[1], st[3])
    return out


# --------------------------------------------------------------------------------- the run
class Command:
    """``python -m stemforge ARGS`` in a new session, its stdout and stderr drained by threads."""

    def __init__(self, args: list[str], cwd: Path):
        env = dict(os.environ, PYTHONUNBUFFERED="1", STEMFORGE_SHARD_TRACKS="1")
        env.pop("STEMFORGE_DATA", None)
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stemforge", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )
        self.pid = self.proc.pid
        self.output = {"stdout": bytearray(), "stderr": bytearray()}
        self._readers = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.output["stdout"]), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.output["stderr"]), daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _drain(pipe, buf: bytearray) -> None:
        while True:
            chunk = pipe.read1(65536)
            if not chunk:
                return
            buf.extend(chunk)

    def pipes_closed(self) -> bool:
        return not any(t.is_alive() for t in self._readers)

    def text(self) -> str:
        return (self.output["stderr"] + self.output["stdout"]).decode(errors="replace")

    def workers(self) -> dict[int, float]:
        """``{pid: cpu seconds}`` of the worker processes: the command's children other than a
        multiprocessing forkserver or resource tracker, and the forkserver's children."""
        procs = session_processes(self.pid)
        helpers = {
            pid for pid, (ppid, _) in procs.items()
            if ppid == self.pid and any(k in _cmdline(pid) for k in ("forkserver", "resource_tracker"))
        }
        return {
            pid: cpu for pid, (ppid, cpu) in procs.items()
            if pid != self.pid and pid not in helpers and (ppid == self.pid or ppid in helpers)
        }

    def wait_busy(self, n_workers: int, worker_cpu_s: float, ready=None) -> None:
        """Until ``n_workers`` workers have used ``worker_cpu_s`` CPU seconds each and ``ready()`` holds."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.args[0]} ended (status {self.proc.returncode}) before it was busy:\n{self.text()}"
            busy = [cpu for cpu in self.workers().values() if cpu >= worker_cpu_s]
            if len(busy) >= n_workers and (ready is None or ready(self)):
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.args[0]} not busy after {BUSY_TIMEOUT_S} s: workers {self.workers()}\n{self.text()}")

    def leftovers(self) -> list[str]:
        return [f"{pid} {_cmdline(pid)[:90]}" for pid in session_processes(self.pid)]

    def kill_session(self) -> None:
        """SIGKILL whatever is left of the session, and reap the command."""
        for _ in range(3):
            pids = session_processes(self.pid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdout, self.proc.stderr):
            pipe.close()


def check_after(cmd: Command, sig: int, sent_at: float, grace_s: float) -> str | None:
    """Wait until ``cmd``'s pipes are at end of file and its session is empty, at most
    ``grace_s`` seconds after ``sent_at``; what is wrong, or None."""
    name = signal.Signals(sig).name
    deadline = sent_at + grace_s
    while time.monotonic() < deadline and not (cmd.pipes_closed() and not session_processes(cmd.pid)):
        time.sleep(0.05)
    left = cmd.leftovers()
    if left:
        return f"{cmd.args[0]}: {len(left)} process(es) alive {grace_s} s after {name}: {left}\n{cmd.text()[-1500:]}"
    if not cmd.pipes_closed():
        return f"{cmd.args[0]}: output pipe still open {grace_s} s after {name}"
    status = cmd.proc.wait(timeout=5)
    if status != EXPECTED_STATUS[sig]:
        return f"{cmd.args[0]}: exit status {status} after {name}, expected {EXPECTED_STATUS[sig]}\n{cmd.text()[-1500:]}"
    return None


def run_and_signal(specs: dict[int, "Spec"]) -> None:
    """Start one command per signal at once (each in its own session), wait until each is busy,
    send it its signal (to its pid only, as the OOM killer, ``kill`` or ``timeout`` do), then
    assert the promise: its pipes reach end of file and no process of its session is alive within
    ``GRACE_S[sig]`` seconds, and its exit status is ``EXPECTED_STATUS[sig]``. Whatever is left
    is killed in the end, whatever happened."""
    cmds: dict[int, Command] = {}
    try:
        for sig, spec in specs.items():
            cmds[sig] = Command(spec.args, spec.cwd)
        sent = {}
        for sig, cmd in cmds.items():
            spec = specs[sig]
            cmd.wait_busy(spec.n_workers, spec.worker_cpu_s, spec.ready)
            os.kill(cmd.pid, sig)
            sent[sig] = time.monotonic()
        problems = [
            p for sig, cmd in cmds.items()
            if (p := check_after(cmd, sig, sent[sig], specs[sig].grace_s.get(sig, GRACE_S[sig]))) is not None
        ]
        assert not problems, "\n\n".join(problems)
    finally:
        for cmd in cmds.values():
            cmd.kill_session()


# -------------------------------------------------------------------------------- inputs
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """6 synthetic DSD100 songs of 10 s (train and test subsets)."""
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("orphans-corpus")
    write_corpus(root, "dsd100", songs=6, seconds=10.0, seed=24)
    return root


@pytest.fixture(scope="module")
def data(corpus, tmp_path_factory) -> Path:
    """``corpus`` ingested at the seed geometry (train and test splits)."""
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import get_recipe
    from stemforge.store import DataDir

    dd = DataDir.create(tmp_path_factory.mktemp("orphans-data") / "data")
    report = ingest(dd, get_recipe("dsd100").discover(corpus), workers=1)
    assert not report.failed
    return dd.path


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    """An untrained U-Net of width 0.125 at ``data``'s geometry."""
    import torch

    from stemforge.store import DataDir

    from stemforge.model import UNet, UNetConfig, save_checkpoint

    cfg = UNetConfig(width=0.125)
    net = UNet(cfg, generator=torch.Generator().manual_seed(1))
    return Path(save_checkpoint(tmp_path_factory.mktemp("orphans-model") / "model.pt", net, cfg, DataDir.open(data).config, "vocals", 0))


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """5 minutes of noise, 16 kHz mono 16-bit (9.6 MB): a job that separates for a while."""
    import soundfile as sf

    path = tmp_path_factory.mktemp("orphans-song") / "song.wav"
    noise = 0.1 * np.random.default_rng(24).standard_normal(300 * 16000)
    sf.write(path, noise.astype(np.float32), 16000, subtype="PCM_16")
    return path


# -------------------------------------------------------------------------------- serve
def _serve_url(cmd: Command) -> str | None:
    for line in cmd.output["stderr"].decode(errors="replace").splitlines():
        if line.startswith("serving ") and " at http://" in line:
            return line.split(" at ", 1)[1].split("/ ", 1)[0]
    return None


def _upload(url: str, song: Path) -> str:
    boundary = "stemforge-orphans"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"song.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + song.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        f"{url}/api/jobs", data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["id"]


def _serve_job_running(song: Path):
    """``ready`` for serve: uploads ``song`` once the server listens, then holds once its job runs."""
    state: dict = {}

    def ready(cmd: Command) -> bool:
        url = state.get("url") or _serve_url(cmd)
        if url is None:
            return False
        state["url"] = url
        if "job" not in state:
            try:
                state["job"] = _upload(url, song)
            except urllib.error.URLError as exc:  # the address is printed before the server listens
                if isinstance(exc.reason, ConnectionRefusedError):
                    return False
                raise
        with urllib.request.urlopen(f"{url}/api/jobs/{state['job']}", timeout=10) as r:
            job = json.load(r)
        assert job["state"] in ("queued", "running"), job
        return job["state"] == "running" and job.get("stage") == "separating"

    return ready


# --------------------------------------------------------------------------------- cases
class Spec:
    """A command line, where it runs, and when it counts as busy: ``n_workers`` worker
    processes that used ``worker_cpu_s`` CPU seconds each, and ``ready(cmd)`` (when given);
    ``grace_s`` overrides :data:`GRACE_S` for some signals."""

    def __init__(self, args: list, cwd: Path, n_workers: int = 0, worker_cpu_s: float = 0.0, ready=None,
                 grace_s: dict | None = None):
        self.args = [str(a) for a in args]
        self.cwd, self.n_workers, self.worker_cpu_s, self.ready = cwd, n_workers, worker_cpu_s, ready
        self.grace_s = grace_s or {}


def spec(command: str, request: pytest.FixtureRequest, tmp: Path) -> Spec:
    """The command line of ``command`` for one signal, its inputs taken from the fixtures."""
    tmp.mkdir(parents=True, exist_ok=True)
    inputs = request.getfixturevalue
    if command == "ingest":  # 6 songs of 10 s at the full-band geometry: seconds of work for 2 workers
        args = ["ingest", "dsd100", inputs("corpus"), "--out", tmp / "d", "--preset", "fullband", "--workers", 2]
        return Spec(args, tmp, 2, BUSY_CPU_S)
    if command == "augment":  # 5 hours of remixes asked for: hundreds of items for 2 workers
        data = shutil.copytree(inputs("data"), tmp / "d")
        args = ["augment", data, "--hours", 5, "--segment-seconds", 5, "--workers", 2, "--seed", 1]
        return Spec(args, tmp, 2, BUSY_CPU_S)
    if command == "synth":  # busy once it has written a file; 200 songs would take minutes
        out = tmp / "s"
        args = ["synth", out, "--layout", "dsd100", "--songs", 200, "--seconds", 30]
        return Spec(args, tmp, ready=lambda c: out.is_dir() and any(out.rglob("*.wav")))
    if command == "train":  # the loader workers cut a few batches ahead, then wait for the steps
        args = [
            "train", inputs("data"), "--out", tmp / "run", "--streaming", "--workers", 2, "--device", "cpu",
            "--width", 0.125, "--batch-size", 4, "--steps", 100000, "--val-every", 100000,
            "--checkpoint-every", 100000, "--no-tensorboard",
        ]
        ready = lambda c: b"train: from step" in c.output["stderr"]  # noqa: E731
        # Ctrl-C and SIGTERM alike: its step, then last.pt, model.pt and the loss curve
        return Spec(args, tmp, 2, 0.01, ready, grace_s={signal.SIGINT: 20.0, signal.SIGTERM: 20.0})
    if command == "evaluate":  # busy once its progress bar is up: about 10 s of CPU to go
        args = [
            "evaluate", inputs("model"), inputs("data"), "--split", "all", "-o", tmp / "e" / "r.csv", "--device", "cpu",
        ]
        return Spec(args, tmp, ready=lambda c: b"evaluate all" in c.output["stderr"])
    if command == "serve":  # busy once a job of 5 minutes of audio is separating
        args = ["serve", inputs("model"), "--port", 0, "--max-upload-mb", 100]
        return Spec(args, tmp, ready=_serve_job_running(inputs("song")))
    raise AssertionError(command)


SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
#: Each case runs its signals' commands at the same time.
CASES = [
    *[pytest.param(command, SIGNALS, id=command) for command in ("ingest", "augment", "synth", "evaluate", "serve")],
    pytest.param("train", SIGNALS, id="train"),
]


@pytest.mark.parametrize("command, signals", CASES)
def test_no_process_outlives_its_command(command, signals, request, tmp_path):
    run_and_signal({sig: spec(command, request, tmp_path / signal.Signals(sig).name) for sig in signals})
