"""``stemforge train --ema DECAY``, ``--select sdr`` and ``--warmup STEPS``: the moving average's
arithmetic, the averaged weights in best.pt/model.pt, best.pt picked by the validation GNSDR
(logged to metrics.csv), the scorer equal to ``stemforge evaluate``'s GNSDR, the warm-up's
learning rates, and the options on the command line."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from stemforge.core.errors import StemforgeError
from stemforge.model import UNetConfig
from stemforge.model.checkpoint import load_checkpoint
from stemforge.store import DataDir
from stemforge.train.config import TrainConfig
from stemforge.train.ema import WeightAverage, ema_decay
from stemforge.train.loop import train
from stemforge.train.schedule import Schedule

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = UNetConfig(width=0.125)
SONGS = ["abjones_1", "abjones_5", "amy_2", "amy_9", "annar_1"]


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> DataDir:
    """Synthetic MIR-1K clips, huang2014 splits (train abjones_1, amy_2; valid abjones_5, amy_9)."""
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import mir1k
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("select")
    write_corpus(root / "MIR-1K", "mir1k", songs=len(SONGS), seconds=6, seed=8, clip_seconds=3,
                 entries=[{"id": s} for s in SONGS])
    dd = DataDir.create(root / "data")
    assert not ingest(dd, mir1k.discover(root / "MIR-1K", split_rule="huang2014"), workers=1).failed
    return DataDir.open(root / "data")


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, lr=1e-2, val_every=2, val_crops=4, checkpoint_every=100, log_every=2,
                tensorboard=False, data_mode="memory", deterministic=True, seed=5)
    base.update(kw)
    return TrainConfig(**base)


# -- the moving average ------------------------------------------------------------------------


class ScriptedScorer:
    """A scorer returning scripted GNSDRs, one per call, and recording the weights it saw."""

    def __init__(self, values):
        self.values = list(values)
        self.calls = 0
        self.seen = []

    def __call__(self, model):
        v = self.values[self.calls]
        self.calls += 1
        self.seen.append({k: t.clone() for k, t in model.state_dict().items()})
        return {"vocals": v, "accompaniment": -v}


def test_weight_average_arithmetic():
    """ema = d * ema + (1 - d) * w after each update, d = min(decay, (1 + t) / (10 + t)), on
    parameters and BatchNorm running statistics; the integer batch counter copied."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(net, 0.5)
    expect = {k: v.clone().double() for k, v in net.state_dict().items()}
    for t in range(1, 6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.train()(torch.randn(4, 3))  # moves the running statistics
        avg.update(net)
        d = min(0.5, (1 + t) / (10 + t))
        assert ema_decay(0.5, t) == d
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expect[k] = d * expect[k] + (1 - d) * v.double()
            else:
                expect[k] = v.clone()
    for k, v in avg.model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), expect[k], rtol=1e-6, atol=1e-7, msg=k)
        else:
            assert torch.equal(v, expect[k].to(v.dtype)), k
    assert ema_decay(0.5, 1) == pytest.approx(2 / 11) and ema_decay(0.999, 10**6) == 0.999
    # the state round trip continues the same average
    again = WeightAverage(net, 0.5, avg.state_dict())
    assert again.updates == 5
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), avg.model.state_dict().values()))
    assert not any(p.requires_grad for p in avg.model.parameters())


def test_ema_weights_are_validated_and_saved(datadir, tmp_path):
    """With --ema the average, not the trained weights, is what is validated and what
    model.pt/best.pt hold; last.pt holds the trained weights and the average (extra.ema)."""
    scorer = ScriptedScorer([0.0, 1.0])  # step 4 validates best
    res = train(datadir, tmp_path / "run", _config(ema=0.6, val_every=4, select="sdr"), TINY, device="cpu", scorer=scorer)
    best = load_checkpoint(res.model_path)
    last = torch.load(res.last_checkpoint, weights_only=False)
    ema = last["extra"]["ema"]
    assert ema["updates"] == 4 and ema["decay"] == 0.6 and best.step == 4
    state = best.model.state_dict()
    for k in ema["weights"]:
        assert torch.equal(state[k], ema["weights"][k]), k
        assert torch.equal(scorer.seen[1][k], ema["weights"][k]), k
    assert any(not torch.equal(state[k], last["model_state"][k]) for k in state if state[k].is_floating_point())


# -- selection by SDR ----------------------------------------------------------------------------


def test_select_sdr_keeps_the_step_with_the_best_gnsdr(datadir, tmp_path):
    """Validations at steps 0, 2, 4, 6 scored 1, 5, 3, 4 dB: best.pt is step 2's weights whatever
    the loss says, metrics.csv has the GNSDR beside the loss, the result reports it."""
    scorer = ScriptedScorer([1.0, 5.0, 3.0, 4.0])
    res = train(datadir, tmp_path / "run", _config(steps=6, select="sdr"), TINY, device="cpu", scorer=scorer)
    assert scorer.calls == 4
    assert res.best_step == 2 and res.select == "sdr"
    assert res.best_sdr == {"vocals": 5.0, "accompaniment": -5.0} and res.final_sdr["vocals"] == 4.0
    best = load_checkpoint(res.model_path)
    assert best.step == 2 and best.extra["val_gnsdr"]["vocals"] == 5.0
    state = best.model.state_dict()
    assert all(torch.equal(state[k], scorer.seen[1][k]) for k in state)
    rows = list(csv.DictReader(open(res.metrics_path)))
    scored = [(int(r["step"]), float(r["val_gnsdr_vocals"]), float(r["val_loss"])) for r in rows if r["val_gnsdr_vocals"]]
    assert [(s, g) for s, g, _ in scored] == [(0, 1.0), (2, 5.0), (4, 3.0), (6, 4.0)]
    assert res.best_val_loss == pytest.approx(scored[1][2], rel=1e-5)
    # select loss: the scripted scores would be ignored (no scorer called)
    res = train(datadir, tmp_path / "loss", _config(steps=2), TINY, device="cpu", scorer=ScriptedScorer([]))
    assert res.select == "loss" and res.best_sdr is None


