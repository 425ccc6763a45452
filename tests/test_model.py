"""The U-Net (shapes, masks, parameter count, dropout RNG) and the checkpoint format."""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import CheckpointError, ConfigMismatchError, StemforgeError
from stemforge.train.checkpoint import (
    FORMAT_VERSION,
    READ_VERSIONS,
    Checkpoint,
    combine_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_nets_checkpoint,
)
from stemforge.train.model import UNet, UNetConfig, count_parameters, loss_fn, pad_frames

SMALL = UNetConfig(width=0.125)

#: Parameters of the seed's network (kernel 4, width 1): weights, biases, BatchNorm gamma/beta.
FULL_PARAMETERS_K4 = 6_288_545
FULL_PARAMETERS_K5 = 9_823_313


def _input(batch: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 512, n_frames, generator=g)


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("kernel_size", [4, 5])
@pytest.mark.parametrize("n_frames", [64, 128])
def test_full_size_shapes_and_mask_range(kernel_size: int, n_frames: int) -> None:
    model = UNet(UNetConfig(kernel_size=kernel_size)).eval()
    with torch.no_grad():
        mask = model(_input(1, n_frames))
    assert mask.shape == (1, 1, 512, n_frames)
    assert torch.all(mask > 0) and torch.all(mask < 1)


def test_parameter_count_of_the_seed_network() -> None:
    assert count_parameters(UNet(UNetConfig())) == FULL_PARAMETERS_K4
    assert count_parameters(UNet(UNetConfig(kernel_size=5))) == FULL_PARAMETERS_K5


def test_layer_shapes_follow_the_seed() -> None:
    model = UNet(UNetConfig())
    assert model.conv1.weight.shape == (16, 1, 4, 4)
    assert model.conv6.weight.shape == (512, 256, 4, 4)
    assert model.deconv1.weight.shape == (512, 256, 4, 4)
    assert model.deconv2.weight.shape == (512, 128, 4, 4)
    assert model.deconv6.weight.shape == (32, 1, 4, 4)
    assert not hasattr(model, "denorm6")
    assert model.norm1.eps == 2e-5 and model.norm1.momentum == 0.1
    k5 = UNet(UNetConfig(kernel_size=5))
    assert k5.conv1.padding == (2, 2) and k5.deconv1.output_padding == (1, 1)


def test_width_multiplier() -> None:
    config = UNetConfig(width=0.25)
    assert config.encoder_channels == (4, 8, 16, 32, 64, 128)
    assert config.decoder_channels == (64, 32, 16, 8, 4, 1)
    assert config.decoder_in_channels == (128, 128, 64, 32, 16, 8)
    tiny = UNetConfig(width=0.01)
    assert tiny.encoder_channels == (1, 1, 1, 1, 3, 5)
    model = UNet(tiny).eval()
    with torch.no_grad():
        assert model(_input(2, 64)).shape == (2, 1, 512, 64)


def test_construction_is_reproducible_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a, b = UNet(SMALL), UNet(SMALL)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = UNet(SMALL, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(a.conv3.weight, c.conv3.weight)
    assert torch.all(a.conv1.bias == 0)


def test_dropout_uses_the_given_generator() -> None:
    model = UNet(SMALL).train()
    x = _input(2, 64)

    def run(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return model(x, generator=torch.Generator().manual_seed(seed))

    before = torch.get_rng_state()
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    assert torch.equal(torch.get_rng_state(), before)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x, generator=torch.Generator().manual_seed(3)))


def test_gradients_flow() -> None:
    model = UNet(SMALL).train()
    x = _input(2, 64)
    loss = loss_fn(model(x, generator=torch.Generator().manual_seed(0)), x, 0.5 * x)
    loss.backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.deconv6.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 512, 64), (1, 2, 512, 64), (1, 1, 256, 64), (1, 1, 512, 100), (1, 1, 512, 0)])
