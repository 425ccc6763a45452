"""The MUSDB18 protocol: BSS Eval v4 on stereo images (equal to museval), MUSDB18 discovery and
subsets, scoring estimates on disk with one-line refusals, and the report files. On real MUSDB18
tracks: tests/integration/test_musdb18_protocol_real.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import import_museval
from stemforge.core.errors import StemforgeError
from stemforge.evaluate import musdb18
from stemforge.evaluate.bss import BssEvalV4, bss_eval_v4

SR = 8000
STEMS = ("mixture", "drums", "bass", "other", "vocals")


def _song(rng: np.random.Generator, seconds: float) -> dict[str, np.ndarray]:
    """Stereo [samples, 2] stems with some structure (a tone and noise per stem)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = {}
    for k, (f, g) in enumerate(((110.0, 0.3), (55.0, 0.2), (440.0, 0.15), (660.0, 0.25))):
        env = 0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.1 * k) * t)
        sig = g * env * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(n)
        out[("drums", "bass", "other", "vocals")[k]] = np.stack([sig, 0.8 * sig + 0.02 * rng.standard_normal(n)], axis=1)
    out["vocals"][int(1.0 * SR) : int(2.0 * SR)] = 0.0  # a silent second: undefined frames
    out["mixture"] = out["drums"] + out["bass"] + out["other"] + out["vocals"]
    return out


def _hq_corpus(root: Path, names: dict[str, list[str]], seconds: float = 5.0, seed: int = 0) -> dict[str, dict]:
    """A MUSDB18-HQ layout ``{subset}/{name}/{stem}.wav`` (float wavs); returns name -> stems."""
    rng = np.random.default_rng(seed)
    songs = {}
    for subset, items in names.items():
        for name in items:
            folder = root / subset / name
            folder.mkdir(parents=True)
            s = _song(rng, seconds)
            for stem in STEMS:
                sf.write(folder / f"{stem}.wav", s[stem].astype(np.float32), SR, subtype="FLOAT")
            songs[name] = s
    return songs


def _write_estimates(root: Path, subset: str, name: str, vocals: np.ndarray, acc: np.ndarray, rate: int = SR) -> None:
    folder = root / subset / name
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "vocals.wav", vocals.astype(np.float32), rate, subtype="FLOAT")
    sf.write(folder / "accompaniment.wav", acc.astype(np.float32), rate, subtype="FLOAT")


def test_stereo_v4_equals_museval():
    museval = import_museval()
    rng = np.random.default_rng(1)
    s = _song(rng, 6.0)
    refs = np.stack([s["vocals"], s["drums"] + s["bass"] + s["other"]])
    est_v = 0.8 * refs[0] + 0.1 * refs[1] + 0.01 * rng.standard_normal(refs[0].shape)
    est_v[:, 1] = np.convolve(est_v[:, 0], [0.6, 0.3], mode="same")  # a spatial distortion
    est = np.stack([est_v, refs.sum(axis=0) - est_v + 0.01 * rng.standard_normal(refs[0].shape)])
    mine = bss_eval_v4(refs, est, window=SR, hop=SR)
    theirs = dict(zip(("sdr", "isr", "sir", "sar"), museval.evaluate(refs, est, win=SR, hop=SR)))
    np.testing.assert_array_equal(np.isnan(mine["sdr"]), np.isnan(theirs["sdr"]))
    assert np.isnan(mine["sdr"]).any()  # the silent second is left out
    for k in theirs:
        ok = ~np.isnan(theirs[k])
        assert np.max(np.abs(mine[k][ok] - theirs[k][ok])) < 1e-6, k


def test_mono_images_are_the_single_channel_case():
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((2, 3 * SR))
    est = refs + 0.2 * refs[::-1] + 0.05 * rng.standard_normal(refs.shape)
    a = bss_eval_v4(refs, est, SR, SR)
    b = bss_eval_v4(refs[..., None], est[..., None], SR, SR)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-9)
    with pytest.raises(StemforgeError, match="differ in shape"):
        BssEvalV4(refs[..., None]).evaluate(np.repeat(est[..., None], 2, axis=2), SR, SR)


def test_tracks_subsets_and_the_validation_list(tmp_path):
    valid_name = "Actions - One Minute Smile"  # on MUSDB18's official validation list
    _hq_corpus(tmp_path, {"train": [valid_name, "Zed - Train Song"], "test": ["Alpha - Test Song", "Beta - Other Song"]}, 1.0)
    test = musdb18.find_tracks(tmp_path, "test")
    assert [t.name for t in test] == ["Alpha - Test Song", "Beta - Other Song"] and {t.split for t in test} == {"test"}
    train = {t.name: t.split for t in musdb18.find_tracks(tmp_path, "train")}
    assert train == {valid_name: "valid", "Zed - Train Song": "train"}
    assert len(musdb18.find_tracks(tmp_path, "test", limit=1)) == 1
    with pytest.raises(StemforgeError, match="subset"):
        musdb18.find_tracks(tmp_path, "valid")


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
