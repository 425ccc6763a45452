"""``stemforge evaluate --estimates``: the folders ``stemforge separate`` writes, scored with the
MUSDB18 protocol (on a synthetic MUSDB18-HQ tree and, with $STEMFORGE_REAL_DATA, on real
MUSDB18 .stem.mp4 tracks), and ``--reference-dir``: reference stems of songs outside MUSDB18
against estimates. The figures of a separate output folder equal those of the same model scored
directly; the reference mode equals BSS Eval v4 computed on the files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core import audio
from stemforge.evaluate.bss import bss_eval_v4, frame_medians

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny random U-Net checkpoint at the seed geometry (16 kHz mono, applied full band)."""
    from stemforge.core.config import SpectrogramConfig
    from stemforge.model import UNet, UNetConfig, save_checkpoint

    cfg = UNetConfig(width=0.125)
    net = UNet(cfg, generator=torch.Generator().manual_seed(3))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "model.pt", net, cfg, SpectrogramConfig(), "vocals", 0)


def _run(args: list[str]):
    return runner.invoke(app, [str(a) for a in args])


def _frames(csv: Path, method: str) -> pd.DataFrame:
    t = pd.read_csv(csv)
    return t[t["method"] == method].set_index(["title", "stem"])[["sdr_frames", "sir_frames", "sar_frames", "isr_frames"]].sort_index()