def test_bad_input_shapes_are_refused(shape: tuple[int, ...]) -> None:
    model = UNet(SMALL)
    with pytest.raises(StemforgeError, match="UNet"):
        model(torch.zeros(shape))


def test_config_validation_hash_and_round_trip() -> None:
    assert UNetConfig(width=1).hash == UNetConfig(width=1.0).hash
    assert UNetConfig().hash != SMALL.hash
    assert UNetConfig.from_dict(SMALL.to_dict()) == SMALL
    for bad in (
        dict(kernel_size=1),
        dict(width=0),
        dict(dropout=1.0),
        dict(bn_eps=0),
        dict(n_bins=500),
        dict(target="drums"),
        dict(kernel_size=4.0),
    ):
        with pytest.raises(StemforgeError, match="UNetConfig"):
            UNetConfig(**bad)


def test_loss_fn_is_l1_of_masked_mixture() -> None:
    mixture = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.full_like(mixture, 0.5)
    target = torch.zeros_like(mixture)
    assert loss_fn(mask, mixture, target).item() == pytest.approx(1.25)
    with pytest.raises(StemforgeError, match="shapes differ"):
        loss_fn(mask, mixture, target[..., :1])


def test_pad_frames() -> None:
    x = torch.ones(2, 1, 512, 100)
    padded = pad_frames(x)
    assert padded.shape == (2, 1, 512, 128)
    assert torch.equal(padded[..., :100], x) and torch.all(padded[..., 100:] == 0)
    assert pad_frames(torch.ones(3, 64)).shape == (3, 64)
    assert pad_frames(torch.ones(3, 65), multiple=8).shape == (3, 72)
    with pytest.raises(StemforgeError):
        pad_frames(x, multiple=0)


# ---------------------------------------------------------------- checkpoint


def _trained_small_model() -> tuple[UNet, torch.optim.Optimizer]:
    model = UNet(SMALL).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = _input(2, 64)
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model(x, generator=torch.Generator().manual_seed(0)), x, 0.3 * x).backward()
        opt.step()
    return model.eval(), opt


def test_checkpoint_round_trip(tmp_path) -> None:
    model, opt = _trained_small_model()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    rng = np.random.default_rng(123)
    rng.random(5)
    rng_state = {
        "torch": torch.get_rng_state(),
        "numpy": rng.bit_generator.state,
        "legacy": np.random.RandomState(1).get_state(),  # holds an ndarray: stored as a list
        "sampler": torch.Generator().manual_seed(5).get_state(),
    }
    spec = SpectrogramConfig()
    path = save_checkpoint(
        tmp_path / "sub" / "model.pt", model, SMALL, spec, "vocals", 2,
        optimizer_state=opt.state_dict(), scaler_state=scaler.state_dict(), rng_state=rng_state,
        manifest_hash="abc123", extra={"epoch": np.int64(3), "losses": np.array([0.5, 0.25])},
    )
    assert path == tmp_path / "sub" / "model.pt"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left

    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.unet_config == SMALL and ckpt.spectrogram_config == spec
    assert ckpt.target == "vocals" and ckpt.step == 2 and ckpt.manifest_hash == "abc123"
    assert not ckpt.model.training
    x = _input(1, 128, seed=9)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))

    # Resume state survives weights_only loading.
    opt2 = torch.optim.Adam(ckpt.model.parameters(), lr=1e-3)
    opt2.load_state_dict(ckpt.optimizer_state)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert ckpt.scaler_state == scaler.state_dict()
    assert torch.equal(ckpt.rng_state["torch"], rng_state["torch"])
    restored = np.random.default_rng()
    restored.bit_generator.state = ckpt.rng_state["numpy"]
    assert restored.random() == rng.random()
    legacy = np.random.RandomState()
    legacy.set_state(ckpt.rng_state["legacy"])
    assert legacy.randint(1000) == np.random.RandomState(1).randint(1000)
    assert ckpt.extra == {"epoch": 3, "losses": [0.5, 0.25]}
    assert ckpt.raw["format_version"] == FORMAT_VERSION
    assert ckpt.summary()["parameters"] == count_parameters(model)

    ckpt.check_spectrogram_config(spec)
    with pytest.raises(ConfigMismatchError, match=str(path)):
        ckpt.check_spectrogram_config(SpectrogramConfig(hop_length=256))


