"""Training: loss goes down on synthetic songs, exact resume after Ctrl-C, files of a run, CLI, DDP,
progress (a bar on a terminal, lines in a log file), a DataDir without a valid split. The commands
run as real processes: tests/integration/test_train_commands.py. Whole runs (the loss goes down, the
bit-exact resume): tests/integration/test_train_runs.py."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from stemforge.core.errors import CheckpointError, ConfigMismatchError, StemforgeError
from stemforge.store import DataDir
from stemforge.model.checkpoint import load_checkpoint
from stemforge.train.config import TrainConfig
from stemforge.train.distributed import distributed_env
from stemforge.train.loop import train
from stemforge.train.setup import steps_for_epochs
from stemforge.model import UNetConfig

from support.train import TINY, _config, _state


pytestmark = pytest.mark.usefixtures("one_thread")


def test_resume_refuses_other_configuration_or_data(datadir, tmp_path):
    train(datadir, tmp_path / "run", _config(steps=1), TINY, device="cpu")
    with pytest.raises(ConfigMismatchError, match="lr"):
        train(datadir, tmp_path / "run", _config(steps=2, lr=1e-3), TINY, device="cpu", resume=True)
    with pytest.raises(ConfigMismatchError, match="U-Net"):
        train(datadir, tmp_path / "run", _config(steps=2), UNetConfig(width=0.25), device="cpu", resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(datadir, tmp_path / "other", _config(steps=2), TINY, device="cpu", resume=True)
    # another manifest: same shards, one row's split changed
    import shutil

    copy = tmp_path / "data2"
    shutil.copytree(datadir.path, copy)
    dd2 = DataDir.open(copy)
    with dd2.writing():
        rows = dd2.manifest.to_dict("records")
        rows[0]["title"] = "changed"
        dd2.commit([rows[0]])
    with pytest.raises(ConfigMismatchError, match="manifest"):
        train(DataDir.open(copy), tmp_path / "run", _config(steps=2), TINY, device="cpu", resume=True)


def test_train_config_validation_and_epochs(datadir):
    with pytest.raises(StemforgeError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(StemforgeError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(StemforgeError, match="data_mode"):
        TrainConfig(data_mode="disk")
    with pytest.raises(StemforgeError, match="loss must be one of"):
        TrainConfig(loss="huber")
    # the options added later keep the hash of a configuration that leaves them at their defaults
    assert TrainConfig(loss="l1").hash == TrainConfig().hash
    assert TrainConfig(loss="l2").hash != TrainConfig().hash
    cfg = TrainConfig(lr=1, betas=[0.5, 0.9])
    assert cfg.lr == 1.0 and cfg.betas == (0.5, 0.9)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    # 4 train songs of ~313 frames -> 1252 frames = 9.8 crops of 128: 3 steps of 4 per epoch
    assert steps_for_epochs(datadir, 1, batch_size=4) == 3
    assert steps_for_epochs(datadir, 2, batch_size=4, world_size=2) == 3
    assert distributed_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).rank == 1
    with pytest.raises(StemforgeError):
        distributed_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_cli_train_resume_and_refusals(datadir, tmp_path):
    from stemforge.cli.main import app

    runner = CliRunner()
    run = tmp_path / "cli-run"
    common = ["--width", "0.125", "--batch-size", "2", "--device", "cpu", "--val-every", "1", "--no-tensorboard"]
    r = runner.invoke(app, ["train", str(datadir.path), "--out", str(run), "--steps", "2", *common])
    assert r.exit_code == 0, r.output
    assert "model (best)" in r.output and "metrics" in r.output
    for name in ("last.pt", "best.pt", "model.pt", "metrics.csv", "loss.png"):
        assert (run / name).exists(), name
    # --resume keeps the run's options (width, batch size) and extends it
    r = runner.invoke(app, ["train", "--data", str(datadir.path), "--out", str(run), "--resume", "--steps", "3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt.step == 3 and ckpt.unet_config.width == 0.125 and ckpt.extra["train_config"]["batch_size"] == 2
    # a new run into the same folder is refused (exit 3), as are bad options (exit 2)
    r = runner.invoke(app, ["train", str(datadir.path), "--out", str(run), "--steps", "2", *common])
    assert r.exit_code == 3 and "--resume" in r.output
    r = runner.invoke(app, ["train", str(datadir.path), "--out", str(run), "--steps", "2", "--epochs", "1"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 3 and "not a stemforge DataDir" in r.output
    # the library's checks on the given options come first: a usage error (2) naming the option,
    # before any DataDir is looked up
    for bad, option in ((["--batch-size", "0"], "--batch-size"), (["--precision", "fp8"], "--precision"),
                        (["--target", "drums"], "--target"), (["--device", "tpu"], "--device"),
                        (["--epochs", "-1"], "--epochs"), (["--log-every", "0"], "--log-every")):
        r = runner.invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"), *bad])
        assert r.exit_code == 2 and option in r.output and "DataDir" not in r.output, (bad, r.output)


def test_cli_train_options_are_derived_from_train_config(monkeypatch):
    """Each TrainConfig field with a flag is one `stemforge train` option: its names, its help
    and its default (shown as TrainConfig has it) come from the field; a given option reaches
    the run as the field's value (a switch as one of its two values)."""
    from typer.main import get_command

    import stemforge.cli.train as cli_train
    from stemforge.cli.main import app
    from stemforge.train.config import flags

    options = {p.name: p for p in get_command(app).commands["train"].params}
    derived = list(flags())
    assert {f.name for f, _ in derived} == {"steps", "batch_size", "lr", "seed", "precision", "data_mode", "workers",
                                             "compile", "patch_frames", "min_vocal_db", "val_every", "checkpoint_every",
                                             "log_every", "tensorboard", "deterministic", "lr_schedule", "patience",
                                             "early_stop", "freeze_bn", "dist_timeout", "remix", "remix_aligned",
                                             "remix_gain_db", "remix_pitch", "ema", "select", "warmup", "loss"}
    for f, flag in derived:
        option = options[f.name]
        assert option.help == flag.help_text(f) and option.default is None, f.name
        assert set(flag.option_names(f)[0].split("/")) <= set(option.opts + option.secondary_opts), f.name
    assert options["steps"].help.endswith("[default: 10000]") and options["lr"].help.endswith("[default: 0.001]")
    assert options["compile"].help.endswith("[default: no]") and options["tensorboard"].help.endswith("[default: yes]")
    assert options["batch_size"].opts == ["--batch-size", "-b"] and options["workers"].opts == ["--workers", "-j"]
    assert options["data_mode"].opts == ["--in-memory"] and options["data_mode"].secondary_opts == ["--streaming"]
    seen = {}
    monkeypatch.setattr(cli_train, "_train", lambda **kw: seen.update(kw))
    r = CliRunner().invoke(app, ["train", "x", "--streaming", "--no-compile", "-b", "3", "--lr", "0.01", "--early-stop", "2"])
    assert r.exit_code == 0, r.output
    assert seen["given"] == {"data_mode": "streaming", "compile": False, "batch_size": 3, "lr": 0.01, "early_stop": 2}
    assert seen["data_arg"] == Path("x") and seen["device"] == "auto" and seen["resume"] is False
    CliRunner().invoke(app, ["train", "--in-memory"])
    assert seen["given"] == {"data_mode": "memory"}


