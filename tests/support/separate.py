"""What tests/unit/separate/test_separate.py and tests/integration/test_separate_startup.py share."""

from __future__ import annotations

import numpy as np
import pytest

from stemforge.core.config import SpectrogramConfig


CFG = SpectrogramConfig()


def tiny_model(target: str = "vocals", seed: int = 1) -> UNet:
    import torch

    from stemforge.model import UNet, UNetConfig

    return UNet(UNetConfig(width=0.125, target=target), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def song44():
    """6 s synthetic song, 44.1 kHz stereo: (mixture [2, n], vocals [2, n], accompaniment [2, n])."""
    from stemforge.synth.songs import synthesize_song

    s = synthesize_song(np.random.default_rng(5), 6.0, 44100, stereo=True)
    acc = s.drums + s.bass + s.other
    return s.mixture, s.vocals, acc


def _checkpoint(path, target="vocals"):
    from stemforge.model.checkpoint import save_checkpoint

    model = tiny_model(target)
    return save_checkpoint(path, model, model.config, CFG, target, 0)

