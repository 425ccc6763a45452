"""What tests/integration/test_reliability_io.py and tests/integration/test_reliability_io_commands.py
share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from stemforge.cli.main import app


def tone(path: Path, seconds: float = 2.0, rate: int = 16000, freq: float = 440.0, channels: int = 1) -> Path:
    t = np.arange(int(round(seconds * rate))) / rate
    data = np.stack([0.3 * np.sin(2 * np.pi * freq * (1 + c / 4) * t) for c in range(channels)], axis=1).astype(np.float32)
    sf.write(os.fsencode(path), data, rate, subtype="PCM_16")  # bytes: a name need not be UTF-8
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


def no_traceback(result) -> None:
    """The command ended through its own exit (CliRunner keeps an escaped exception aside: its
    exit code is then 1 and the output shows no traceback)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output


def one_line_error(result, exit_code: int) -> str:
    """The one ``error:`` line of a CLI result that exited with ``exit_code``, no traceback."""
    assert result.exit_code == exit_code, result.output
    no_traceback(result)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _train_datadir(tmp_path: Path, songs: int = 3, seconds: float = 5.0) -> Path:
    """A DataDir of ``songs`` train tracks of ``seconds`` s (voiced throughout)."""
    folder = tmp_path / "aug-songs"
    folder.mkdir()
    rows = ["vocals,accompaniment,track_id,split"]
    for i in range(songs):
        v = tone(folder / f"v{i}.wav", seconds=seconds, freq=300 + 70 * i)
        a = tone(folder / f"a{i}.wav", seconds=seconds, freq=90 + 3 * i)
        rows.append(f"{v.name},{a.name},s{i},train")
    (folder / "list.csv").write_text("\n".join(rows) + "\n")
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["ingest", "csv", str(folder / "list.csv"), "--out", str(data), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return data


def _snapshot(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file() and p.name != ".stemforge.lock"}