def _separate_then_score_equals_the_model(model: Path, root: Path, inputs: list[Path], tmp_path: Path, template: str | None = None):
    """``separate`` the inputs into a folder, score the folder with ``--estimates`` (the
    protocol inferred from --root), and score the model itself: the same figures."""
    out = tmp_path / "sep"
    extra = ["--filename", template] if template else []
    r = _run(["separate", model, *inputs, "-o", out, "--device", "cpu", *extra])
    assert r.exit_code == 0, r.output
    r = _run(["evaluate", "--root", root, "--estimates", out, "-o", tmp_path / "est" / "r.csv", *extra])
    assert r.exit_code == 0, r.output
    assert "MUSDB18 protocol" in r.output
    r = _run(["evaluate", model, "--root", root, "-o", tmp_path / "model" / "r.csv", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    theirs = _frames(tmp_path / "est" / "r.csv", "sep")
    ours = _frames(tmp_path / "model" / "r.csv", "model")
    assert len(theirs) == 2 * len(inputs) and list(theirs.index) == list(ours.index)
    np.testing.assert_allclose(theirs.to_numpy(), ours.to_numpy(), atol=1e-3)  # float32 wav round trip
    doc = json.loads((tmp_path / "est" / "r.json").read_text())
    assert doc["meta"]["protocol"] == "musdb18" and doc["meta"]["methods"][0] == {"name": "sep", "kind": "estimates", "source": str(out)}
    return out


def test_a_separate_output_folder_is_scored_as_the_model_itself(model, tmp_path):
    from stemforge.synth.layouts import write_corpus

    root = tmp_path / "musdb"
    write_corpus(root, "musdb-hq", songs=4, seconds=3, seed=1)  # even indices train, odd test
    inputs = sorted((root / "test").glob("*/mixture.wav"))
    assert len(inputs) == 2
    out = _separate_then_score_equals_the_model(model, root, inputs, tmp_path / "a")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.parent.name for p in inputs)  # OUT/<song>/
    # another --filename: the same template finds the files
    _separate_then_score_equals_the_model(model, root, inputs, tmp_path / "b", "{stem}/{track}.{ext}")
    # a missing stem and a truncated one: one line each naming the file; the other track is not scored
    gone = out / inputs[0].parent.name / "accompaniment.wav"
    gone.unlink()
    short = out / inputs[1].parent.name / "vocals.wav"
    x, sr = sf.read(short, dtype="float32")
    sf.write(short, x[:-100], sr, subtype="FLOAT")
    r = _run(["evaluate", "--root", root, "--estimates", out, "-o", tmp_path / "c" / "r.csv"])
    assert r.exit_code == 1, r.output
    lines = [ln.strip() for ln in r.output.splitlines() if ln.strip().startswith("failed: sep / ")]
    assert len(lines) == 2, r.output
    assert f"{gone}: missing estimate (accompaniment" in lines[0]
    assert f"{short}: {len(x) - 100} samples" in lines[1] and f"the reference has {len(x)}" in lines[1]


@pytest.mark.realdata
def test_a_separate_output_folder_of_real_musdb18_tracks(model, tmp_path, real_data):
    """Two real MUSDB18 .stem.mp4 tracks: what `separate` writes for `Artist - Title.stem.mp4`
    (OUT/Artist - Title/) is scored with the MUSDB18 protocol, as the model itself."""
    root = tmp_path / "musdb"
    (root / "test").mkdir(parents=True)
    sources = sorted((real_data / "musdb18-7s" / "train").glob("*.stem.mp4"))[:2]
    for src in sources:
        os.symlink(src, root / "test" / src.name)
    _separate_then_score_equals_the_model(model, root, sorted((root / "test").iterdir()), tmp_path)


def _write_song(folder: Path, rng: np.random.Generator, rate: int, seconds: float, mixture: bool = True) -> dict[str, np.ndarray]:
    """A song's stereo reference stems ``[samples, 2]`` as written (float32): noise with a
    slow envelope (vocals, silent for its first half second) and plain noise (accompaniment)."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    v = 0.3 * rng.standard_normal((n, 2)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))[:, None]
    v[: rate // 2] = 0.0
    a = 0.2 * rng.standard_normal((n, 2))
    v, a = v.astype(np.float32).astype(np.float64), a.astype(np.float32).astype(np.float64)
    folder.mkdir(parents=True)
    stems = {"vocals": v, "accompaniment": a}
    if mixture:
        stems["mixture"] = v + a
    for name, x in stems.items():
        sf.write(folder / f"{name}.wav", x.astype(np.float32), rate, subtype="FLOAT")
    return stems


def test_reference_folder_against_separate_output(model, tmp_path):
    """Songs outside MUSDB18 (32 kHz stereo): `separate REFS/*/mixture.wav -o EST`, then
    `evaluate --reference-dir REFS --estimates EST` gives BSS Eval v4 of the files; a song
    whose reference lacks its accompaniment and an estimate of another length fail in one line
    each naming the file."""
    rng = np.random.default_rng(5)
    refs = tmp_path / "refs"
    songs = {name: _write_song(refs / name, rng, 32000, 3.0) for name in ("First Song", "Second Song")}
    est = tmp_path / "est"
    r = _run(["separate", model, *sorted(refs.glob("*/mixture.wav")), "-o", est, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = _run(["evaluate", "--reference-dir", refs, "--estimates", est, "-o", tmp_path / "eval" / "r.csv"])
    assert r.exit_code == 0, r.output
    assert any(ln.startswith("Reference folder: your references and estimates") for ln in r.output.splitlines())
    got = _frames(tmp_path / "eval" / "r.csv", "est")
    for name, stems in songs.items():
        ests = [audio.load(est / name / f"{stem}.wav")[0].T for stem in ("vocals", "accompaniment")]
        med = frame_medians(bss_eval_v4(np.stack([stems["vocals"], stems["accompaniment"]]), np.stack(ests), 32000, 32000))
        for j, stem in enumerate(("vocals", "accompaniment")):
            for k in ("sdr", "sir", "sar", "isr"):
                assert got.loc[(name, stem), f"{k}_frames"] == pytest.approx(med[k][j], abs=1e-3)
    doc = json.loads((tmp_path / "eval" / "r.json").read_text())
    assert doc["meta"]["protocol"] == "references" and doc["meta"]["tracks"] == 2
    assert {s["method"] for s in doc["summary"]} == {"est", "mixture", "oracle"}
    assert (tmp_path / "eval" / "r-museval" / "est" / "First Song.json").is_file()
    # refusals: a reference without accompaniment, an estimate cut short
    (refs / "Second Song" / "accompaniment.wav").unlink()
    x, sr = sf.read(est / "First Song" / "vocals.wav", dtype="float32")
    sf.write(est / "First Song" / "vocals.wav", x[:-10], sr, subtype="FLOAT")
    r = _run(["evaluate", "--reference-dir", refs, "--estimates", est, "-o", tmp_path / "bad" / "r.csv"])
    assert r.exit_code == 1, r.output  # the floor and the ceiling of First Song were scored
    failures = [ln.strip() for ln in r.output.splitlines() if ln.strip().startswith(("failed: ", "error:"))]
    assert any(f"{est / 'First Song' / 'vocals.wav'}: {len(x) - 10} samples" in ln for ln in failures), r.output
    assert any(f"{refs / 'Second Song' / 'accompaniment.wav'}: missing reference" in ln for ln in failures), r.output


def test_one_reference_pair_outside_musdb18(tmp_path):
    """REFS and EST each hold one song's vocals.wav and accompaniment.wav (no mixture file):
    the pair is scored; an estimate at another rate is refused naming the file."""
    rng = np.random.default_rng(7)
    stems = _write_song(tmp_path / "my song", rng, 22050, 2.5, mixture=False)
    est = tmp_path / "my estimate"
    est.mkdir()
    e_v = stems["vocals"] + 0.3 * stems["accompaniment"]
    e_a = 0.9 * stems["accompaniment"] + 0.1 * stems["vocals"]
    sf.write(est / "vocals.wav", e_v.astype(np.float32), 22050, subtype="FLOAT")
    sf.write(est / "accompaniment.flac", e_a.astype(np.float32), 22050, subtype="PCM_24")
    r = _run(["evaluate", "--reference-dir", tmp_path / "my song", "--estimates", est, "-o", tmp_path / "e" / "r.csv"])
    assert r.exit_code == 0, r.output
    got = _frames(tmp_path / "e" / "r.csv", "my estimate")
    x_a, _ = audio.load(est / "accompaniment.flac")
    med = frame_medians(bss_eval_v4(np.stack([stems["vocals"], stems["accompaniment"]]), np.stack([e_v, x_a.T]), 22050, 22050))
    assert got.loc[("my song", "vocals"), "sdr_frames"] == pytest.approx(med["sdr"][0], abs=1e-3)
    assert got.loc[("my song", "accompaniment"), "sdr_frames"] == pytest.approx(med["sdr"][1], abs=1e-3)
    sf.write(est / "vocals.wav", e_v.astype(np.float32), 44100, subtype="FLOAT")
    r = _run(["evaluate", "--reference-dir", tmp_path / "my song", "--estimates", est, "-o", tmp_path / "f" / "r.csv"])
    assert r.exit_code == 1, r.output  # the floor and the ceiling were scored, the estimate refused
    assert f"{est / 'vocals.wav'}: sample rate 44100 Hz, the reference is 22050 Hz" in r.output


def test_usage_of_the_reference_and_estimate_options(tmp_path):
    for args, hint in (
        (["evaluate", "--reference-dir", tmp_path], "MODEL"),  # nothing to score
        (["evaluate", "--reference-dir", tmp_path, "--root", tmp_path, "--estimates", tmp_path], "--reference-dir"),
        (["evaluate", "--protocol", "musdb18", "--reference-dir", tmp_path, "--root", tmp_path, "--estimates", tmp_path], "--reference-dir"),
        (["evaluate", "--root", tmp_path, "--estimates", tmp_path, "--filename", "{track}.{ext}"], "--filename"),
        (["evaluate", "--root", tmp_path, "--filename", "{stem}.{ext}"], "--filename"),
        (["evaluate", "--reference-dir", tmp_path, "--estimates", tmp_path, "--frames"], "--protocol"),
    ):
        r = _run(args)
        assert r.exit_code == 2, (args, r.output)
        assert hint in r.output, (args, r.output)
