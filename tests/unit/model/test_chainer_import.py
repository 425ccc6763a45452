"""Import of the seed's Chainer weights: the converted model reproduces Chainer's output.

The fixtures under tests/data/chainer/ were made by tools/make_chainer_fixture.py with Chainer
7.8.1: width-reduced copies of the seed's network (kernel 4 saved under the ``unet/`` prefix,
and kernel 5 without prefix) with random weights and BatchNorm statistics, an input and
Chainer's test-mode output.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import CheckpointError
from stemforge.model.chainer import convert_chainer_npz, expected_chainer_keys, import_chainer_npz, read_chainer_npz
from stemforge.model.checkpoint import load_checkpoint
from stemforge.model import UNet

from conftest import ROOT, TEST_DATA

DATA = TEST_DATA / "chainer"
FIXTURES = {"unet_k4_w0125": (4, 0.125, "unet/"), "unet_k5_w00625": (5, 0.0625, "")}
TOLERANCE = 1e-4


def _io(name: str) -> tuple[torch.Tensor, np.ndarray]:
    with np.load(DATA / f"{name}.io.npz") as io:
        return torch.from_numpy(io["x"]), io["y"]


def _run(model: UNet, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).numpy()


def _arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{name}.model") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_converted_model_matches_chainer(name: str) -> None:
    kernel_size, width, _ = FIXTURES[name]
    model = import_chainer_npz(DATA / f"{name}.model")
    assert model.config.kernel_size == kernel_size and model.config.width == width
    assert not model.training
    x, expected = _io(name)
    assert np.abs(_run(model, x) - expected).max() < TOLERANCE


def test_chainer_batchnorm_eps_matters() -> None:
    """PyTorch's default eps (1e-5) would not reproduce the Chainer output: the fixtures have
    channels whose variance is of the order of eps."""
    model = import_chainer_npz(DATA / "unet_k4_w0125.model")
    other = UNet(dataclasses.replace(model.config, bn_eps=1e-5)).eval()
    other.load_state_dict(model.state_dict())
    x, expected = _io("unet_k4_w0125")
    assert np.abs(_run(other, x) - expected).max() > 1e-2


def test_state_dict_mapping() -> None:
    config, state = read_chainer_npz(DATA / "unet_k4_w0125.model")
    arrays = _arrays("unet_k4_w0125")
    assert np.array_equal(state["conv3.weight"].numpy(), arrays["unet/conv3/W"])
    assert np.array_equal(state["deconv2.weight"].numpy(), arrays["unet/deconv2/W"])
    assert np.array_equal(state["denorm4.running_var"].numpy(), arrays["unet/denorm4/avg_var"])
    assert np.array_equal(state["norm2.weight"].numpy(), arrays["unet/norm2/gamma"])
    assert state["norm1.num_batches_tracked"].item() == int(arrays["unet/norm1/N"])
    assert config.target == "vocals"


def test_other_prefix_and_foreign_keys_outside_it(tmp_path) -> None:
    """A trainer snapshot keeps the model under updater/model:main/ next to optimizer state."""
    arrays = _arrays("unet_k5_w00625")
    snapshot = {f"updater/model:main/predictor/{k}": v for k, v in arrays.items()}
    snapshot.update({f"updater/optimizer:main/predictor/{k}/m": v for k, v in arrays.items()})
    snapshot["updater/iteration"] = np.array(1000)
    # Older Chainer versions store no N.
    snapshot = {k: v for k, v in snapshot.items() if not k.endswith("/N")}
    path = tmp_path / "snapshot_iter_1000"
    np.savez(path, **snapshot)
    model = import_chainer_npz(path.with_suffix(".npz"))
    x, expected = _io("unet_k5_w00625")
    assert np.abs(_run(model, x) - expected).max() < TOLERANCE


def test_missing_and_unexpected_keys_are_listed(tmp_path) -> None:
    arrays = _arrays("unet_k4_w0125")
    del arrays["unet/deconv3/W"], arrays["unet/norm5/avg_var"]
    arrays["unet/conv7/W"] = np.zeros(3, np.float32)
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError) as info:
        read_chainer_npz(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys (2): unet/norm5/avg_var, unet/deconv3/W" in message
    assert "unexpected keys (1): unet/conv7/W" in message


def test_foreign_npz_lists_what_is_missing(tmp_path) -> None:
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.zeros(3), bias=np.zeros(1))
    with pytest.raises(CheckpointError) as info:
        import_chainer_npz(path)
    message = str(info.value)
    assert f"missing keys ({len(expected_chainer_keys())})" in message
    assert "conv1/W" in message and "denorm5/avg_var" in message
    assert "unexpected keys (2): bias, weights" in message


def test_not_an_npz(tmp_path) -> None:
    junk = tmp_path / "unet.model"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="unet.model: not a Chainer npz"):
        import_chainer_npz(junk)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(4))
    with pytest.raises(CheckpointError, match="single numpy array"):
        import_chainer_npz(npy)
    with pytest.raises(CheckpointError, match="no such file"):
        import_chainer_npz(tmp_path / "absent.model")


def test_shapes_that_are_not_the_unet(tmp_path) -> None:
    arrays = _arrays("unet_k4_w0125")
    arrays["unet/conv4/W"] = np.zeros((17, 8, 4, 4), np.float32)
    path = tmp_path / "odd.npz"
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="unet/conv4/W|conv4/W: \\(17, 8, 4, 4\\)"):
        import_chainer_npz(path)


def test_two_networks_in_one_file(tmp_path) -> None:
    arrays = _arrays("unet_k5_w00625")
    both = {**{f"a/{k}": v for k, v in arrays.items()}, **{f"b/{k}": v for k, v in arrays.items()}}
    path = tmp_path / "two.npz"
    np.savez(path, **both)
    with pytest.raises(CheckpointError, match="several U-Nets"):
        import_chainer_npz(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_weights_that_are_not_numbers_are_refused(tmp_path, bad: float) -> None:
    """issue 16.6: a NaN or inf weight would make `separate` write all-NaN stems."""
    arrays = _arrays("unet_k4_w0125")
    arrays["unet/deconv2/W"] = arrays["unet/deconv2/W"].copy()
    arrays["unet/deconv2/W"][0, 0, 1, 1] = bad
    arrays["unet/norm3/avg_var"] = np.full_like(arrays["unet/norm3/avg_var"], bad)
    path = tmp_path / "nan.npz"
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError) as info:
        import_chainer_npz(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "not all finite" in message
    assert "deconv2.weight" in message and "norm3.running_var" in message
    out = tmp_path / "nan.pt"
    with pytest.raises(CheckpointError, match="not all finite"):
        convert_chainer_npz(path, out)
    assert not out.exists()


def _forged_npz(path: Path, shape: tuple[int, ...], payload: int) -> Path:
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    buf.write(bytes(payload))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("conv1/W.npy", buf.getvalue())
    return path


def test_an_npz_header_claiming_terabytes_is_one_line(tmp_path) -> None:
    """issue 16.6: np.load would try to allocate 4 TB and raise _ArrayMemoryError."""
    path = _forged_npz(tmp_path / "huge.npz", (10**6, 10**6), 64)
    with pytest.raises(CheckpointError) as info:
        read_chainer_npz(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "(1000000, 1000000)" in message and "4,000,000,000,000 bytes" in message and "holds 64 bytes" in message
    # A header that tells the truth passes this check (and fails later for its keys).
    honest = _forged_npz(tmp_path / "honest.npz", (4, 4), 64)
    with pytest.raises(CheckpointError, match="missing keys"):
        read_chainer_npz(honest)


def test_convert_to_checkpoint(tmp_path) -> None:
    out = convert_chainer_npz(DATA / "unet_k4_w0125.model", tmp_path / "model.pt", target="accompaniment")
    ckpt = load_checkpoint(out)
    assert ckpt.target == "accompaniment" and ckpt.unet_config.target == "accompaniment"
    assert ckpt.step == 0 and ckpt.spectrogram_config == SpectrogramConfig()
    assert ckpt.extra == {"imported_from": "unet_k4_w0125.model", "source": "chainer"}
    x, expected = _io("unet_k4_w0125")
    assert np.abs(_run(ckpt.model, x) - expected).max() < TOLERANCE


def _app() -> typer.Typer:
    from stemforge.cli import chainer as command

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    command.register(app)
    return app


def test_cli_import_chainer(tmp_path) -> None:
    runner = CliRunner()
    app = _app()
    out = tmp_path / "model.pt"
    result = runner.invoke(app, ["import-chainer", str(DATA / "unet_k5_w00625.model"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "kernel 5" in result.output
    assert load_checkpoint(out).target == "vocals"

    again = runner.invoke(app, ["import-chainer", str(DATA / "unet_k5_w00625.model"), "-o", str(out)])
    assert again.exit_code == 3 and "--force" in again.output
    forced = runner.invoke(
        app, ["import-chainer", str(DATA / "unet_k5_w00625.model"), "-o", str(out), "--force", "--target", "accompaniment"]
    )
    assert forced.exit_code == 0, forced.output
    assert load_checkpoint(out).target == "accompaniment"

    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not an npz at all")
    bad = runner.invoke(app, ["import-chainer", str(junk), "-o", str(tmp_path / "x.pt")])
    assert bad.exit_code == 3 and "not a Chainer npz" in bad.output
    assert not (tmp_path / "x.pt").exists()

    arrays = _arrays("unet_k5_w00625")
    arrays["conv1/b"] = np.full_like(arrays["conv1/b"], np.nan)
    np.savez(tmp_path / "nan.npz", **arrays)
    nan = runner.invoke(app, ["import-chainer", str(tmp_path / "nan.npz"), "-o", str(tmp_path / "x.pt")])
    assert nan.exit_code == 3 and "not all finite" in nan.output and "conv1.bias" in nan.output
    assert not (tmp_path / "x.pt").exists()

    wrong_target = runner.invoke(app, ["import-chainer", str(junk), "-o", str(tmp_path / "x.pt"), "--target", "drums"])
    assert wrong_target.exit_code == 2

    help_text = runner.invoke(app, ["import-chainer", "--help"]).output
    assert "Example: stemforge import-chainer unet.model -o model.pt" in help_text


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_chainer_fixture", ROOT / "tools/make_chainer_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_against_chainer_directly(tmp_path) -> None:
    """Where Chainer is installed, build the full-size seed network and compare (kernel 4)."""
    pytest.importorskip("chainer")
    fixture = _fixture_module()
    fixture.make(tmp_path, "full", 4, 1.0, 1, 64, "unet", 1)
    model = import_chainer_npz(tmp_path / "full.model")
    x, expected = (lambda io: (torch.from_numpy(io["x"]), io["y"]))(np.load(tmp_path / "full.io.npz"))
    assert np.abs(_run(model, x) - expected).max() < TOLERANCE


@pytest.mark.skipif(not os.environ.get("STEMFORGE_CHAINER_FULL"), reason="set STEMFORGE_CHAINER_FULL=DIR (tools/make_chainer_fixture.py --full DIR)")
def test_full_size_fixture() -> None:
    folder = Path(os.environ["STEMFORGE_CHAINER_FULL"])
    model = import_chainer_npz(folder / "unet_full.model")
    assert model.config.width == 1.0 and model.config.kernel_size == 4
    with np.load(folder / "unet_full.io.npz") as io:
        x, expected = torch.from_numpy(io["x"]), io["y"]
    assert np.abs(_run(model, x) - expected).max() < TOLERANCE
