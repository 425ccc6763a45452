"""Whole fullband runs: a fullband stereo model trains on the CPU and records what the Separator
reads, and a plateau schedule halves the rate, early stop ends the run and a resume honours it.
The batches and refusals: tests/unit/train/test_finetune.py."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from stemforge.model.checkpoint import load_checkpoint
from stemforge.model.config import geometry_unet_config
from stemforge.train.loop import train

from support.finetune import _cfg


pytestmark = pytest.mark.usefixtures("one_thread")


def test_fullband_stereo_model_trains_and_records_what_the_separator_reads(fullband, tmp_path):
    unet = geometry_unet_config(fullband.config, "seed", width=0.25)
    assert (unet.channels, unet.n_bins, unet.first_bin, unet.patch_frames) == (2, 1024, 1, 512)
    result = train(fullband, tmp_path / "run", _cfg(steps=2, patch_frames=512, val_crops=2), unet)
    assert result.step == 2 and np.isfinite(result.final_val_loss)
    ckpt = load_checkpoint(result.model_path)
    assert ckpt.unet_config == unet and ckpt.spectrogram_config == fullband.config
    x = torch.rand(1, 2, 1024, 64)
    assert ckpt.model(x).shape == (1, 2, 1024, 64)  # one mask per channel, at the model's bins


def test_plateau_halves_the_rate_and_early_stop_ends_the_run_and_resume_honours_it(fullband, tmp_path):
    unet = geometry_unet_config(fullband.config, "seed", width=0.125, n_bins=256)
    # a rate far too high: the validation loss stops improving, the plateau halves the rate,
    # early stopping ends the run long before its steps
    cfg = _cfg(steps=40, lr=0.5, val_every=1, lr_schedule="plateau", patience=1, early_stop=2, log_every=1)
    result = train(fullband, tmp_path / "es", cfg, unet)
    assert result.stopped_early is not None and result.step == result.stopped_early < 40
    assert result.lr < 0.5
    with open(tmp_path / "es" / "metrics.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f) if row["lr"]]
    assert lrs[0] == 0.5 and min(lrs) == result.lr
    again = train(fullband, tmp_path / "es", cfg, result and load_checkpoint(tmp_path / "es" / "last.pt").unet_config, resume=True)
    assert again.step == result.step and again.stopped_early == result.stopped_early
