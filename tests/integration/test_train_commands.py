"""Training through whole commands run as real processes: DDP with two processes under torchrun on
the CPU, progress as lines in a log file and as a bar on a terminal. The in-process tests are in
tests/unit/train/test_train.py."""

from __future__ import annotations

import csv
import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stemforge.model.checkpoint import load_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")


def _run_bounded(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` in its own process group; on timeout the whole group (torchrun and its
    workers) is killed, so a hung worker fails the test instead of outliving it."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(argv[:4])} ... did not finish in {timeout:.0f} s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out)


def test_ddp_two_processes_on_cpu_through_torchrun(datadir, tmp_path):
    """`torchrun --nproc-per-node 2 -m stemforge train` on the CPU (Gloo), as docs/training.md
    says: two fresh processes (no fork of this one), one writer, and a validation loss that is
    the whole split's (each rank scores half the crops; the sums are all-reduced), so it equals
    a single process's at the untrained step 0. Each worker runs the CLI under a spy that counts
    the DistributedDataParallel wrappers alive when the process group is destroyed: none may be
    (a wrapper freed after it would drop the group's last reference while holding the GIL, the
    Gloo deadlock seen once under load)."""
    spy = tmp_path / "spy.py"
    spy.write_text(
        "import gc, os, sys\n"
        "import torch.distributed as dist\n"
        "from torch.nn.parallel import DistributedDataParallel\n"
        "seen, destroy = [], dist.destroy_process_group\n"
        "def counting(*a, **k):\n"
        "    seen.append(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))\n"
        "    return destroy(*a, **k)\n"
        "dist.destroy_process_group = counting\n"
        "from stemforge.cli.main import app\n"
        "try:\n"
        "    app(sys.argv[1:], prog_name='stemforge')\n"
        "finally:\n"
        "    print(f\"rank {os.environ['RANK']} DDP wrappers alive at destroy: {seen}\", flush=True)\n"
    )
    common = [str(datadir.path), "--steps", "2", "--batch-size", "2", "--log-every", "1", "--val-every", "2",
              "--width", "0.0625", "--device", "cpu", "--no-tensorboard", "--in-memory", "--seed", "11"]
    ddp = _run_bounded([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(spy), "train", *common, "--out", str(tmp_path / "ddp")], timeout=240)
    assert ddp.returncode == 0, ddp.stdout[-3000:]
    assert "rank 0 DDP wrappers alive at destroy: [0]" in ddp.stdout and "rank 1 DDP wrappers alive at destroy: [0]" in ddp.stdout, ddp.stdout[-3000:]
    single = _run_bounded([sys.executable, "-m", "stemforge", "train", *common, "--out", str(tmp_path / "one")], timeout=240)
    assert single.returncode == 0, single.stdout[-3000:]

    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt.step == 2 and ckpt.extra["world_size"] == 2
    assert load_checkpoint(tmp_path / "one" / "last.pt").extra["world_size"] == 1
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "metrics.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2"]  # one writer: rank 0
    one = list(csv.DictReader(open(tmp_path / "one" / "metrics.csv")))
    assert float(rows[0]["val_loss"]) == pytest.approx(float(one[0]["val_loss"]), rel=1e-6)
    assert rows[2]["val_loss"] and float(rows[2]["val_loss"]) > 0
    assert ddp.stdout.count("train: step 2/2  validation loss") == 1  # rank 0 speaks, rank 1 does not


def _train_command(data: Path, out: Path, steps: int, log_every: int) -> list[str]:
    return [sys.executable, "-m", "stemforge", "train", str(data), "--out", str(out), "--steps", str(steps),
            "--log-every", str(log_every), "--val-every", str(steps // 2), "--width", "0.125", "--batch-size", "2",
            "--device", "cpu", "--no-tensorboard"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")


def test_progress_lines_in_a_log_file(datadir, tmp_path):
    """`stemforge train ... > log.txt 2>&1`: one line at least every --log-every steps."""
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.run(_train_command(datadir.path, tmp_path / "run", 8, 2), stdout=f, stderr=subprocess.STDOUT,
                              env=_env(), timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text  # no bar frames in a file
    steps = [line for line in text.splitlines() if line.startswith("train: step") and "loss" in line and "validation" not in line]
    assert [line.split()[2] for line in steps] == ["2/8", "4/8", "6/8", "8/8"], text
    assert all("patches/s" in line and "val " in line and "elapsed" in line for line in steps), steps
    assert sum(line.startswith("train: step") and "validation loss" in line for line in text.splitlines()) == 3  # 0, 4, 8


def test_progress_bar_moves_on_a_terminal(datadir, tmp_path):
    """In a pseudo-terminal (one nobody sized, 0 x 0, the case that drew nothing before) a bar
    is redrawn while training runs: several frames with a growing step count before the end."""
    master, slave = os.openpty()
    proc = subprocess.Popen(_train_command(datadir.path, tmp_path / "run", 30, 5), stdin=slave, stdout=slave,
                            stderr=slave, env=_env())
    os.close(slave)
    got = io.BytesIO()
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                got.write(data)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = got.getvalue().decode("utf-8", "replace")
    assert proc.returncode == 0, text
    before_summary = text.split("steps  ")[0]
    frames = [f for f in before_summary.split("\r") if "step/s" in f or "s/step" in f]
    counts = sorted({int(f.split("/30")[0].split()[-1]) for f in frames if "/30" in f})
    assert len(counts) >= 3 and counts[-1] == 30 and 0 < counts[1] < 30, (counts, text[-2000:])
    assert any("loss=" in f and "patches/s=" in f for f in frames) and any("val=" in f for f in frames)
    # no plain progress lines on a terminal: the bar says it
    assert not any(line.startswith("train: step") and "loss " in line and "validation" not in line for line in text.splitlines())
