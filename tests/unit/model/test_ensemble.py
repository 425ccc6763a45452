"""Ensemble checkpoints (format 3, ``stemforge ensemble``): the mean of the members' masks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import CheckpointError, ConfigMismatchError, StemforgeError
from stemforge.model import UNet, UNetConfig, count_parameters
from stemforge.model.checkpoint import (
    ENSEMBLE_FORMAT_VERSION,
    READ_VERSIONS,
    combine_checkpoints,
    ensemble_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_ensemble_checkpoint,
)
from stemforge.model.ensemble import MaskEnsemble

SMALL = UNetConfig(width=0.125)


def _net(tmp_path, name: str, seed: int, config: UNetConfig = SMALL, spec: SpectrogramConfig | None = None):
    model = UNet(config, generator=torch.Generator().manual_seed(seed)).eval()
    path = save_checkpoint(tmp_path / name, model, config, spec or SpectrogramConfig(), config.target, 100 + seed)
    return path, model


def _input(n_frames: int = 64) -> torch.Tensor:
    return torch.rand(2, 1, 512, n_frames, generator=torch.Generator().manual_seed(5))


def _write(path, payload) -> None:
    torch.save({k: v for k, v in payload.items() if k != "checksum"}, path)


def test_an_ensemble_checkpoint_holds_its_members_and_gives_their_mean_mask(tmp_path) -> None:
    a_path, a = _net(tmp_path, "a.pt", 1)
    b_path, b = _net(tmp_path, "b.pt", 2, config=UNetConfig(width=0.25))  # widths may differ
    ckpt = load_checkpoint(ensemble_checkpoints([a_path, b_path], tmp_path / "e.pt"))
    assert ENSEMBLE_FORMAT_VERSION in READ_VERSIONS and ckpt.raw["format_version"] == ENSEMBLE_FORMAT_VERSION
    assert isinstance(ckpt.model, MaskEnsemble) and not ckpt.model.training
    assert ckpt.members == 2 and ckpt.member_steps == (101, 102) and ckpt.step == 101
    assert ckpt.target == "vocals" and ckpt.targets == ("vocals",) and ckpt.unet_config == SMALL
    assert ckpt.extra == {"ensemble_of": ["a.pt", "b.pt"]}
    x = _input()
    with torch.no_grad():
        mean = (a(x) + b(x)) / 2
        got = ckpt.model(x)
        fast = ckpt.model.for_inference()(x)
    assert not torch.equal(a(x), b(x))  # the members differ, so the mean is not either
    torch.testing.assert_close(got, mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(fast, mean, rtol=0, atol=1e-5)
    summary = ckpt.summary()
    assert summary["members"] == 2 and summary["parameters"] == count_parameters(a) + count_parameters(b)
    assert load_checkpoint(a_path).summary()["members"] == 1
    # An ensemble given again is taken member by member: three nets, equal weights.
    c_path, c = _net(tmp_path, "c.pt", 3)
    three = load_checkpoint(ensemble_checkpoints([tmp_path / "e.pt", c_path], tmp_path / "e3.pt"))
    assert three.members == 3 and three.member_steps == (101, 102, 103)
    with torch.no_grad():
        torch.testing.assert_close(three.model(x), (a(x) + b(x) + c(x)) / 3, rtol=0, atol=1e-6)


def test_ensemble_refuses_nets_that_do_not_fit(tmp_path) -> None:
    a_path, _ = _net(tmp_path, "a.pt", 1)
    acc_path, _ = _net(tmp_path, "acc.pt", 2, config=dataclasses.replace(SMALL, target="accompaniment"))
    with pytest.raises(CheckpointError, match=r"acc.pt: does not fit the nets before it: net 1 has target='vocals' and net 2 target='accompaniment'"):
        ensemble_checkpoints([a_path, acc_path], tmp_path / "x.pt")
    narrow, _ = _net(tmp_path, "n.pt", 3, config=dataclasses.replace(SMALL, n_bins=128))
    with pytest.raises(CheckpointError, match="n_bins=512 and net 2 n_bins=128"):
        ensemble_checkpoints([a_path, narrow], tmp_path / "x.pt")
    hop, _ = _net(tmp_path, "h.pt", 4, spec=SpectrogramConfig(hop_length=256))
    with pytest.raises(ConfigMismatchError) as info:
        ensemble_checkpoints([a_path, hop], tmp_path / "x.pt")
    assert SpectrogramConfig().hash in str(info.value) and SpectrogramConfig(hop_length=256).hash in str(info.value)
    both = combine_checkpoints(a_path, acc_path, tmp_path / "both.pt")
    with pytest.raises(CheckpointError, match="holds vocals and accompaniment nets; an ensemble takes nets of one target"):
        ensemble_checkpoints([a_path, both], tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"at least two nets, got 1 \(from .*a.pt\)"):
        ensemble_checkpoints([a_path], tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(StemforgeError, match="members must be UNets"):
        save_ensemble_checkpoint(tmp_path / "x.pt", [UNet(SMALL), torch.nn.Identity()], SpectrogramConfig())
    with pytest.raises(StemforgeError, match="2 steps for 3 members"):
        save_ensemble_checkpoint(tmp_path / "x.pt", [UNet(SMALL)] * 3, SpectrogramConfig(), steps=[1, 2])
    with pytest.raises(StemforgeError, match="at least two nets"):
        MaskEnsemble([UNet(SMALL)])


def test_ensemble_checkpoint_errors(tmp_path) -> None:
    a_path, _ = _net(tmp_path, "a.pt", 1)
    b_path, _ = _net(tmp_path, "b.pt", 2)
    raw = torch.load(ensemble_checkpoints([a_path, b_path], tmp_path / "e.pt"), weights_only=True)
    path = tmp_path / "bad.pt"
    _write(path, {**raw, "members": raw["members"][:1]})
    with pytest.raises(CheckpointError, match="two or more nets, found 1 net"):
        load_checkpoint(path)
    second = {k: v for k, v in raw["members"][1].items() if k != "model_state"}
    _write(path, {**raw, "members": [raw["members"][0], second]})
    with pytest.raises(CheckpointError, match=r"\(member 2\): incomplete checkpoint: missing \['model_state'\]"):
        load_checkpoint(path)
    state = dict(raw["members"][0]["model_state"])
    state["conv1.bias"] = torch.full_like(state["conv1.bias"], float("inf"))
    _write(path, {**raw, "members": [{**raw["members"][0], "model_state": state}, raw["members"][1]]})
    with pytest.raises(CheckpointError, match=r"\(member 1\): weights are not all finite"):
        load_checkpoint(path)
    _write(path, {**raw, "target": "accompaniment"})
    with pytest.raises(CheckpointError, match=r"\(member 1\): target 'accompaniment' disagrees"):
        load_checkpoint(path)
    _write(path, {k: v for k, v in raw.items() if k != "members"})
    with pytest.raises(CheckpointError, match=r"missing \['members'\]"):
        load_checkpoint(path)


def test_the_separator_applies_the_mean_mask_and_train_init_refuses_an_ensemble(tmp_path) -> None:
    from stemforge.separate.separator import Separator
    from stemforge.train.setup import init_from_checkpoint

    a_path, _ = _net(tmp_path, "a.pt", 1)
    b_path, _ = _net(tmp_path, "b.pt", 2)
    e_path = ensemble_checkpoints([a_path, b_path], tmp_path / "e.pt")
    audio = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    masks = [Separator.from_checkpoint(p, device="cpu").model_mask(audio) for p in (a_path, b_path, e_path)]
    assert not np.allclose(masks[0].values, masks[1].values)
    np.testing.assert_allclose(masks[2].values, (masks[0].values + masks[1].values) / 2, rtol=0, atol=1e-5)
    with pytest.raises(CheckpointError, match="an ensemble of 2 nets .* cannot be fine-tuned"):
        init_from_checkpoint(e_path, SpectrogramConfig())


def test_cli_ensemble(tmp_path) -> None:
    from typer.testing import CliRunner

    from stemforge.cli.main import app

    a_path, _ = _net(tmp_path, "a.pt", 1)
    b_path, _ = _net(tmp_path, "b.pt", 2)
    out = tmp_path / "e.pt"
    runner = CliRunner()
    ok = runner.invoke(app, ["ensemble", str(a_path), str(b_path), "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "2 vocals nets averaged" in ok.output and load_checkpoint(out).members == 2
    again = runner.invoke(app, ["ensemble", str(a_path), str(b_path), "-o", str(out)])
    assert again.exit_code == 3 and "--force" in again.output
    one = runner.invoke(app, ["ensemble", str(a_path), "-o", str(tmp_path / "x.pt")])
    assert one.exit_code == 3 and "at least two nets" in one.output
    assert not (tmp_path / "x.pt").exists()
