"""Issue 23, the input/output faults users and an adversarial tester hit (items 6, 7, 9, 10, 14,
15): paths that are not regular files, text that cannot be stored, output folders that cannot
be made, misleading reasons, floods of failure lines, a silent multi-GB augment, and progress
bars written into log files.

Every input is made at test time (tiny wavs, FIFOs, symbolic links, CSV lists).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from stemforge.cli.main import app

# --------------------------------------------------------------------------- helpers


def tone(path: Path, seconds: float = 2.0, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> Path:
    t = np.arange(int(round(seconds * rate))) / rate
    data = np.stack([0.3 * np.sin(2 * np.pi * freq * (1 + c / 4) * t) for c in range(channels)], axis=1).astype(np.float32)
    sf.write(path, data, rate, subtype="PCM_16")
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.model import UNet, UNetConfig
    from stemforge.model.checkpoint import save_checkpoint

    cfg = UNetConfig(width=0.125)
    model = UNet(cfg, generator=torch.Generator().manual_seed(1))
    return Path(save_checkpoint(tmp_path / "model.pt", model, cfg, SpectrogramConfig(), "vocals", 0))


def _unblock(fifo: Path) -> None:
    """Give a reader blocked on ``fifo`` an end of file (a writer that opens and closes)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def call_unblocked(fn, fifos: list[Path], timeout: float = 30.0):
    """``fn()`` in a thread; when it is still running after ``timeout`` s (blocked opening a
    FIFO), the FIFOs are unblocked so that the thread ends, and the test fails."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    blocked = thread.is_alive()
    while thread.is_alive():
        for fifo in fifos:
            _unblock(fifo)
        thread.join(0.5)
    assert not blocked, f"blocked for {timeout:.0f} s on a FIFO"
    if "error" in box:
        raise box["error"]
    return box["value"]


def one_line_error(result, exit_code: int) -> str:
    """The one ``error:`` line of a CLI result that exited with ``exit_code``, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# --------------------------------------------------------------------------- item 6


def test_a_fifo_as_the_model_is_refused_by_every_command_without_blocking(tmp_path, tiny_checkpoint):
    """Issue 23 item 6: a FIFO (or a device, a directory) where a checkpoint goes is refused in one
    line before it is opened, by every command that opens one; before, `separate` blocked for ever."""
    from stemforge.model.checkpoint import load_checkpoint
    from stemforge.train.setup import resume_configs

    fifo = tmp_path / "model-fifo.pt"
    os.mkfifo(fifo)
    song = tone(tmp_path / "song.wav")
    runner = CliRunner()
    data = tmp_path / "no-datadir"
    commands = {
        "separate": ["separate", str(fifo), str(song), "-o", str(tmp_path / "sep")],
        "evaluate": ["evaluate", str(fifo), str(data)],
        "serve": ["serve", str(fifo), "--port", "0"],
        "combine (vocals)": ["combine", str(fifo), str(tiny_checkpoint), "-o", str(tmp_path / "both.pt")],
        "combine (accompaniment)": ["combine", str(tiny_checkpoint), str(fifo), "-o", str(tmp_path / "both.pt")],
        "import-chainer": ["import-chainer", str(fifo), "-o", str(tmp_path / "chainer.pt")],
    }
    for name, args in commands.items():
        if name == "evaluate":  # evaluate opens its DataDir first: give it one
            _tiny_datadir(tmp_path, data)
        result = call_unblocked(lambda: runner.invoke(app, args), [fifo])
        line = one_line_error(result, 3)
        assert str(fifo) in line and "not a regular file (a FIFO)" in line, (name, line)
    # train --init is checked with the other options (a usage error, exit 2)
    result = call_unblocked(lambda: runner.invoke(app, ["train", str(data), "--init", str(fifo), "--out", str(tmp_path / "r")]), [fifo])
    assert result.exit_code == 2 and "not a regular file (a FIFO)" in result.output, result.output
    # train --resume reads the run's last.pt through the same loader
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "last.pt")
    with pytest.raises(Exception, match=r"last\.pt: not a regular file \(a FIFO\)"):
        call_unblocked(lambda: resume_configs(run), [run / "last.pt"])
    # the loader itself, on a device and a directory
    from stemforge.core.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"/dev/zero: not a regular file \(a character device\)"):
        load_checkpoint("/dev/zero")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def _tiny_datadir(tmp_path: Path, data: Path) -> Path:
    """A DataDir with one test track (made once per test)."""
    if (data / "stemforge.json").exists():
        return data
    songs = tmp_path / "dd-songs"
    songs.mkdir(exist_ok=True)
    v, a = tone(songs / "v.wav", freq=500), tone(songs / "a.wav", freq=110)
    (songs / "list.csv").write_text(f"vocals,accompaniment,split\n{v},{a},test\n")
    result = CliRunner().invoke(app, ["ingest", "csv", str(songs / "list.csv"), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return data
