"""What tests/unit/evaluate/test_evaluate.py and tests/integration/test_evaluate_commands.py share."""

from __future__ import annotations


import pytest


@pytest.fixture(scope="module")
def datadir_and_model(tmp_path_factory):
    import torch

    from stemforge.ingest.engine import ingest
    from stemforge.recipes import get_recipe
    from stemforge.store import DataDir
    from stemforge.synth.layouts import write_corpus
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.model import UNet, UNetConfig

    root = tmp_path_factory.mktemp("evaluate")
    write_corpus(root / "corpus", layout="dsd100", songs=3, seconds=4, seed=3)
    dd = DataDir.create(root / "data")
    report = ingest(dd, get_recipe("dsd100").discover(root / "corpus"), workers=1)
    assert not report.failed and len(report.ingested) == 3
    cfg = UNetConfig(width=0.125)
    model = UNet(cfg, generator=torch.Generator().manual_seed(1))
    ck = save_checkpoint(root / "model.pt", model, cfg, dd.config, "vocals", 0)
    return root, dd, ck

