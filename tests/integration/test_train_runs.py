"""Whole training runs on synthetic songs: the validation loss goes down over 30 steps, and a run
interrupted by Ctrl-C and resumed equals the uninterrupted run bit for bit. The parts of a run on
their own: tests/unit/train/test_train.py."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch

from stemforge.core.errors import StemforgeError
from stemforge.model.checkpoint import load_checkpoint
from stemforge.train.loop import train
from stemforge.train.setup import resume_configs

from support.train import TINY, _config, _state


pytestmark = pytest.mark.usefixtures("one_thread")


def test_validation_loss_goes_down(datadir, tmp_path):
    events = []
    result = train(datadir, tmp_path / "run", _config(steps=30, val_every=10, tensorboard=True), TINY,
                   progress=events.append, device="cpu")
    assert result.step == 30 and not result.interrupted
    assert result.initial_val_loss is not None and result.final_val_loss is not None
    assert result.final_val_loss < 0.8 * result.initial_val_loss, (result.initial_val_loss, result.final_val_loss)
    assert result.best_val_loss <= result.final_val_loss and result.best_step in (10, 20, 30)
    # better than any constant mask (L1 favours a mask near 0 on sparse vocals): it separates
    from stemforge.train.validation import validation_set

    vs = validation_set(datadir, "vocals", max_crops=8)
    mix, voc = vs.mixture.float(), vs.target.float()
    constant = min(float((c / 50 * mix - voc).abs().mean()) for c in range(51))
    assert result.final_val_loss < 0.97 * constant, (result.final_val_loss, constant)
    # the best weights are in best.pt and model.pt (the same file)
    best = load_checkpoint(result.model_path)
    assert best.step == result.best_step and best.extra["val_loss"] == pytest.approx(result.best_val_loss)
    assert os.path.samefile(result.model_path, result.best_checkpoint) and result.model_weights == "best"
    last = load_checkpoint(result.last_checkpoint)
    assert last.step == 30 and last.optimizer_state is not None and last.manifest_hash == datadir.manifest_hash
    assert last.extra["train_config"]["lr"] == 1e-2 and last.target == "vocals"
    # metrics, plot, tensorboard, run info
    rows = list(csv.DictReader(open(result.metrics_path)))
    assert rows[0]["step"] == "0" and rows[0]["val_loss"] and not rows[0]["train_loss"]
    assert [r["step"] for r in rows if r["val_loss"]] == ["0", "10", "20", "30"]
    assert all(float(r["train_loss"]) > 0 for r in rows[1:])
    assert result.loss_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in result.tensorboard_dir.iterdir())
    assert (result.out_dir / "train.json").exists()
    kinds = [e.kind for e in events if e.kind != "loading"]  # loading: before data (tests/unit/train/test_train_faults.py)
    assert kinds[0] == "data" and "start" in kinds and kinds[-1] == "done"
    assert sum(k == "step" for k in kinds) == 30 and sum(k == "validation" for k in kinds) == 4
    assert result.patches_per_s and result.patches_per_s > 0
    # a run folder is never overwritten by a new run
    with pytest.raises(StemforgeError, match="--resume"):
        train(datadir, tmp_path / "run", _config(), TINY, device="cpu")


def test_resume_after_ctrl_c_is_bit_exact(datadir, tmp_path):
    n = 3
    whole = train(datadir, tmp_path / "whole", _config(steps=2 * n), TINY, device="cpu")

    def interrupt(event):
        if event.kind == "step" and event.step == n:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: handled between steps

    # the interrupted run streams its crops from the shards with a worker process; the resumed
    # one holds them in memory: the batches are the same either way
    part = train(datadir, tmp_path / "part", _config(steps=2 * n, data_mode="streaming", workers=1), TINY,
                 progress=interrupt, device="cpu")
    assert part.interrupted and part.step == n
    assert load_checkpoint(part.last_checkpoint).step == n
    cfg, unet, step = resume_configs(tmp_path / "part")
    assert step == n and unet == TINY and cfg.data_mode == "streaming"
    resumed = train(datadir, tmp_path / "part", _config(steps=2 * n), TINY, device="cpu", resume=True)
    assert resumed.step == 2 * n and not resumed.interrupted
    a, b = _state(whole.last_checkpoint), _state(resumed.last_checkpoint)
    assert a["model_state"].keys() == b["model_state"].keys()
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    for i, state in a["optimizer_state"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer_state"]["state"][i][name]), (i, name)
    # metrics rows continue without duplicates
    steps = [int(r["step"]) for r in csv.DictReader(open(resumed.metrics_path))]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * n