def test_checkpoint_overwrite_and_argument_checks(tmp_path) -> None:
    model = UNet(SMALL)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, SMALL, SpectrogramConfig(), "vocals", 0)
    save_checkpoint(path, model, SMALL, SpectrogramConfig(), "vocals", 5)
    assert load_checkpoint(path).step == 5
    with pytest.raises(StemforgeError, match="target"):
        save_checkpoint(path, model, SMALL, SpectrogramConfig(), "accompaniment", 0)
    with pytest.raises(StemforgeError, match="unet_config"):
        save_checkpoint(path, model, UNetConfig(), SpectrogramConfig(), "vocals", 0)
    with pytest.raises(CheckpointError, match="extra"):
        save_checkpoint(path, model, SMALL, SpectrogramConfig(), "vocals", 0, extra={"f": object()})
    assert load_checkpoint(path).step == 5  # failed saves left the file alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_checkpoint_of_accompaniment_model(tmp_path) -> None:
    config = dataclasses.replace(SMALL, target="accompaniment")
    path = save_checkpoint(tmp_path / "a.pt", UNet(config), config, SpectrogramConfig(), "accompaniment", 1)
    assert load_checkpoint(path).target == "accompaniment"


class _Foreign:
    pass


def _write(path, payload) -> None:
    torch.save(payload, path)


def test_checkpoint_errors(tmp_path) -> None:
    model = UNet(SMALL)
    good = save_checkpoint(tmp_path / "good.pt", model, SMALL, SpectrogramConfig(), "vocals", 0)
    raw = torch.load(good, weights_only=True)

    with pytest.raises(CheckpointError, match="missing.pt: no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)

    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="junk.pt: not a stemforge checkpoint"):
        load_checkpoint(junk)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: not a stemforge checkpoint"):
        load_checkpoint(empty)

    bare = tmp_path / "bare.pt"
    _write(bare, model.state_dict())
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(bare)

    objects = tmp_path / "objects.pt"
    with open(objects, "wb") as f:
        pickle.dump({"x": _Foreign()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="objects.pt: not a stemforge checkpoint"):
        load_checkpoint(objects)

    whole = tmp_path / "whole.pt"
    _write(whole, model)  # a pickled module: refused by weights_only
    with pytest.raises(CheckpointError, match="Python objects"):
        load_checkpoint(whole)

    future = tmp_path / "future.pt"
    unread = max(READ_VERSIONS) + 1
    _write(future, {**raw, "format_version": unread})
    with pytest.raises(CheckpointError, match=f"future.pt: checkpoint format version {unread}"):
        load_checkpoint(future)

    incomplete = tmp_path / "incomplete.pt"
    _write(incomplete, {k: v for k, v in raw.items() if k != "model_state"})
    with pytest.raises(CheckpointError, match="missing \\['model_state'\\]"):
        load_checkpoint(incomplete)

    state = dict(raw["model_state"])
    del state["conv2.bias"]
    state["conv1.weight"] = torch.zeros(3, 1, 4, 4)
    state["extra.weight"] = torch.zeros(1)
    tampered = tmp_path / "tampered.pt"
    _write(tampered, {**raw, "model_state": state})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tampered)
    message = str(info.value)
    assert "conv2.bias" in message and "extra.weight" in message and "conv1.weight" in message

    badconf = tmp_path / "badconf.pt"
    _write(badconf, {**raw, "unet_config": {**raw["unet_config"], "colour": "red"}})
    with pytest.raises(CheckpointError, match="configuration cannot be read"):
        load_checkpoint(badconf)