# --------------------------------------------------------------------------------------------
# A DataDir without a valid split
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_valid_datadir(datadir, tmp_path_factory) -> DataDir:
    """The same songs, all in train (as three MedleyDB songs without an official split)."""
    import shutil

    copy = tmp_path_factory.mktemp("novalid") / "data"
    shutil.copytree(datadir.path, copy)
    dd = DataDir.open(copy)
    with dd.writing():
        rows = [r for r in dd.manifest.to_dict("records") if r["split"] == "valid"]
        for r in rows:
            r["split"] = "train"
        dd.commit(rows)
    dd = DataDir.open(copy)
    assert set(dd.manifest["split"]) == {"train"}
    return dd


def test_no_valid_split_is_said_at_the_start_and_model_is_the_last_weights(no_valid_datadir, datadir, tmp_path):
    events = []
    result = train(no_valid_datadir, tmp_path / "run", _config(steps=3), TINY, progress=events.append, device="cpu")
    assert events[0].kind == "warning" and "no 'valid' rows" in events[0].message
    assert "--valid-fraction" in events[0].message and "last weights" in events[0].message
    assert not any(e.kind == "validation" for e in events)
    assert result.model_weights == "last" and result.best_checkpoint is None
    assert result.best_val_loss is None and result.initial_val_loss is None
    assert not (result.out_dir / "best.pt").exists()
    model = load_checkpoint(result.model_path)
    assert model.step == 3 and model.optimizer_state is None and model.extra["weights"].startswith("last")
    last = _state(result.last_checkpoint)["model_state"]
    for key, value in _state(result.model_path)["model_state"].items():
        assert torch.equal(value, last[key]), key
    # validation switched off is the same (model.pt: the last weights)
    assert train(datadir, tmp_path / "run2", _config(steps=1, val_crops=0),
                 TINY, device="cpu").model_weights == "last"


