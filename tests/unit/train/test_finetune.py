"""Training on the fullband geometry and fine-tuning (``train --init``): a fullband stereo model trains
on the CPU, Spleeter's imported vocals net lowers the validation loss of a synthetic fullband
DataDir, a fine-tune with a schedule resumes bit for bit, bad geometry options are refused in one
line with nothing written, the plateau schedule and early stopping. The whole runs (the Spleeter
fine-tune, a resumed plateau schedule): tests/integration/test_finetune_runs.py. Whole fullband runs
and schedules: tests/integration/test_finetune_schedules.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stemforge.core.errors import ConfigMismatchError
from stemforge.store import DataDir
from stemforge.train.config import TrainConfig
from stemforge.train.loop import train
from stemforge.model import UNetConfig

from support.finetune import _cfg


pytestmark = pytest.mark.usefixtures("one_thread")


def test_stereo_batches_are_the_same_resident_and_streaming_and_plain_scale(fullband):
    from stemforge.train.layout import to_device, track_norms
    from stemforge.train.resident import ResidentBatches
    from stemforge.train.sampling import PatchSampler
    from stemforge.train.streaming import StreamingBatches

    sampler = PatchSampler.from_datadir(fullband, patch_frames=64)
    norms = track_norms(fullband, "train")
    for scale in (None, norms):
        res = ResidentBatches(sampler, fullband.reader(), "vocals", 3, seed=1, first_bin=0, n_bins=1024, scale=scale)
        stream = StreamingBatches(sampler, fullband.reader(), "vocals", 3, seed=1, first_bin=0, n_bins=1024, scale=scale)
        for step in (0, 7):
            m_res, t_res = res.batch(step)
            m_str, t_str = to_device(stream[step], "cpu")
            assert m_res.shape == (3, 2, 1024, 64)
            assert torch.equal(m_res, m_str) and torch.equal(t_res, t_str)
        stream.close()
    # the layout: crop i of step 0 is the stored [P, C, S] frames, bins 0..1023, channel-major
    track, start = sampler.positions(1, 0, 0, 3)
    raw = fullband.reader().read_frames(sampler.tracks.shards[track[0]], sampler.tracks.keys[track[0]], int(start[0]), int(start[0]) + 64)
    plain = StreamingBatches(sampler, fullband.reader(), "vocals", 3, seed=1, first_bin=0, n_bins=1024, scale=norms)[0]
    expect = (raw["mixture"][:, :, :1024].transpose(1, 2, 0).astype(np.float32) * norms[track[0]]).astype(np.float16)
    np.testing.assert_array_equal(plain.mixture[0].numpy(), expect)


def test_init_refuses_another_geometry_or_architecture(fullband, spleeter_pt, tmp_path, monkeypatch):
    from stemforge.cli.main import app

    seed_dd = DataDir.create(tmp_path / "seed")
    with pytest.raises(ConfigMismatchError, match=r"geometry.*sample_rate=16000.*sample_rate=44100"):
        train(seed_dd, tmp_path / "x", _cfg(), init=spleeter_pt, target="vocals")
    with pytest.raises(ConfigMismatchError, match=r"architecture.*width=0.25.*width=1.0"):
        train(fullband, tmp_path / "x", _cfg(), UNetConfig.preset("spleeter", width=0.25), init=spleeter_pt, target="vocals")
    assert not (tmp_path / "x").exists()
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["train", str(fullband.path), "--out", "y", "--init", str(spleeter_pt), "--target", "vocals", "--width", "0.5"])
    assert r.exit_code == 3 and "architecture" in r.output and "width=0.5" in r.output and "width=1.0" in r.output
    r = CliRunner().invoke(app, ["train", str(fullband.path), "--out", "y", "--init", str(spleeter_pt), "--variant", "paper"])
    assert r.exit_code == 2 and "--variant" in r.output
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("bins, code, words", [("100", 2, "multiple of 64"), ("2112", 3, "the DataDir stores 2049")])
def test_bad_model_bins_one_line_nothing_written(fullband, tmp_path, monkeypatch, bins, code, words):
    from stemforge.cli.main import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["train", str(fullband.path), "--out", "z", "--model-bins", bins, "--device", "cpu"])
    assert r.exit_code == code and words in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "z").exists()
    errors = [line for line in r.output.splitlines() if "error" in line.lower() or "Invalid" in line]
    assert len(errors) >= 1


def test_cosine_schedule_and_its_resume_rule():
    cfg = TrainConfig(steps=10, lr=1e-3, lr_schedule="cosine")
    assert cfg.lr_at(0, 1e-3) == 1e-3 and abs(cfg.lr_at(5, 1e-3) - 5e-4) < 1e-12 and cfg.lr_at(10, 1e-3) == 0.0
    assert TrainConfig().hash == "761ed3931c2e"  # the new fields keep the seed's TrainConfig hash
