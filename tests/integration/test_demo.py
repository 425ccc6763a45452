"""A shortened `stemforge demo`: every stage runs, the outputs exist, the model beats the mixture."""

from __future__ import annotations

import pytest

from stemforge.demo import HELD_OUT_NAME, DemoConfig, figure_title, run_demo

from conftest import ROOT


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory):
    """A shortened demo (8 songs of 12 s, 3 pairs, 60 steps): ``(result, stages, events)``."""
    stages, events = [], []
    result = run_demo(
        tmp_path_factory.mktemp("demo") / "demo",
        DemoConfig(songs=8, seconds=12.0, pairs=3, workers=1, steps=60, seed=0),
        lambda name, message: stages.append(name),
        train_progress=events.append,
    )
    return result, stages, events


@pytest.mark.slow
def test_short_demo_runs_every_stage_and_beats_the_mixture(short_demo):
    result, stages, events = short_demo
    assert ["synth", "ingest", "augment", "train", "separate", "evaluate"] == list(dict.fromkeys(stages))
    for path in [*result.separated.values(), result.figure, result.loss_plot, result.model, *result.report.values()]:
        assert path.exists() and path.stat().st_size > 0, path
    assert result.steps == 60
    s = result.summary
    assert set(s["method"]) == {"model", "mixture", "oracle"}
    # 60 steps of the narrow model: a modest bound (the default demo reaches about 6 dB)
    gain = result.sdr("model", column="gnsdr")
    assert gain >= 1.0, f"model vocals NSDR {gain:.2f} dB after 60 steps"
    assert result.sdr("oracle") > result.sdr("model") > result.sdr("mixture")
    # the synthetic pairs hold one deliberately wrong pair: it is refused (for its alignment), the
    # others are stored; the note says in one short line that the refusal is expected
    assert len(result.refused) == 1 and "alignment score" in result.refused[0][1]
    assert len(result.notes) == 1 and "as expected" in result.notes[0] and len(result.notes[0]) < 100
    # the training progress reaches the caller (the CLI draws it)
    kinds = [e.kind for e in events]
    assert "start" in kinds and sum(k == "step" for k in kinds) == 60
    assert any(e.kind == "step" and e.train_loss is not None for e in events)
    assert any(e.kind == "validation" for e in events)


def test_figure_title_says_held_out_once():
    title = figure_title(*HELD_OUT_NAME)
    assert title.lower().count("held out") == 1 and "not trained on" in title


def test_train_config_puts_every_validation_on_a_multiple():
    from stemforge.demo import train_config

    for asked in (20, 60, 61, 137, 1151, 5000):
        c = train_config(asked, DemoConfig())
        assert c.steps % c.val_every == 0 and c.steps // c.val_every == 6, (asked, c)
        assert c.val_every % c.log_every == 0 and c.checkpoint_every == 2 * c.val_every
        assert c.steps <= max(asked, 60)
    c = train_config(60, DemoConfig(), exact=True)  # DemoConfig.steps: exactly these steps
    assert (c.steps, c.val_every, c.checkpoint_every) == (60, 10, 20)


@pytest.mark.slow
def test_a_budget_filling_demo_trains_in_one_session_validating_at_the_multiples(short_demo, tmp_path):
    """With a time budget (no DemoConfig.steps) the run is one training session: one data line,
    one start, and validations exactly at the multiples of val_every, the last on the last step
    (on the short demo's DataDir)."""
    import pandas as pd

    from stemforge.demo import _train

    events = []
    result = _train(short_demo[0].data, tmp_path / "run", DemoConfig(minutes=0.5, workers=1, seed=0), events.append)
    kinds = [e.kind for e in events]
    assert kinds.count("data") == 1 and kinds.count("start") == 1, kinds
    validated = [e.step for e in events if e.kind == "validation"]
    step_every = validated[1] - validated[0]
    assert validated == [k * step_every for k in range(7)] and validated[-1] == result.step, validated
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(metrics.dropna(subset=["val_loss"])["step"]) == validated


def test_one_demo_duration_from_one_place():
    """How long the demo takes is written once (stemforge.cli.demo.MEASURED): `demo --help` says it,
    the README quotes it, and DemoConfig gives no figure of its own."""
    import re

    from typer.testing import CliRunner

    from stemforge.cli.demo import MEASURED
    from stemforge.cli.main import app

    flat = lambda text: " ".join(text.split())  # noqa: E731
    readme = flat((ROOT / "README.md").read_text())
    assert MEASURED in flat(CliRunner().invoke(app, ["demo", "--help"]).output)
    assert MEASURED in readme
    assert not re.search(r"\d+(\.\d+)?(-\d+)? minutes", DemoConfig.__doc__)
    assert not re.search(r"demo\W[^.]*(under|about) \d+ minutes", readme.replace(MEASURED, ""))
