"""Separation defaults stored with a checkpoint (``inference``, ``stemforge defaults``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import CheckpointError
from stemforge.model import UNet, UNetConfig
from stemforge.model.checkpoint import (
    combine_checkpoints,
    ensemble_checkpoints,
    load_checkpoint,
    save_checkpoint,
    set_inference_defaults,
)
from stemforge.separate.separator import Separator, mask_at_power

SMALL = UNetConfig(width=0.125)


def _net(tmp_path, name: str, seed: int, target: str = "vocals"):
    config = UNetConfig(width=0.125, target=target)
    model = UNet(config, generator=torch.Generator().manual_seed(seed)).eval()
    optimizer = torch.optim.Adam(model.parameters())
    return save_checkpoint(tmp_path / name, model, config, SpectrogramConfig(), target, 7 + seed,
                           optimizer_state=optimizer.state_dict(), extra={"note": name})


def _audio() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1


def _write(path, payload) -> None:
    torch.save({k: v for k, v in payload.items() if k != "checksum"}, path)


def test_defaults_are_stored_read_and_cleared_leaving_the_rest_as_it_was(tmp_path) -> None:
    path = _net(tmp_path, "a.pt", 1)
    before = load_checkpoint(path)
    assert before.inference == {} and before.summary()["mask_power"] is None
    assert set_inference_defaults(path, 0.5) == path
    after = load_checkpoint(path)  # the checksum was rewritten with the new key
    assert after.inference == {"mask_power": 0.5} and after.summary()["mask_power"] == 0.5
    for key in before.raw:
        if key != "checksum":
            assert repr(after.raw[key]) == repr(before.raw[key]), key  # weights, step, optimizer, extra
    copy = set_inference_defaults(path, None, tmp_path / "cleared.pt")
    assert load_checkpoint(copy).inference == {} and load_checkpoint(path).inference == {"mask_power": 0.5}
    set_inference_defaults(path, 2)  # an int is stored as a float
    assert load_checkpoint(path).inference == {"mask_power": 2.0}


def test_the_separator_uses_the_stored_power_unless_told_otherwise(tmp_path) -> None:
    plain = _net(tmp_path, "a.pt", 1)
    stored = set_inference_defaults(plain, 0.5, tmp_path / "b.pt")
    audio = _audio()
    m1 = Separator.from_checkpoint(plain, device="cpu").model_mask(audio).values
    sep = Separator.from_checkpoint(stored, device="cpu")
    assert sep.mask_power == 0.5
    np.testing.assert_allclose(sep.model_mask(audio).values, mask_at_power(m1, 0.5), rtol=0, atol=1e-5)
    assert not np.allclose(m1, mask_at_power(m1, 0.5))  # the power changes this net's mask
    assert Separator.from_checkpoint(stored, device="cpu", mask_power=1.0).mask_power == 1.0
    assert Separator.from_checkpoint(stored, device="cpu", wiener_iterations=1).mask_power == 1.0


def test_two_nets_and_ensembles_carry_defaults_too(tmp_path) -> None:
    v, a = _net(tmp_path, "v.pt", 1), _net(tmp_path, "acc.pt", 2, target="accompaniment")
    both = combine_checkpoints(v, a, tmp_path / "both.pt")
    assert Separator.from_checkpoint(both, device="cpu").mask_power == 1.5  # the two-net default
    set_inference_defaults(both, 2.0)
    assert Separator.from_checkpoint(both, device="cpu").mask_power == 2.0
    ens = ensemble_checkpoints([v, _net(tmp_path, "v2.pt", 3)], tmp_path / "e.pt")
    set_inference_defaults(ens, 0.75)
    ckpt = load_checkpoint(ens)
    assert ckpt.members == 2 and ckpt.inference == {"mask_power": 0.75}
    assert Separator.from_checkpoint(ens, device="cpu").mask_power == 0.75


def test_bad_stored_defaults_are_refused_naming_the_file(tmp_path) -> None:
    raw = torch.load(_net(tmp_path, "a.pt", 1), weights_only=True)
    path = tmp_path / "bad.pt"
    for value, message in [
        ([0.5], "separation defaults must be a dict of \\['mask_power'\\], found list"),
        ({"mask_power": 0.5, "hard": True}, "found \\['hard', 'mask_power'\\]"),
        ({"mask_power": 0.0}, "stored mask power must be a number above 0, found 0.0"),
        ({"mask_power": float("nan")}, "found nan"),
        ({"mask_power": "0.5"}, "found '0.5'"),
    ]:
        _write(path, {**raw, "inference": value})
        with pytest.raises(CheckpointError, match=f"{path.name}: .*{message}"):
            load_checkpoint(path)
    _write(path, {**raw, "inference": {"mask_power": 100.0}})  # readable, but not a power to separate with
    with pytest.raises(CheckpointError, match=f"{path.name}: cannot separate with it: mask_power must be a number in"):
        Separator.from_checkpoint(path, device="cpu")
    good = tmp_path / "a.pt"
    with pytest.raises(CheckpointError, match="stored mask power must be a number above 0, found -1"):
        set_inference_defaults(good, -1)
    assert load_checkpoint(good).inference == {}  # refused before anything was written
    with pytest.raises(CheckpointError, match="missing.pt"):
        set_inference_defaults(tmp_path / "missing.pt", 0.5)


def test_cli_defaults(tmp_path) -> None:
    from typer.testing import CliRunner

    from stemforge.cli.main import app

    path = _net(tmp_path, "a.pt", 1)
    runner = CliRunner()
    shown = runner.invoke(app, ["defaults", str(path)])
    assert shown.exit_code == 0 and "no stored defaults" in shown.output
    ok = runner.invoke(app, ["defaults", str(path), "--mask-power", "0.5"])
    assert ok.exit_code == 0 and "mask power 0.5 by default" in ok.output, ok.output
    assert "mask power 0.5" in runner.invoke(app, ["defaults", str(path)]).output
    out = tmp_path / "b.pt"
    cleared = runner.invoke(app, ["defaults", str(path), "--clear", "-o", str(out)])
    assert cleared.exit_code == 0 and load_checkpoint(out).inference == {}
    again = runner.invoke(app, ["defaults", str(path), "--clear", "-o", str(out)])
    assert again.exit_code == 3 and "--force" in again.output
    both = runner.invoke(app, ["defaults", str(path), "--clear", "--mask-power", "1"])
    assert both.exit_code == 2 and "not both" in both.output
    lonely = runner.invoke(app, ["defaults", str(path), "-o", str(tmp_path / "c.pt")])
    assert lonely.exit_code == 2 and not (tmp_path / "c.pt").exists()
    bad = runner.invoke(app, ["defaults", str(path), "--mask-power", "0"])
    assert bad.exit_code == 2
    missing = runner.invoke(app, ["defaults", str(tmp_path / "none.pt"), "--mask-power", "0.5"])
    assert missing.exit_code == 3 and "none.pt" in missing.output
    assert load_checkpoint(path).inference == {"mask_power": 0.5}  # nothing refused changed it