def test_select_sdr_needs_a_scorer_and_a_schedule_counts_gnsdr_as_higher_better(datadir, tmp_path):
    with pytest.raises(StemforgeError, match="scorer"):
        train(datadir, tmp_path / "run", _config(select="sdr"), TINY, device="cpu")
    sched = Schedule(_config(select="sdr", lr_schedule="plateau", patience=1))
    assert sched.validated(0, 2.0).best and sched.validated(2, 3.0).best
    verdict = sched.validated(4, 2.5)
    assert not verdict.best and verdict.lr == pytest.approx(5e-3) and "GNSDR" in verdict.messages[0]
    assert sched.best_val == 3.0 and sched.best_step == 2


def test_sdr_scorer_equals_evaluate_on_the_valid_split(datadir, tmp_path):
    """SdrScorer(model) is the GNSDR that `stemforge evaluate` reports for the same weights on
    the valid split (model rows, both stems)."""
    from stemforge.evaluate.datadir import evaluate_datadir
    from stemforge.evaluate.validation import SdrScorer
    from stemforge.separate.separator import Separator

    res = train(datadir, tmp_path / "run", _config(steps=2), TINY, device="cpu")
    ckpt = load_checkpoint(res.model_path)
    scorer = SdrScorer(datadir, split="valid")
    got = scorer(ckpt.model)
    report = evaluate_datadir(Separator.from_checkpoint(res.model_path, device="cpu"), datadir, split="valid")
    want = {s["stem"]: s["gnsdr"] for s in report.summary.to_dict(orient="records") if s["method"] == "model"}
    assert len(scorer) == report.meta["tracks"] == 4
    for stem in ("vocals", "accompaniment"):
        assert got[stem] == pytest.approx(want[stem], abs=1e-6)
    stereo = type("D", (), {"config": type("C", (), {"channels": 2})(), "path": "x"})()
    with pytest.raises(StemforgeError, match="mono"):
        SdrScorer(stereo)


# -- warm-up ----------------------------------------------------------------------------------


def test_warmup_ramps_the_learning_rate_then_holds_it():
    cfg = _config(lr=1e-3, warmup=4, steps=10)
    sched = Schedule(cfg)
    rates = []
    for step in range(7):
        lr = sched.step_lr(step)
        rates.append(lr if lr is not None else rates[-1])
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3])
    assert sched.step_lr(5) is None and sched.lr == 1e-3
    cos = _config(lr=1e-3, warmup=2, steps=10, lr_schedule="cosine")
    assert cos.lr_at(0, 1e-3) == pytest.approx(0.5e-3) and cos.lr_at(5, 1e-3) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi / 2)))
    assert _config().lr_at(0, 1e-3) == 1e-3  # no warm-up: the rate itself


# -- the options -------------------------------------------------------------------------------


def test_train_config_checks_the_new_fields():
    for bad in (dict(remix="bogus"), dict(select="si-sdr"), dict(ema=1.0), dict(ema=0.0), dict(remix_aligned=1.5),
                dict(remix_gain_db=-1.0), dict(warmup=-1)):
        with pytest.raises(StemforgeError):
            TrainConfig(**bad)
    cfg = TrainConfig(remix="fresh", remix_aligned=0.25, remix_gain_db=6, ema=0.995, select="sdr", warmup=100)
    assert cfg.remix_gain_db == 6.0 and isinstance(cfg.remix_gain_db, float)
    assert TrainConfig().hash == TrainConfig(remix="stored", ema=None, select="loss", warmup=0).hash
    assert TrainConfig().hash != cfg.hash


def test_cli_options_parse(monkeypatch):
    import stemforge.cli.train as cli_train
    from stemforge.cli.main import app

    seen = {}
    monkeypatch.setattr(cli_train, "_train", lambda **kw: seen.update(kw))
    r = CliRunner().invoke(app, ["train", "x", "--remix", "fresh", "--remix-aligned", "0.2", "--remix-gain-db", "6",
                                 "--ema", "0.995", "--select", "sdr", "--warmup", "50"])
    assert r.exit_code == 0, r.output
    assert seen["given"] == {"remix": "fresh", "remix_aligned": 0.2, "remix_gain_db": 6.0, "ema": 0.995, "select": "sdr",
                             "warmup": 50}
    monkeypatch.undo()
    for argv, hint in ((["--remix", "bogus"], "--remix"), (["--ema", "2"], "--ema"), (["--select", "x"], "--select")):
        r = CliRunner().invoke(app, ["train", "x", *argv])
        assert r.exit_code == 2 and hint in r.output, r.output


def test_cli_train_with_select_sdr_logs_gnsdr(datadir, tmp_path):
    from stemforge.cli.main import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(datadir.path), "--out", str(out), "--width", "0.125", "-b", "2", "--steps", "2",
                                 "--val-every", "2", "--remix", "fresh", "--select", "sdr", "--ema", "0.9", "--device", "cpu",
                                 "--no-tensorboard"])
    assert r.exit_code == 0, r.output
    assert "validation GNSDR (best)" in r.output and "fresh remixes" in r.output
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["step"] for r in rows if r["val_gnsdr_vocals"]] == ["0", "2"]
    assert np.isfinite(float(rows[-1]["val_gnsdr_vocals"]))
