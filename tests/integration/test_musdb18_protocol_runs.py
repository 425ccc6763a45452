"""The MUSDB18 protocol run whole on a synthetic MUSDB18-HQ tree: estimates on disk scored track by
track (bad ones refused in one line) and the report files. BSS Eval v4 and the discovery on their
own: tests/unit/evaluate/test_musdb18_protocol.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from stemforge.core.errors import StemforgeError
from stemforge.evaluate import musdb18

from support.musdb18_protocol import SR, _hq_corpus


def _write_estimates(root: Path, subset: str, name: str, vocals: np.ndarray, acc: np.ndarray, rate: int = SR) -> None:
    folder = root / subset / name
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "vocals.wav", vocals.astype(np.float32), rate, subtype="FLOAT")
    sf.write(folder / "accompaniment.wav", acc.astype(np.float32), rate, subtype="FLOAT")


def test_estimates_on_disk_are_scored_and_bad_ones_refused_in_one_line(tmp_path):
    corpus, est_root = tmp_path / "musdb", tmp_path / "est"
    names = ["A - Good", "B - Short", "C - Mono", "D - Missing", "E - Rate"]
    songs = _hq_corpus(corpus, {"test": names}, 4.0)
    rng = np.random.default_rng(3)
    for name, s in songs.items():
        acc = s["drums"] + s["bass"] + s["other"]
        v = s["vocals"] + 0.5 * acc + 0.01 * rng.standard_normal(acc.shape)
        a = s["mixture"] - v
        if name == "B - Short":
            _write_estimates(est_root, "test", name, v[:-10], a[:-10])
        elif name == "C - Mono":
            _write_estimates(est_root, "test", name, v[:, 0], a[:, 0])
        elif name == "E - Rate":
            _write_estimates(est_root, "test", name, v, a, rate=SR * 2)
        elif name == "A - Good":
            _write_estimates(est_root, "", name, v, a)  # DIR/<track>/ is accepted too
    methods = [musdb18.EstimatesDir(est_root, name="theirs").method()]
    events = []
    report = musdb18.evaluate_musdb18(methods, corpus, "test", progress=lambda e, *a: events.append(e))
    failed = {(m, t): r for m, t, r in report.failed}
    assert set(failed) == {("theirs", n) for n in names[1:]}
    assert "samples" in failed[("theirs", "B - Short")] and "channel" in failed[("theirs", "C - Mono")]
    assert "no estimates" in failed[("theirs", "D - Missing")] and "sample rate" in failed[("theirs", "E - Rate")]
    assert all("\n" not in r and "vocals.wav" in r or "no estimates" in r for r in failed.values())
    t = report.table
    assert set(t["method"]) == {"theirs", "mixture", "oracle"}
    assert list(t.columns) == musdb18.TABLE_COLUMNS
    assert len(t[t["method"] == "theirs"]) == 2 and len(t[t["method"] == "mixture"]) == 2 * len(names)
    # the leaky estimate sits between the floor and the ceiling on vocals
    row = lambda m: report.summary[(report.summary["method"] == m) & (report.summary["stem"] == "vocals")].iloc[0]  # noqa: E731
    assert row("mixture")["sdr"] < row("theirs")["sdr"] < row("oracle")["sdr"]
    # the summary is the median over tracks of the per-track frame medians
    mix = t[(t["method"] == "mixture") & (t["stem"] == "vocals")]
    assert row("mixture")["sdr"] == pytest.approx(float(np.median(mix["sdr_frames"])))
    assert row("mixture")["tracks"] == len(names)
    # every frame median agrees with the museval-style frames recorded for the track
    doc = report.frames["theirs"]["A - Good"]
    sdr = [f["metrics"]["SDR"] for f in doc["targets"][0]["frames"]]
    assert None in sdr  # the silent second
    good = t[(t["method"] == "theirs") & (t["stem"] == "vocals")].iloc[0]
    assert good["sdr_frames"] == pytest.approx(float(np.median([v for v in sdr if v is not None])))
    assert any(e.startswith("failed:theirs:B - Short") for e in events)


def test_the_report_files_name_the_protocol(tmp_path):
    corpus = tmp_path / "musdb"
    _hq_corpus(corpus, {"test": ["A - One", "B - Two"]}, 3.0)
    report = musdb18.evaluate_musdb18([], corpus, "test")
    paths = report.write(tmp_path / "out" / "eval.csv")
    doc = json.loads(paths["json"].read_text())
    assert doc["meta"]["protocol"] == "musdb18"
    assert "comparable with published MUSDB18 BSS Eval v4 medians" in doc["meta"]["label"]
    assert pd.read_csv(paths["csv"])["method"].tolist().count("oracle") == 4
    per_track = json.loads((paths["museval"] / "oracle" / "test" / "A - One.json").read_text())
    assert [t["name"] for t in per_track["targets"]] == ["vocals", "accompaniment"]
    assert per_track["targets"][0]["frames"][0]["duration"] == 1.0
    assert paths["png"].stat().st_size > 1000
    with pytest.raises(StemforgeError, match="nothing to evaluate"):
        musdb18.evaluate_musdb18([], corpus, "test", floor_and_ceiling=False)
