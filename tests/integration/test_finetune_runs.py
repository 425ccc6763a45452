"""Whole fine-tuning runs: Spleeter's imported vocals net fine-tuned through `stemforge train
--init` lowers the validation loss of a synthetic fullband DataDir, and a fine-tune with a
plateau schedule interrupted and resumed equals the uninterrupted run bit for bit. The other
cases are in tests/unit/train/test_finetune.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stemforge.model.checkpoint import load_checkpoint
from stemforge.train.config import TrainConfig
from stemforge.train.loop import train

from support.finetune import _cfg


pytestmark = pytest.mark.usefixtures("one_thread")


def test_finetune_spleeter_lowers_the_validation_loss(fullband, spleeter_pt, tmp_path, monkeypatch):
    from stemforge.cli.main import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, [
        "train", str(fullband.path), "--out", "ft", "--init", str(spleeter_pt), "--target", "vocals", "--patch-frames", "64",
        "--steps", "8", "--batch-size", "4", "--lr", "1e-4", "--val-every", "4", "--log-every", "4", "--device", "cpu",
        "--no-tensorboard", "--seed", "0",
    ])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "ft" / "metrics.csv") as f:
        vals = [float(row["val_loss"]) for row in csv.DictReader(f) if row["val_loss"]]
    assert len(vals) == 3 and vals[-1] < vals[0] and min(vals[1:]) < vals[0], vals
    ckpt = load_checkpoint(tmp_path / "ft" / "model.pt")
    src = load_checkpoint(spleeter_pt)
    # the net Spleeter's weights expect: bins 0..1023 of plain |STFT|, its architecture
    assert ckpt.unet_config.architecture == src.net("vocals").config.architecture
    assert ckpt.unet_config.first_bin == 0 and ckpt.unet_config.patch_frames == 64
    assert ckpt.spectrogram_config.normalization == "none" and ckpt.spectrogram_config.channels == 2
    assert ckpt.extra["init"]["target"] == "vocals" and ckpt.extra["train_config"]["freeze_bn"] is True


def _state(path: Path) -> dict:
    raw = torch.load(path, weights_only=True)
    return {"model": raw["model_state"], "optimizer": raw["optimizer_state"], "extra": raw["extra"]["schedule"]}


def test_finetune_with_plateau_schedule_resumes_bit_exact(fullband, spleeter_pt, tmp_path):
    import os
    import signal

    # patience 1 and a high rate: the plateau halves the rate within the run (checked below);
    # Ctrl-C after step 3, between the validations of steps 2 and 4
    cfg = _cfg(steps=6, lr=3e-3, lr_schedule="plateau", patience=1, freeze_bn=True, checkpoint_every=100)
    whole = train(fullband, tmp_path / "whole", cfg, init=spleeter_pt, target="vocals", device="cpu")
    assert whole.lr < cfg.lr  # the schedule acted

    def interrupt(event):
        if event.kind == "step" and event.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    part = train(fullband, tmp_path / "part", TrainConfig.from_dict({**cfg.to_dict(), "data_mode": "streaming", "workers": 1}),
                 init=spleeter_pt, target="vocals", progress=interrupt, device="cpu")
    assert part.interrupted and part.step == 3
    unet = load_checkpoint(tmp_path / "part" / "last.pt").unet_config
    resumed = train(fullband, tmp_path / "part", cfg, unet, resume=True, device="cpu")
    assert resumed.step == 6 and resumed.lr == whole.lr
    a, b = _state(tmp_path / "whole" / "last.pt"), _state(tmp_path / "part" / "last.pt")
    assert a["extra"] == b["extra"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, sa in a["optimizer"]["state"].items():
        for k, v in sa.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"] == whole.lr
    # the init is recorded in the run and survives the resume
    assert load_checkpoint(tmp_path / "part" / "last.pt").extra["init"]["target"] == "vocals"
