"""A shortened `stemforge demo`: every stage runs, the outputs exist, the model beats the mixture."""

from __future__ import annotations

import pytest

from stemforge.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_short_demo_runs_every_stage_and_beats_the_mixture(tmp_path):
    stages = []
    result = run_demo(
        tmp_path / "demo",
        DemoConfig(songs=8, seconds=12.0, pairs=3, workers=1, steps=60, seed=0),
        lambda name, message: stages.append(name),
    )
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
    # the synthetic pairs hold one deliberately wrong pair: it is refused, the others are stored
    assert len(result.notes) == 1 and "alignment score" in result.notes[0]
