"""The SIR/SAR/ISR columns are explained where they are printed (`stemforge evaluate`, `stemforge
demo`), and what the explanation says of the mixture holds for the printed values."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def datadir_and_model(tmp_path_factory):
    from stemforge.ingest.engine import ingest
    from stemforge.model import UNet, UNetConfig
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.recipes import get_recipe
    from stemforge.store import DataDir
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("notes")
    write_corpus(root / "corpus", layout="dsd100", songs=2, seconds=4, seed=5)
    dd = DataDir.create(root / "data")
    assert not ingest(dd, get_recipe("dsd100").discover(root / "corpus"), workers=1).failed
    cfg = UNetConfig(width=0.125)
    ck = save_checkpoint(root / "model.pt", UNet(cfg, generator=torch.Generator().manual_seed(1)), cfg, dd.config, "vocals", 0)
    return root, ck


def test_evaluate_prints_what_the_frame_columns_mean_under_its_table(datadir_and_model):
    from stemforge.evaluate.protocols import METRICS_NOTE
    from stemforge.cli.main import app

    root, ck = datadir_and_model
    out = root / "report.csv"
    r = CliRunner().invoke(app, ["evaluate", str(ck), str(root / "data"), "--split", "all", "-o", str(out), "--device", "cpu",
                                 "--frames"])
    assert r.exit_code == 0, r.output
    text = r.stdout
    table_end = re.search(r"^oracle +accompaniment .*$", text, re.M).end()
    note = "\n".join(METRICS_NOTE)
    assert note in text and table_end < text.index(note) < text.index("wrote csv")
    assert "median on its own" in note and "museval gives the same numbers" in note and "band-limited" in note
    # what the note explains is in what was printed: on these resampled (band-limited) references
    # the oracle's frame-wise SAR falls far below its SDR, while its whole-track SAR does not
    table = pd.read_csv(out)
    oracle = table[table["method"] == "oracle"]
    assert (oracle["sar_frames"] < oracle["sdr_frames"] - 6).any(), oracle
    assert (oracle["sar"] > oracle["sdr"]).all(), oracle


def test_demo_prints_the_note_under_its_table(tmp_path, monkeypatch):
    import stemforge.demo
    from stemforge.evaluate.protocols import METRICS_NOTE
    from stemforge.cli.main import app

    summary = pd.DataFrame([
        {"method": m, "stem": st, "sdr_mean": 1.0, "gnsdr": 0.5, "gsir": 2.0, "gsar": 130.0, "sdr_frames": 1.0}
        for m in ("model", "mixture", "oracle") for st in ("vocals", "accompaniment")
    ])
    result = stemforge.demo.DemoResult(
        out=tmp_path, data=tmp_path, run=tmp_path, model=tmp_path / "model.pt", separated={}, figure=tmp_path / "f.png",
        loss_plot=tmp_path / "l.png", report={}, summary=summary, steps=60, train_seconds=60.0,
    )
    monkeypatch.setattr(stemforge.demo, "run_demo", lambda *a, **k: result)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    table_end = re.search(r"^oracle +accompaniment .*$", r.stdout, re.M).end()
    assert table_end < r.stdout.index("\n".join(METRICS_NOTE)) < r.stdout.index("vocals SDR: model")
