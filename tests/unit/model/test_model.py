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
from stemforge.model.checkpoint import (
    FORMAT_VERSION,
    READ_VERSIONS,
    Checkpoint,
    combine_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_nets_checkpoint,
)
from stemforge.model import UNet, UNetConfig, count_parameters, loss_fn, pad_frames

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


def test_loss_fn_is_l1_or_l2_of_masked_mixture() -> None:
    mixture = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.full_like(mixture, 0.5)
    target = torch.zeros_like(mixture)
    assert loss_fn(mask, mixture, target).item() == pytest.approx(1.25)
    assert loss_fn(mask, mixture, target, "l1").item() == pytest.approx(1.25)
    assert loss_fn(mask, mixture, target, "l2").item() == pytest.approx((0.25 + 1 + 2.25 + 4) / 4)
    with pytest.raises(StemforgeError, match="shapes differ"):
        loss_fn(mask, mixture, target[..., :1])
    with pytest.raises(StemforgeError, match="kind must be one of"):
        loss_fn(mask, mixture, target, "huber")


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
    """A hand-made file: without the checksum (as before checksums existed), so that the check
    each case is about is reached."""
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "checksum"}
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


def test_unreadable_files_say_what_they_are(tmp_path) -> None:
    """issue 15.8: one line that says what the file is, never Python internals such as
    "(IndexError: pop from empty list)"."""
    import h5py

    good = save_checkpoint(tmp_path / "good.pt", UNet(SMALL), SMALL, SpectrogramConfig(), "vocals", 0)
    data = good.read_bytes()
    cases = {
        "empty.pt": (b"", "empty"),
        "truncated.pt": (data[: len(data) // 2], "truncated or damaged"),
        "cut.pt": (data[:-20], "truncated or damaged"),
        "text.pt": (b"0123 hello\n" * 20, "not a torch file"),
        "pop.pt": (b"0" * 64, "not a torch file"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "weights.npz", a=np.zeros(3))
    cases["weights.npz"] = (None, "numpy .npz archive")
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases["array.npy"] = (None, "numpy .npy array")
    with h5py.File(tmp_path / "shard.h5", "w") as f:
        f["x"] = np.zeros(3)
    cases["shard.h5"] = (None, "HDF5 file")
    (tmp_path / "song.wav").write_bytes(b"RIFF" + bytes(40))
    cases["song.wav"] = (None, "audio file")
    for name, (_, reason) in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}: not a stemforge checkpoint: "), message
        assert reason in message and "\n" not in message, message
        for internal in ("Error:", "Traceback", "pop from", "PytorchStreamReader", "miniz"):
            assert internal not in message, message


def test_checkpoint_with_non_finite_weights_is_refused(tmp_path) -> None:
    model = UNet(SMALL)
    path = save_checkpoint(tmp_path / "m.pt", model, SMALL, SpectrogramConfig(), "vocals", 0)
    raw = torch.load(path, weights_only=True)
    state = dict(raw["model_state"])
    state["deconv4.weight"] = state["deconv4.weight"].clone()
    state["deconv4.weight"][0, 0, 0, 0] = float("nan")
    state["norm2.running_var"] = torch.full_like(state["norm2.running_var"], float("inf"))
    _write(path, {**raw, "model_state": state})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "not all finite" in message
    assert "deconv4.weight" in message and "norm2.running_var" in message


# ---------------------------------------------------------------- configs and variants


def test_default_config_hashes_never_change() -> None:
    """DataDirs and checkpoints written before channels/variant/patch_frames existed record
    these hashes."""
    assert SpectrogramConfig().hash == "937ca236a043"
    assert UNetConfig().hash == "f0cf76d6c645"
    assert SpectrogramConfig.from_dict({k: v for k, v in SpectrogramConfig().to_dict().items() if k != "channels"}) == SpectrogramConfig()
    assert SpectrogramConfig(channels=2).hash != SpectrogramConfig().hash
    assert SpectrogramConfig().to_dict()["channels"] == 1
    for changed in (dict(variant="spleeter"), dict(channels=2), dict(patch_frames=512)):
        assert UNetConfig(**changed).hash != UNetConfig().hash, changed
    for bad in (dict(channels=0), dict(channels=3), dict(channels=True), dict(normalization="rms")):
        with pytest.raises(StemforgeError, match="SpectrogramConfig"):
            SpectrogramConfig(**bad)
    for bad in (dict(variant="tf"), dict(channels=3), dict(patch_frames=100)):
        with pytest.raises(StemforgeError, match="UNetConfig"):
            UNetConfig(**bad)


def test_presets() -> None:
    assert UNetConfig.preset("seed") == UNetConfig()
    assert UNetConfig.preset("paper") == UNetConfig(kernel_size=5)
    sp = UNetConfig.preset("spleeter", target="accompaniment")
    assert (sp.variant, sp.kernel_size, sp.n_bins, sp.channels, sp.patch_frames) == ("spleeter", 5, 1024, 2, 512)
    assert (sp.bn_eps, sp.bn_momentum, sp.dropout, sp.target) == (1e-3, 0.01, 0.5, "accompaniment")
    assert sp.same_padding == (1, 2)
    with pytest.raises(StemforgeError, match="preset"):
        UNetConfig.preset("demucs")


SMALL_SPLEETER = UNetConfig.preset("spleeter", width=0.125, n_bins=128)


def test_spleeter_variant_layers() -> None:
    model = UNet(UNetConfig.preset("spleeter"))
    assert count_parameters(model) == 9_822_725
    assert model.conv1.weight.shape == (16, 2, 5, 5) and model.conv1.padding == (0, 0)
    assert model.deconv1.weight.shape == (512, 256, 5, 5)
    # Skips are encoder convolutions (pre-BatchNorm) concatenated before the decoder output.
    assert model.deconv2.weight.shape == (256 + 256, 128, 5, 5)
    assert model.deconv6.weight.shape == (16 + 16, 1, 5, 5)
    assert not hasattr(model, "norm6") and hasattr(model, "denorm6")
    assert model.mask_conv.weight.shape == (2, 1, 4, 4) and model.mask_conv.dilation == (2, 2)
    assert model.norm1.eps == 1e-3 and model.norm1.momentum == 0.01


@pytest.mark.parametrize("n_frames", [64, 192])
def test_spleeter_variant_shapes_and_mask_range(n_frames: int) -> None:
    model = UNet(SMALL_SPLEETER).eval()
    x = torch.rand(2, 2, 128, n_frames, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mask = model(x)
    assert mask.shape == (2, 2, 128, n_frames)
    assert torch.all(mask > 0) and torch.all(mask < 1)
    with pytest.raises(StemforgeError, match=r"\[batch, 2, n_bins, n_frames\]"):
        model(x[:, :1])


def test_spleeter_variant_is_not_symmetric_in_time() -> None:
    """TensorFlow's 'same' padding is 1 before and 2 after: reversing the frames of the input
    does not reverse the output (with symmetric padding and flipped kernels it would)."""
    model = UNet(SMALL_SPLEETER).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4:
                p.copy_(0.5 * (p + p.flip(3)))  # kernels symmetric in time
        x = torch.rand(1, 2, 128, 64, generator=torch.Generator().manual_seed(2))
        forward, backward = model(x), model(x.flip(3)).flip(3)
    assert (forward - backward).abs().max() > 1e-4


def test_spleeter_variant_trains_and_is_reproducible() -> None:
    before = torch.get_rng_state()
    a, b = UNet(SMALL_SPLEETER), UNet(SMALL_SPLEETER)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # He uniform: bound sqrt(6 / fan_in).
    w = UNet(UNetConfig.preset("spleeter")).conv3.weight
    bound = (6.0 / (32 * 25)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    model = a.train()
    x = torch.rand(2, 2, 128, 64, generator=torch.Generator().manual_seed(0))
    loss = loss_fn(model(x, generator=torch.Generator().manual_seed(0)), x, 0.5 * x)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), "every parameter is used"


def test_inference_net_keeps_the_spleeter_variant_exact() -> None:
    from stemforge.model.unet import inference_net

    model = UNet(SMALL_SPLEETER).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(3))
                m.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
        x = torch.rand(1, 2, 128, 64, generator=torch.Generator().manual_seed(5))
        assert torch.allclose(inference_net(model)(x), model(x), atol=1e-6)


# ---------------------------------------------------------------- two-net checkpoints


def _one_net(tmp_path, name: str, target: str, step: int, spec: SpectrogramConfig | None = None, config=SMALL):
    config = dataclasses.replace(config, target=target)
    model = UNet(config, generator=torch.Generator().manual_seed(step))
    path = save_checkpoint(tmp_path / name, model, config, spec or SpectrogramConfig(), target, step)
    return path, model


def test_two_net_checkpoint_round_trip(tmp_path) -> None:
    vocals_path, vocals = _one_net(tmp_path, "v.pt", "vocals", 7)
    acc_path, acc = _one_net(tmp_path, "a.pt", "accompaniment", 9)
    both = combine_checkpoints(vocals_path, acc_path, tmp_path / "both.pt")
    ckpt = load_checkpoint(both)
    assert ckpt.raw["format_version"] == 2 and ckpt.targets == ("vocals", "accompaniment")
    assert ckpt.steps == {"vocals": 7, "accompaniment": 9}
    assert ckpt.target == "vocals" and ckpt.model is ckpt.net("vocals") and ckpt.step == 7
    assert ckpt.extra == {"combined_from": {"vocals": "v.pt", "accompaniment": "a.pt"}}
    x = _input(1, 64)
    with torch.no_grad():
        assert torch.equal(ckpt.net("vocals")(x), vocals.eval()(x))
        assert torch.equal(ckpt.net("accompaniment")(x), acc.eval()(x))
    assert not ckpt.net("accompaniment").training
    summary = ckpt.summary()
    assert summary["target"] == "vocals+accompaniment"
    assert summary["parameters"] == 2 * count_parameters(vocals)
    # A one-net checkpoint answers the same questions.
    one = load_checkpoint(vocals_path)
    assert one.targets == ("vocals",) and one.nets == {"vocals": one.model} and one.steps == {"vocals": 7}
    with pytest.raises(CheckpointError, match="holds no accompaniment net"):
        one.net("accompaniment")


def test_combine_refuses_what_does_not_fit(tmp_path) -> None:
    vocals_path, _ = _one_net(tmp_path, "v.pt", "vocals", 1)
    acc_path, _ = _one_net(tmp_path, "a.pt", "accompaniment", 1)
    with pytest.raises(CheckpointError, match="extracts accompaniment, not vocals"):
        combine_checkpoints(acc_path, vocals_path, tmp_path / "x.pt")
    other_spec, _ = _one_net(tmp_path, "a256.pt", "accompaniment", 1, SpectrogramConfig(hop_length=256))
    with pytest.raises(ConfigMismatchError) as info:
        combine_checkpoints(vocals_path, other_spec, tmp_path / "x.pt")
    assert SpectrogramConfig().hash in str(info.value) and SpectrogramConfig(hop_length=256).hash in str(info.value)
    narrow, _ = _one_net(tmp_path, "a128.pt", "accompaniment", 1, config=dataclasses.replace(SMALL, n_bins=128))
    with pytest.raises(StemforgeError, match="different inputs"):
        combine_checkpoints(vocals_path, narrow, tmp_path / "x.pt")
    both = combine_checkpoints(vocals_path, acc_path, tmp_path / "both.pt")
    with pytest.raises(CheckpointError, match="nets already"):
        combine_checkpoints(both, acc_path, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(StemforgeError, match="one net per target"):
        save_nets_checkpoint(tmp_path / "x.pt", {"vocals": UNet(SMALL)}, SpectrogramConfig())
    with pytest.raises(StemforgeError, match="target"):
        save_nets_checkpoint(tmp_path / "x.pt", {"vocals": UNet(SMALL), "accompaniment": UNet(SMALL)}, SpectrogramConfig())


def test_two_net_checkpoint_errors(tmp_path) -> None:
    vocals_path, _ = _one_net(tmp_path, "v.pt", "vocals", 1)
    acc_path, _ = _one_net(tmp_path, "a.pt", "accompaniment", 1)
    raw = torch.load(combine_checkpoints(vocals_path, acc_path, tmp_path / "both.pt"), weights_only=True)
    path = tmp_path / "bad.pt"

    _write(path, {**raw, "nets": {"vocals": raw["nets"]["vocals"]}})
    with pytest.raises(CheckpointError, match="one per target"):
        load_checkpoint(path)
    acc = {k: v for k, v in raw["nets"]["accompaniment"].items() if k != "model_state"}
    _write(path, {**raw, "nets": {**raw["nets"], "accompaniment": acc}})
    with pytest.raises(CheckpointError, match=r"\(accompaniment net\): incomplete checkpoint: missing \['model_state'\]"):
        load_checkpoint(path)
    state = dict(raw["nets"]["accompaniment"]["model_state"])
    state["conv1.bias"] = torch.full_like(state["conv1.bias"], float("nan"))
    acc = {**raw["nets"]["accompaniment"], "model_state": state}
    _write(path, {**raw, "nets": {**raw["nets"], "accompaniment": acc}})
    with pytest.raises(CheckpointError, match=r"accompaniment net\): weights are not all finite numbers: NaN or inf in conv1.bias"):
        load_checkpoint(path)
    _write(path, {k: v for k, v in raw.items() if k != "nets"})
    with pytest.raises(CheckpointError, match=r"missing \['nets'\]"):
        load_checkpoint(path)


def test_cli_combine(tmp_path) -> None:
    from typer.testing import CliRunner

    from stemforge.cli.main import app

    vocals_path, _ = _one_net(tmp_path, "v.pt", "vocals", 3)
    acc_path, _ = _one_net(tmp_path, "a.pt", "accompaniment", 4)
    out = tmp_path / "both.pt"
    runner = CliRunner()
    ok = runner.invoke(app, ["combine", str(vocals_path), str(acc_path), "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "vocals+accompaniment" in ok.output and load_checkpoint(out).targets == ("vocals", "accompaniment")
    again = runner.invoke(app, ["combine", str(vocals_path), str(acc_path), "-o", str(out)])
    assert again.exit_code == 3 and "--force" in again.output
    swapped = runner.invoke(app, ["combine", str(acc_path), str(vocals_path), "-o", str(tmp_path / "x.pt")])
    assert swapped.exit_code == 3 and "arguments swapped" in swapped.output
    assert not (tmp_path / "x.pt").exists()
