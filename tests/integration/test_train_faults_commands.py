"""What users and faults hit while training, through whole commands run as real processes: a second
command into one folder, torchrun with a locked folder, a frozen or a dead peer, a two-process
resume, the resume commands, SIGTERM, a full disk met by TensorBoard. The in-process cases are in
tests/unit/train/test_train_faults.py."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stemforge.model.checkpoint import load_checkpoint

from support.train_faults import TINY_ARGS, _errors


pytestmark = pytest.mark.usefixtures("one_thread")


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", **extra)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stemforge", "train", *args]


class _Proc:
    """A command in its own session; its merged stdout and stderr read line by line by a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        import threading

        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, marker: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in line for line in self.lines):
            if self.proc.poll() is not None:
                self._reader.join(5)
                if any(marker in line for line in self.lines):
                    return
                pytest.fail(f"exited ({self.proc.returncode}) before {marker!r}:\n{self.text[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {marker!r} within {timeout:.0f} s:\n{self.text[-3000:]}")
            time.sleep(0.1)

    def wait(self, timeout: float = 240) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"did not exit within {timeout:.0f} s:\n{self.text[-3000:]}")
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(argv_of_rank, world: int = 2) -> list[_Proc]:
    """``world`` processes of one job, as torchrun starts them (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT), without torchrun's agent: so that a survivor is not killed by it (the case
    of a process on another machine)."""
    port = str(_free_port())
    return [_Proc(argv_of_rank(rank), _env(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for rank in range(world)]


def _ddp_args(datadir, out: Path, *extra: str) -> list[str]:
    return [str(datadir.path), "--out", str(out), "--steps", "100000", "--log-every", "1", "--val-every", "100000",
            "--checkpoint-every", "100000", "--width", "0.0625", "--batch-size", "2", "--device", "cpu",
            "--no-tensorboard", "--in-memory", *extra]


def test_two_commands_into_one_folder_one_refused_in_one_line(datadir, tmp_path):
    out = tmp_path / "run"
    first = _Proc(_cli(str(datadir.path), "--out", str(out), "--steps", "100000", "--log-every", "1",
                       "--val-every", "100000", "--checkpoint-every", "100000", *TINY_ARGS), _env())
    try:
        first.wait_for("train: step 1/")  # training, no last.pt yet: the case the old check missed
        assert not (out / "last.pt").exists()
        second = subprocess.run(_cli(str(datadir.path), "--out", str(out), "--steps", "3", *TINY_ARGS),
                                capture_output=True, text=True, env=_env(), timeout=300)
        assert second.returncode == 3, second.stderr
        errors = _errors(second.stderr)
        assert len(errors) == 1 and str(out) in errors[0] and f"pid {first.pid}" in errors[0], second.stderr
        assert "Traceback" not in second.stderr
        os.kill(first.pid, signal.SIGINT)
        assert first.wait() == 130, first.text[-2000:]
    finally:
        first.kill()
    # the first run's files are its own: metrics rows in order, train.json of its 100000 steps
    steps = [int(r["step"]) for r in csv.DictReader(open(out / "metrics.csv"))]
    assert steps == sorted(set(steps)) and steps[0] == 0
    assert json.loads((out / "train.json").read_text())["train_config"]["steps"] == 100000
    assert load_checkpoint(out / "last.pt").step == steps[-1]


def test_under_torchrun_every_rank_stops_when_rank_0_cannot_lock(datadir, tmp_path):
    """Rank 0 alone takes the lock; when it cannot (here: taken after every rank resolved the
    run, the race the probe in resolve_run cannot see), every rank stops, none hangs."""
    from stemforge.train.rundir import RunDir

    spy = tmp_path / "spy.py"
    spy.write_text(
        "import sys\n"
        "from stemforge.train.rundir import RunDir\n"
        "RunDir.check_unlocked = lambda self: None  # the folder is taken after resolve_run looked\n"
        "from stemforge.cli.main import app\n"
        "app(sys.argv[1:], prog_name='stemforge')\n"
    )
    out = tmp_path / "run"
    with RunDir(out).lock():
        ranks = _ranks(lambda rank: [sys.executable, str(spy), "train", *_ddp_args(datadir, out, "--dist-timeout", "60")])
        try:
            codes = [p.wait(timeout=300) for p in ranks]
        finally:
            for p in ranks:
                p.kill()
    assert codes == [3, 3], [p.text[-1500:] for p in ranks]
    zero, one = (_errors(p.text) for p in ranks)
    assert len(zero) == 1 and f"pid {os.getpid()}" in zero[0] and str(out) in zero[0], ranks[0].text
    assert len(one) == 1 and "rank 0 could not take the run folder" in one[0], ranks[1].text
    assert not any("Traceback" in p.text for p in ranks)


def test_a_stopped_peer_ends_the_run_after_the_timeout_naming_it(datadir, tmp_path):
    timeout = 30  # above the skew of two processes starting on a loaded machine (the rendezvous waits as long)
    ranks = _ranks(lambda rank: _cli(*_ddp_args(datadir, tmp_path / "run", "--dist-timeout", str(timeout))))
    zero, one = ranks
    try:
        zero.wait_for("train: step 2/")
        os.kill(one.pid, signal.SIGSTOP)  # a frozen process (a debugger, a swapped-out node)
        stopped = time.monotonic()
        code = zero.wait(timeout=timeout + 180)
        waited = time.monotonic() - stopped
    finally:
        for p in ranks:
            p.kill()
    assert code == 3, zero.text[-3000:]
    assert timeout - 1 <= waited <= timeout + 150, waited
    errors = _errors(zero.text)
    assert len(errors) == 1, zero.text[-3000:]
    assert f"rank 1 (pid {one.pid}, stopped)" in errors[0] and f"within {timeout} s" in errors[0], errors[0]
    assert "Traceback" not in zero.text


def test_a_survivor_whose_peer_died_says_so_in_one_line(datadir, tmp_path):
    ranks = _ranks(lambda rank: _cli(*_ddp_args(datadir, tmp_path / "run", "--dist-timeout", "120")))
    zero, one = ranks
    try:
        zero.wait_for("train: step 2/")
        os.kill(zero.pid, signal.SIGKILL)  # rank 0 (and the store it hosts) dies; rank 1 survives
        code = one.wait(timeout=150)
    finally:
        for p in ranks:
            p.kill()
    assert code == 3, one.text[-3000:]
    errors = _errors(one.text)
    assert len(errors) == 1 and f"rank 0 (pid {zero.pid}, gone)" in errors[0], one.text[-3000:]
    assert "Traceback" not in one.text and len(one.text.splitlines()) <= 3, one.text


def test_a_two_process_run_resumes_only_as_two_processes(datadir, tmp_path):
    out = tmp_path / "run"
    ranks = _ranks(lambda rank: _cli(*_ddp_args(datadir, out, "--dist-timeout", "120")))
    try:
        ranks[0].wait_for("train: step 2/")
        for p in ranks:
            os.kill(p.pid, signal.SIGINT)
        codes = [p.wait(timeout=200) for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert codes == [130, 130], [p.text[-2000:] for p in ranks]
    hint = next(line for line in ranks[0].text.splitlines() if line.startswith("interrupted: continue with"))
    assert f"torchrun --nproc-per-node 2 -m stemforge train {datadir.path} --out {out} --resume" in hint, hint
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.extra["world_size"] == 2 and ckpt.extra["local_world_size"] == 2
    # resumed as one process: refused in one line that gives the right command
    r = subprocess.run(_cli(str(datadir.path), "--out", str(out), "--resume", "--device", "cpu"),
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 3, r.stderr
    errors = _errors(r.stderr)
    assert len(errors) == 1 and "trained by 2 process(es), this is 1" in errors[0], r.stderr
    assert f"torchrun --nproc-per-node 2 -m stemforge train {datadir.path} --out {out} --resume" in errors[0]
    assert load_checkpoint(out / "last.pt").step == ckpt.step  # nothing written
    # on purpose: --any-world-size goes on with one process
    r = subprocess.run(_cli(str(datadir.path), "--out", str(out), "--resume", "--any-world-size", "--device", "cpu",
                            "--steps", str(ckpt.step + 1)), capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(out / "last.pt").extra["world_size"] == 1


def test_resume_commands():
    from stemforge.train.distributed import distributed_env, launch_command

    assert launch_command(1) == "stemforge train"
    assert launch_command(4, 4) == launch_command(4) == "torchrun --nproc-per-node 4 -m stemforge train"
    assert launch_command(16, 8).startswith("torchrun --nnodes 2 --node-rank K --nproc-per-node 8 ")
    env = distributed_env({"RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8"})
    assert (env.world_size, env.local_world_size) == (16, 8)
    assert distributed_env({"RANK": "1", "WORLD_SIZE": "2"}).local_world_size == 2


def test_sigterm_to_the_command_writes_last_pt_and_exits_143(datadir, tmp_path):
    out = tmp_path / "run"
    proc = _Proc(_cli(str(datadir.path), "--out", str(out), "--steps", "100000", "--log-every", "1",
                      "--val-every", "100000", "--checkpoint-every", "100000", *TINY_ARGS), _env())
    try:
        proc.wait_for("train: step 2/")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait() == 143, proc.text[-2000:]
    finally:
        proc.kill()
    stopped = next(line for line in proc.lines if "terminated (SIGTERM) at step" in line)
    step = int(stopped.split("at step ")[1].split(":")[0])
    assert load_checkpoint(out / "last.pt").step == step
    assert f"terminated: continue with  stemforge train {datadir.path} --out {out} --resume" in proc.text


def test_a_full_disk_met_by_tensorboard_is_one_line_too(datadir, tmp_path):
    """TensorBoard writes its events on a thread of its own: a full disk there printed that
    thread's traceback before the error line, which named "a file"."""
    spy = tmp_path / "spy.py"
    spy.write_text(
        "import errno, os, sys\n"
        "from tensorboard.summary.writer import record_writer\n"
        "calls, real_write = [0], record_writer.RecordWriter.write\n"
        "def filling(self, data):  # the file's header and a first event fit; then the disk is full\n"
        "    calls[0] += 1\n"
        "    if calls[0] > 2:\n"
        "        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    return real_write(self, data)\n"
        "record_writer.RecordWriter.write = filling\n"
        "from stemforge.cli.main import app\n"
        "app(sys.argv[1:], prog_name='stemforge')\n"
    )
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(spy), "train", str(datadir.path), "--out", str(out), "--steps", "4",
                        "--log-every", "1", "--width", "0.125", "--batch-size", "2", "--device", "cpu"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and "Exception in thread" not in r.stderr, r.stderr
    errors = _errors(r.stderr)
    assert len(errors) == 1 and f"{out / 'tensorboard'}: disk full" in errors[0], r.stderr

