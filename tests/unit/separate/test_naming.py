"""Output planning of a batch (stemforge.separate.naming.plan_outputs): each input's paths, or one
line saying why it cannot be written, while the other inputs go on."""

from __future__ import annotations

from pathlib import Path

import pytest

from stemforge.core.errors import AudioError
from stemforge.separate.naming import PlannedOutput, plan_outputs

STEMS = ("vocals", "accompaniment")


def _paths(out: Path, track: str, ext: str = "wav") -> dict[str, Path]:
    return {s: out / track / f"{s}.{ext}" for s in STEMS}


def test_every_input_gets_its_paths_in_order(tmp_path):
    out = tmp_path / "sep"
    plans = plan_outputs(out, "{track}/{stem}.{ext}", [Path("a/One.mp3"), "b/Two.flac"], STEMS, "flac")
    assert plans == [
        PlannedOutput(Path("a/One.mp3"), _paths(out, "One", "flac")),
        PlannedOutput(Path("b/Two.flac"), _paths(out, "Two", "flac")),
    ]


def test_a_second_input_with_the_same_outputs_fails_and_names_the_first(tmp_path):
    out = tmp_path / "sep"
    a, b, c = Path("x/Song/mixture.wav"), Path("y/Song/mix.wav"), Path("z/Other.wav")
    first, second, third = plan_outputs(out, "{track}/{stem}.{ext}", [a, b, c], STEMS, "wav")
    assert first.error is None and first.paths == _paths(out, "Song")
    assert second.paths == {} and second.error.startswith(f"{b}: its output {out / 'Song' / 'vocals.wav'} is also the output of {a}")
    assert "(use --filename)" in second.error
    assert third.error is None  # the others go on


def test_an_existing_output_fails_without_force(tmp_path):
    out = tmp_path / "sep"
    (out / "Tune").mkdir(parents=True)
    (out / "Tune" / "accompaniment.wav").write_bytes(b"")
    [plan] = plan_outputs(out, "{track}/{stem}.{ext}", ["Tune.wav"], STEMS, "wav")
    assert plan.error == f"Tune.wav: {out / 'Tune' / 'accompaniment.wav'} exists (use --force to overwrite)" and plan.paths == {}
    [plan] = plan_outputs(out, "{track}/{stem}.{ext}", ["Tune.wav"], STEMS, "wav", force=True)
    assert plan.error is None and plan.paths == _paths(out, "Tune")


def test_an_unusable_name_fails_with_the_naming_reason(tmp_path):
    [bad, good] = plan_outputs(tmp_path / "sep", "{track}_{stem}.{ext}", [tmp_path / "...wav", tmp_path / "ok.wav"], STEMS, "wav")
    assert bad.error.startswith(f"{tmp_path / '...wav'}: its name gives the track name '..'")
    assert good.error is None


def test_the_probe_runs_for_free_inputs_only_and_a_failed_probe_claims_nothing(tmp_path):
    out = tmp_path / "sep"
    seen = []

    def probe(source: Path) -> float:
        seen.append(source)
        if source.parent.name == "broken":
            raise AudioError(source, "cannot decode")
        return 12.5

    sources = [Path("broken/Tune.wav"), Path("good/Tune.wav"), Path("again/Tune.wav")]
    plans = plan_outputs(out, "{track}/{stem}.{ext}", sources, STEMS, "wav", probe=probe)
    assert plans[0].error == "broken/Tune.wav: cannot decode" and plans[0].paths == {}
    assert plans[1].error is None and plans[1].info == 12.5  # the failed input did not claim Tune/
    assert "also the output of good/Tune.wav" in plans[2].error
    assert seen == sources[:2]  # a collision is found before the audio is read


def test_a_bad_template_raises(tmp_path):
    from stemforge.core.errors import OutputPathError

    with pytest.raises(OutputPathError, match="must contain"):
        plan_outputs(tmp_path, "{track}.{ext}", ["a.wav"], STEMS, "wav")
