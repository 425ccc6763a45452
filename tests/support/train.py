"""What the training tests share (tests/unit/train/test_train.py, tests/integration/test_train_runs.py,
tests/integration/test_train*_commands.py): the DataDir, the tiny model, the run configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemforge.model import UNetConfig
from stemforge.train.config import TrainConfig

TINY = UNetConfig(width=0.125)


@pytest.fixture(scope="module")
def datadir(tiny_datadirs) -> DataDir:
    """Synthetic DSD100 songs: four train songs and one valid song (a name the recipe holds out),
    ingested once per session and shared read-only (conftest's tiny_datadirs)."""
    from stemforge.store import DataDir

    entries = [dict(id=51 + i, subset="Dev", artist=f"Synth Artist {i}", title=f"Song {i}") for i in range(4)]
    entries.append(dict(id=65, subset="Dev", artist="Fergessen", title="Nos Palpitants"))  # valid in DSD100
    made = tiny_datadirs.get("dsd100", songs=5, seconds=10.0, seed=3, entries=entries)  # ingest asserts nothing failed
    dd = DataDir.open(made.data)
    assert sorted(dd.manifest["split"]) == ["train"] * 4 + ["valid"]
    return dd


def _config(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=1e-2, val_every=100, val_crops=8, checkpoint_every=100, log_every=2,
                tensorboard=False, data_mode="memory", deterministic=True, seed=11)
    base.update(kw)
    return TrainConfig(**base)


def _state(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)