def test_cli_without_valid_split_warns_loudly_and_names_the_model_last(no_valid_datadir, tmp_path):
    from stemforge.cli.main import app

    r = CliRunner().invoke(app, ["train", str(no_valid_datadir.path), "--out", str(tmp_path / "run"), "--steps", "2",
                                 "--width", "0.125", "--batch-size", "2", "--device", "cpu", "--no-tensorboard"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("WARNING:"))
    first_step = next(i for i, line in enumerate(lines) if line.startswith("train: step"))
    assert warning < first_step and "--valid-fraction" in lines[warning]
    assert "model (last):" in r.output and "model (best)" not in r.output
    assert "- (no validation)" in r.output


# --------------------------------------------------------------------------------------------
# Progress: plain lines without a terminal, a live bar on one
# --------------------------------------------------------------------------------------------


def test_progress_renderer_plain_lines():
    from stemforge.console.progress import TrainProgress
    from stemforge.train.config import TrainEvent

    buf = io.StringIO()
    show = TrainProgress(stream=buf)  # a StringIO is no terminal: plain lines
    assert not show.tty
    show(TrainEvent("warning", 0, 6, message="no valid rows"))
    show(TrainEvent("start", 0, 6))
    for step in range(1, 7):
        logged = step % 3 == 0
        show(TrainEvent("step", step, 6, train_loss=0.5 / step if logged else None,
                        patches_per_s=10.0 if logged else None, elapsed_s=float(step) if logged else None))
        if step == 3:
            show(TrainEvent("validation", 3, 6, val_loss=0.25))
    show(TrainEvent("done", 6, 6))
    show.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "WARNING: no valid rows"
    assert lines[2].startswith("train: step 3/6 (50%)  loss 0.16667  10.0 patches/s  elapsed 0:00:03")
    assert lines[3] == "train: step 3/6  validation loss 0.25000 (best so far)"
    assert lines[4].startswith("train: step 6/6 (100%)  loss 0.08333  val 0.25000  10.0 patches/s")
    assert len(lines) == 5


# --------------------------------------------------------------------------------------------
# The pieces of the run
# --------------------------------------------------------------------------------------------


def test_resolve_device():
    from stemforge.core.device import resolve_device

    cpu = torch.device("cpu")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device(None) == cpu and resolve_device("auto") == cpu
    assert resolve_device("cpu") == cpu and resolve_device(cpu) == cpu
    for bad in ("tpu", "cuda:x", "meta"):
        with pytest.raises(StemforgeError, match="--device"):
            resolve_device(bad)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert resolve_device("cuda", local_rank=n + 1) == torch.device("cuda", (n + 1) % n)
        with pytest.raises(StemforgeError, match="GPU"):
            resolve_device(f"cuda:{n}")
    else:
        with pytest.raises(StemforgeError, match="CUDA is not available"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(StemforgeError, match="MPS is not available"):
            resolve_device("mps")


def test_throughput_leaves_out_warm_up_and_pauses():
    from stemforge.train.throughput import Throughput

    now = [0.0]
    meter = Throughput(start_step=0, total_steps=100, patches_per_step=8, clock=lambda: now[0])
    assert meter.timed_from == 10
    for step in range(1, 101):
        now[0] += 5.0 if step <= 10 else 1.0  # slow warm-up steps
        meter.stepped(step)
        if step == 50:
            with meter.paused():
                now[0] += 100.0  # a validation
            assert meter.interval_rate() == pytest.approx(50 * 8 / 90.0)  # warm-up inside, pause not
    meter.stop()
    assert meter.session_rate(100) == pytest.approx(8.0)  # 90 steps of 1 s after the warm-up
    assert Throughput(0, 100, 8).session_rate(5) is None


# --------------------------------------------------------------------------------------------
# The seams of the training house: the schedule's state, the run's resolution, the run folder
# --------------------------------------------------------------------------------------------


def test_schedule_state_dict_round_trip_takes_the_same_decisions():
    from stemforge.train.schedule import Schedule

    cfg = TrainConfig(steps=100, lr=0.4, lr_schedule="plateau", patience=2, early_stop=6)
    values = [1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.97, 0.96]
    whole = Schedule(cfg)
    decisions = [whole.validated(10 * (i + 1), v) for i, v in enumerate(values)]
    assert [d.best for d in decisions] == [True, True] + [False] * 6
    assert [d.lr for d in decisions] == [None, None, None, 0.2, None, 0.1, None, 0.05]
    assert whole.stopped_early == 80 and "early stop" in decisions[7].messages[-1] and "halved" in decisions[7].messages[0]
    # stop after any validation, store what last.pt stores, restore, go on: the same decisions
    for cut in range(len(values)):
        first = Schedule(cfg)
        for i, v in enumerate(values[:cut]):
            first.validated(10 * (i + 1), v)
        state = first.state_dict()
        # last.pt keeps these five keys (an older run's last.pt must still resume)
        assert set(state) == {"lr_schedule", "lr", "plateau_count", "since_best", "stopped_early"}
        again = Schedule(cfg, dict(state), first.best_val, first.best_step)
        rest = [again.validated(10 * (i + 1), v) for i, v in enumerate(values) if i >= cut]
        assert [(d.best, d.lr, d.messages) for d in rest] == [(d.best, d.lr, d.messages) for d in decisions[cut:]]
        assert (again.lr, again.stopped_early, again.best_val) == (whole.lr, whole.stopped_early, whole.best_val)
    # an older last.pt: the state a run of the previous layout wrote
    old = Schedule(cfg, {"lr_schedule": "plateau", "lr": 0.1, "plateau_count": 1, "since_best": 3, "stopped_early": None},
                   best_val=0.5, best_step=20)
    assert (old.lr, old.plateau_count, old.since_best) == (0.1, 1, 3)
    assert old.validated(60, 0.6).lr == 0.05 and old.since_best == 4
    # cosine: a rate at every step, the same on resume; constant: none after the first
    cosine = Schedule(TrainConfig(steps=10, lr=1e-3, lr_schedule="cosine"))
    assert cosine.step_lr(0) == 1e-3 and abs(cosine.step_lr(5) - 5e-4) < 1e-12
    assert Schedule(TrainConfig(steps=10, lr=1e-3, lr_schedule="cosine"), cosine.state_dict()).step_lr(5) == cosine.lr
    assert Schedule(TrainConfig(lr=1e-3)).step_lr(3) is None


def test_resolve_run_new_resume_init_and_the_request_rules(datadir, tmp_path):
    from stemforge.model.config import geometry_unet_config
    from stemforge.train.setup import RequestError, resolve_run

    out = tmp_path / "run"
    spec = resolve_run(datadir, out, variant="seed", overrides={"steps": 2, "batch_size": 2, "tensorboard": False},
                       unet_overrides={"width": 0.125}, device="cpu")
    assert spec.unet_config == geometry_unet_config(datadir.config, "seed", width=0.125)
    assert spec.train_config == TrainConfig(steps=2, batch_size=2, tensorboard=False)
    assert spec.start_step == 0 and spec.resumed is None and spec.input_config == datadir.config and not spec.plain
    assert spec.manifest_hash == datadir.manifest_hash and str(spec.device) == "cpu" and spec.env.world_size == 1
    assert not out.exists()  # resolving writes nothing
    # epochs set the steps (9.8 crops of 128 frames per epoch: see test_train_config_validation_and_epochs)
    assert resolve_run(datadir, out, TrainConfig(batch_size=4), TINY, epochs=2).train_config.steps == 5
    # a target given for a new run wins; patch_frames is the TrainConfig's
    spec2 = resolve_run(datadir, out, TrainConfig(patch_frames=64), TINY, target="accompaniment")
    assert (spec2.unet_config.target, spec2.unet_config.patch_frames) == ("accompaniment", 64)
    # no UNetConfig for a new run: refused
    with pytest.raises(StemforgeError, match="give a UNetConfig"):
        resolve_run(datadir, out, TrainConfig())
    # the rules on the request, each naming its option
    for kwargs, option in ((dict(resume=True, init=__file__), "--init"), (dict(resume=True, variant="seed"), "--variant"),
                           (dict(variant="big"), "--variant"), (dict(init=tmp_path / "none.pt"), "--init"),
                           (dict(epochs=1, overrides={"steps": 3}), "--epochs"), (dict(epochs=-1), "--epochs")):
        with pytest.raises(RequestError) as info:
            resolve_run(datadir, out, **kwargs)
        assert info.value.option == option, kwargs
    # resume: the run's configurations by default; the options given must agree with them
    done = train(datadir, out, _config(steps=1), TINY, device="cpu")
    with pytest.raises(StemforgeError, match="already holds a run"):
        resolve_run(datadir, out, variant="seed")
    again = resolve_run(datadir, out, resume=True, overrides={"steps": 3})
    assert again.start_step == done.step == 1 and again.resumed is not None
    assert again.unet_config == load_checkpoint(done.last_checkpoint).unet_config
    assert again.train_config == _config(steps=3)
    with pytest.raises(ConfigMismatchError, match="lr"):
        resolve_run(datadir, out, resume=True, overrides={"lr": 0.5})
    with pytest.raises(ConfigMismatchError, match="U-Net"):
        resolve_run(datadir, out, resume=True, unet_overrides={"width": 0.25})
    # init: the checkpoint's net and architecture, the geometry's crop, BatchNorm frozen
    tuned = resolve_run(datadir, tmp_path / "ft", init=done.model_path)
    assert tuned.unet_config == load_checkpoint(done.model_path).unet_config
    assert tuned.train_config == TrainConfig(patch_frames=128, freeze_bn=True)
    assert tuned.init_info["step"] == load_checkpoint(done.model_path).step and set(tuned.init_state) == set(load_checkpoint(done.model_path).model.state_dict())
    with pytest.raises(ConfigMismatchError, match="architecture"):
        resolve_run(datadir, tmp_path / "ft", init=done.model_path, unet_overrides={"width": 0.5})


def test_run_folder_paths_metrics_on_resume_and_model_linked_to_best(datadir, tmp_path):
    from stemforge.model.unet import UNet
    from stemforge.train.rundir import METRICS_COLUMNS, Metrics, RunDir
    from stemforge.train.setup import resolve_run

    rundir = RunDir(tmp_path / "run")
    names = {"last": "last.pt", "best": "best.pt", "model": "model.pt", "metrics": "metrics.csv", "plot": "loss.png",
             "tensorboard": "tensorboard", "info": "train.json"}
    for attr, name in names.items():
        assert getattr(rundir, attr) == tmp_path / "run" / name
    assert not rundir.holds_run()
    rundir.path.mkdir()
    metrics = Metrics(rundir, 0, tensorboard=False)
    for step in (0, 2, 4, 6):
        metrics.write({"step": step, "train_loss": 1.0 / (step + 1), "lr": 1e-3})
    metrics.close()
    # a session resumed at step 4 drops the rows after it, keeps the header and the rest
    Metrics(rundir, 4, tensorboard=False).close()
    rows = list(csv.DictReader(open(rundir.metrics)))
    assert [r["step"] for r in rows] == ["0", "2", "4"] and tuple(rows[0]) == METRICS_COLUMNS
    assert rows[1]["train_loss"] == "0.333333" and rows[1]["val_loss"] == ""
    # best.pt and model.pt are one file; last.pt is what a resume reads; no temporary file is left
    spec = resolve_run(datadir, rundir.path, _config(steps=1), TINY, device="cpu")
    model = UNet(spec.unet_config)
    rundir.save_best(spec, model, 3, 0.25)
    assert os.path.samefile(rundir.best, rundir.model) and load_checkpoint(rundir.model).extra["val_loss"] == 0.25
    rundir.save_best(spec, model, 5, 0.2)  # replaced, still linked
    assert os.path.samefile(rundir.best, rundir.model) and load_checkpoint(rundir.model).step == 5
    assert rundir.save_last(spec, model, 5, {}, None, {}, {"train_config": spec.train_config.to_dict()}) == rundir.last
    assert rundir.holds_run() and load_checkpoint(rundir.last).step == 5
    rundir.write_info(spec, "memory")
    assert '"data_mode": "memory"' in rundir.info.read_text()
    assert not [p.name for p in rundir.path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ["l1", "l2"])
def test_train_step_minimizes_the_configured_loss(kind):
    """TrainStep's loss is loss_fn of the config's kind: the value it returns is the mean
    absolute (l1) or squared (l2) error of the masked mixture, computed before the update."""
    from stemforge.model import UNet
    from stemforge.train.loop import TrainStep

    model = UNet(UNetConfig(width=0.125, dropout=0.0))
    x = torch.rand(2, 1, 512, 64, generator=torch.Generator().manual_seed(0))
    t = 0.3 * x
    with torch.no_grad():
        error = model(x) * x - t
    expected = error.abs().mean() if kind == "l1" else error.square().mean()
    step = TrainStep(model, model.parameters(), TrainConfig(loss=kind, lr=1e-3), torch.device("cpu"))
    assert step(0, x, t).item() == pytest.approx(expected.item(), rel=1e-5)
