"""evaluate: BSS Eval v4 frames (checked against museval when importable), summaries, and
``stemforge evaluate`` end to end on a synthetic DataDir with a tiny random checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from stemforge.core.config import SpectrogramConfig
from conftest import import_museval
from stemforge.core.errors import StemforgeError
from stemforge.evaluate.bss import BssEvalV4, bss_eval_sources, bss_eval_v4, frame_medians
from stemforge.evaluate.datadir import SUMMARY_COLUMNS, TABLE_COLUMNS, ideal_ratio_mask, summarize
from stemforge.synth.songs import synthesize_song


@pytest.fixture(scope="module")
def stems():
    """6 s at 16 kHz: vocals (one silent second), accompaniment, and an imperfect estimate."""
    rng = np.random.default_rng(4)
    s = synthesize_song(rng, 6.0, 16000, stereo=False)
    v = s.vocals[0].astype(np.float64)
    a = (s.drums + s.bass + s.other)[0].astype(np.float64)
    v[16000 * 2 : 16000 * 3] = 0.0
    est_v = 0.8 * v + 0.15 * a + 0.01 * rng.standard_normal(len(v))
    est_a = v + a - est_v
    return np.stack([v, a]), np.stack([est_v, est_a])


def test_v4_sdr_is_the_framewise_snr_and_silent_windows_are_nan(stems):
    refs, ests = stems
    out = bss_eval_v4(refs, ests, window=16000, hop=16000)
    v4 = BssEvalV4(refs)
    assert out["sdr"].shape == (2, 6)
    for j in range(2):
        for t in range(6):
            s = refs[j, t * 16000 : (t + 1) * 16000]
            e = ests[j, t * 16000 : (t + 1) * 16000]
            if t == 2:  # silent vocals: the window is left out for both sources, as museval
                assert all(np.isnan(out[k][j, t]) for k in ("sdr", "isr", "sir", "sar"))
            else:
                assert out["sdr"][j, t] == pytest.approx(10 * np.log10(np.sum(s**2) / np.sum((e - s) ** 2)), abs=1e-9)
    # a perfect estimate: SDR +inf; window count as museval (last partial window dropped)
    assert np.all(np.isinf(v4.evaluate(refs, 16000, 16000)["sdr"][:, [0, 1, 3]]))
    assert v4.evaluate(ests, 16000, 12000)["sdr"].shape == (2, 7)
    assert v4.evaluate(ests, 10**7, 10**7)["sdr"].shape == (2, 1)
    med = frame_medians(out)
    assert med["sdr"][0] == pytest.approx(np.median(out["sdr"][0][~np.isnan(out["sdr"][0])]))
    with pytest.raises(StemforgeError):
        v4.evaluate(ests[:, :100], 16000, 16000)


def test_v4_interference_and_artifacts_move_the_right_metrics(stems):
    refs, _ = stems
    rng = np.random.default_rng(0)
    v, a = refs
    leak = np.stack([v + 0.1 * a, a + 0.1 * v])
    noisy = refs + 0.05 * rng.standard_normal(refs.shape) * np.std(refs, axis=1, keepdims=True)
    v4 = BssEvalV4(refs)
    m_leak = frame_medians(v4.evaluate(leak, 16000, 16000))
    m_noise = frame_medians(v4.evaluate(noisy, 16000, 16000))
    # interference lowers SIR, not SAR; noise lowers SAR, not SIR
    assert np.all(m_leak["sir"] < m_noise["sir"]) and np.all(m_leak["sar"] > m_noise["sar"])


def test_v4_agrees_with_museval(stems):
    museval = import_museval()
    refs, ests = stems
    mine = bss_eval_v4(refs, ests, window=16000, hop=16000)
    sdr, isr, sir, sar = museval.evaluate(refs[..., None], ests[..., None], win=16000, hop=16000)
    np.testing.assert_array_equal(np.isnan(mine["sdr"]), np.isnan(sdr))
    for key, theirs in (("sdr", sdr), ("isr", isr), ("sir", sir), ("sar", sar)):
        ok = ~np.isnan(theirs)
        assert np.max(np.abs(mine[key][ok] - theirs[ok])) < 0.01, key


def test_bss_eval_sources_whole_track(stems):
    refs, ests = stems
    out = bss_eval_sources(refs, ests)
    assert set(out) == {"sdr", "sir", "sar"} and out["sdr"].shape == (2,)
    # sources mode allows a 512-tap filter: a scaled copy is (nearly) perfect
    assert np.all(bss_eval_sources(refs, 0.5 * refs)["sdr"] > 60)
    # the mixture as estimate: SDR about the energy ratio of source to the other source
    mix = refs.sum(axis=0)
    sdr_mix = bss_eval_sources(refs, np.stack([mix, mix]))["sdr"]
    ratio = 10 * np.log10(np.sum(refs[0] ** 2) / np.sum(refs[1] ** 2))
    assert sdr_mix[0] == pytest.approx(ratio, abs=1.5) and sdr_mix[1] == pytest.approx(-ratio, abs=1.5)


def test_ideal_ratio_mask():
    cfg = SpectrogramConfig()
    rng = np.random.default_rng(1)
    v = rng.standard_normal(16000).astype(np.float32)
    a = np.zeros(16000, np.float32)
    m = ideal_ratio_mask(v, a, cfg)
    assert m.shape == (cfg.n_frames(16000), cfg.n_bins)
    assert np.allclose(m[np.abs(v).max() > 0], 1.0)
    assert np.all(ideal_ratio_mask(a, a, cfg) == 0)
    both = ideal_ratio_mask(v, v, cfg)
    assert np.allclose(both, 0.5)


def test_summarize_weights_by_duration():
    rows = []
    for uid, dur, nsdr, frames in (("a", 10.0, 2.0, 1.0), ("b", 30.0, 6.0, np.nan), ("c", 20.0, np.nan, 5.0)):
        rows.append(
            {"uid": uid, "duration_s": dur, "method": "model", "stem": "vocals", "sdr": nsdr, "sir": 1.0, "sar": 2.0,
             "nsdr": nsdr, "sdr_frames": frames, "sir_frames": 0.0, "sar_frames": 0.0}
        )
    s = summarize(pd.DataFrame(rows))
    assert list(s.columns) == SUMMARY_COLUMNS and len(s) == 1
    r = s.iloc[0]
    assert r["gnsdr"] == pytest.approx((10 * 2 + 30 * 6) / 40)  # NaN left out, weights by duration
    assert r["sdr_frames"] == pytest.approx(3.0)  # median over tracks, NaN left out
    assert r["tracks"] == 3 and r["hours"] == pytest.approx(60 / 3600)


@pytest.fixture(scope="module")
def datadir_and_model(tmp_path_factory):
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


def test_cli_evaluate_end_to_end(datadir_and_model):
    from stemforge.cli.main import app

    root, dd, ck = datadir_and_model
    out = root / "eval" / "report.csv"
    r = CliRunner().invoke(
        app, ["evaluate", str(ck), str(root / "data"), "--split", "all", "-o", str(out), "--device", "cpu", "--frames", "--workers", "2"]
    )
    assert r.exit_code == 0, r.output
    assert "DataDir:" in r.output and "gnsdr" in r.output and "oracle" in r.output
    table = pd.read_csv(out)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == 3 * 3 * 2 and table["uid"].nunique() == 3
    assert set(table["split"]) == set(dd.manifest["split"])
    wide = table.pivot_table(index=["uid", "stem"], columns="method", values="sdr")
    assert (wide["oracle"] > wide["mixture"] + 3).all()  # the oracle beats the mixture, every track and stem
    assert np.allclose(table.loc[table["method"] == "mixture", "nsdr"], 0.0)
    assert table[["sdr", "sir", "sar", "sdr_frames"]].notna().all().all()
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["meta"]["split"] == "all" and doc["meta"]["tracks"] == 3
    assert {(s["method"], s["stem"]) for s in doc["summary"]} == {(m, st) for m in ("model", "mixture", "oracle") for st in ("vocals", "accompaniment")}
    oracle = [s for s in doc["summary"] if s["method"] == "oracle"]
    assert all(s["gnsdr"] > 3 for s in oracle)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the default split is test: only the test songs of the DataDir
    r = CliRunner().invoke(app, ["evaluate", str(ck), str(root / "data"), "-o", str(root / "t.csv"), "--device", "cpu", "--limit", "1"])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(root / "t.csv")
    assert set(t["split"]) == {"test"}
    # frame-wise metrics are opt-in (--frames): without it their columns are empty
    assert t[["sdr_frames", "sir_frames", "sar_frames"]].isna().all().all() and t[["sdr", "sdr_v2"]].notna().all().all()
    assert "Example: stemforge evaluate" in CliRunner().invoke(app, ["evaluate", "--help"]).output


def test_cli_evaluate_errors(datadir_and_model, tmp_path):
    from stemforge.cli.main import app

    root, _, ck = datadir_and_model
    r = CliRunner().invoke(app, ["evaluate", str(ck), str(tmp_path / "nodata"), "-o", str(tmp_path / "r.csv")])
    assert r.exit_code == 3 and "nodata" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(ck), str(root / "data"), "--split", "dev"])
    assert r.exit_code == 2


def test_bss_eval_survives_a_thread_count_change():
    """torch.set_num_threads(n > 1) anywhere in the process used to break MKL's solve."""
    import torch

    from stemforge.evaluate.bss import bss_eval_sources

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 16000 * 3)).astype(np.float32)
    est = ref + 0.1 * rng.standard_normal(ref.shape).astype(np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        sdr = bss_eval_sources(ref, est)["sdr"]
    finally:
        torch.set_num_threads(before)
    assert np.all(np.abs(sdr - 20.0) < 0.5)


def test_report_rows_have_no_non_finite_numbers():
    """JSON has no NaN or infinity: both protocols' reports write them as null."""
    import json

    import pandas as pd

    from stemforge.evaluate.datadir import json_records
    from stemforge.evaluate.musdb18 import _num

    rows = json_records(pd.DataFrame({"track": ["a", "b", "c"], "sdr": [1.5, float("inf"), float("nan")]}))
    assert rows == [{"track": "a", "sdr": 1.5}, {"track": "b", "sdr": None}, {"track": "c", "sdr": None}]
    json.dumps(rows, allow_nan=False)
    assert [_num(v) for v in (2.0, float("inf"), float("-inf"), float("nan"))] == [2.0, None, None, None]


def _gain_only_reference(refs: np.ndarray, ests: np.ndarray) -> dict[str, np.ndarray]:
    """BSS Eval v2's gain-only decomposition written out with explicit signals (BSS_EVAL 2.0's
    bss_decomp_gain + bss_crit): the allowed distortion of source j is one gain."""
    out = {k: np.zeros(len(refs)) for k in ("sdr", "sir", "sar")}
    gram = refs @ refs.T
    for j, e in enumerate(ests):
        s = refs[j]
        target = (e @ s) / (s @ s) * s
        p_all = refs.T @ np.linalg.solve(gram, refs @ e)
        interf, artif = p_all - target, e - p_all
        db = lambda a, b: 10 * np.log10(np.sum(a**2) / np.sum(b**2)) if np.any(b) else np.inf  # noqa: E731
        out["sdr"][j] = db(target, interf + artif)
        out["sir"][j] = db(target, interf)
        out["sar"][j] = db(target + interf, artif)
    return out


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:mir_eval.separation:FutureWarning")
def test_clip_scores_agree_with_mir_eval_on_real_mir1k(real_data):
    """evaluate_track on real MIR-1K clips (two training and two test singers): each row's
    whole-clip SDR/SIR/SAR equals mir_eval's bss_eval_sources (v3, compute_permutation=False)
    on the same estimates within 1e-4 dB, NSDR included, and the v2 columns equal the
    gain-only decomposition written out. The mixture's SAR is left out: the mixture lies in
    the span of the references, so its residual is rounding noise (above 100 dB in both)."""
    mir_eval = pytest.importorskip("mir_eval")
    from stemforge.core import audio
    from stemforge.evaluate.datadir import evaluate_track
    from stemforge.separate.separator import Separator

    cfg = SpectrogramConfig()
    clips = ["abjones_1_01", "amy_9_08", "Ani_1_03", "tammy_1_05"]
    worst = 0.0
    for clip in clips:
        x, sr = audio.load(real_data / "mir1k" / "Wavfile" / f"{clip}.wav")
        v, a = x[1], x[0]
        # a "model" with leakage and artifacts: the ideal ratio mask, blurred over 9 frames, squared
        irm = ideal_ratio_mask(v, a, cfg)
        blurred = np.stack([np.convolve(col, np.ones(9) / 9, mode="same") for col in irm.T], axis=1) ** 2
        model = Separator.from_mask_fn(lambda _mix, m=blurred: m.astype(np.float32), cfg, window_frames=None)
        rows = evaluate_track(model, v, a, sr, cfg, frames=False)
        mix = (v + a).astype(np.float64)
        refs = np.stack([v, a]).astype(np.float64)
        est = {"mixture": np.stack([mix, mix])}
        for method in ("model", "oracle"):
            sep = model if method == "model" else Separator.from_mask_fn(lambda _mix: irm, cfg, window_frames=None)
            out = sep.separate(v + a, sr)
            est[method] = np.stack([out["vocals"], out["accompaniment"]]).astype(np.float64)
        theirs = {m: mir_eval.separation.bss_eval_sources(refs, e, compute_permutation=False)[:3] for m, e in est.items()}
        gain = {m: _gain_only_reference(refs, e) for m, e in est.items()}
        for r in rows:
            j = 0 if r["stem"] == "vocals" else 1
            sdr, sir, sar = (t[j] for t in theirs[r["method"]])
            diffs = [r["sdr"] - sdr, r["sir"] - sir, r["nsdr"] - (sdr - theirs["mixture"][0][j])]
            diffs += [r[f"{k}_v2"] - gain[r["method"]][k][j] for k in ("sdr", "sir")]
            if r["method"] != "mixture":
                diffs += [r["sar"] - sar, r["sar_v2"] - gain[r["method"]]["sar"][j]]
            else:
                assert r["sar"] > 100 and sar > 100
            worst = max(worst, float(np.max(np.abs(diffs))))
            assert np.all(np.abs(diffs) < 1e-4), (clip, r["method"], r["stem"], diffs)
        model_v = next(r for r in rows if r["method"] == "model" and r["stem"] == "vocals")
        oracle_v = next(r for r in rows if r["method"] == "oracle" and r["stem"] == "vocals")
        assert 0 < model_v["nsdr"] < oracle_v["nsdr"]  # a real spread of values was compared
    print(f"largest difference from mir_eval over {len(clips)} clips: {worst:.2e} dB")


def test_scoring_runs_on_one_blas_thread_in_every_openblas(datadir_and_model, tmp_path):
    """numpy and scipy each load their own OpenBLAS, scipy's only when scipy.linalg is first
    imported: while tracks are scored every BLAS library present runs one thread (several
    threads contend and spin on a loaded machine), and the limits are restored afterwards. In a
    fresh interpreter, where nothing imported scipy.linalg before."""
    import subprocess
    import sys

    root, dd, ck = datadir_and_model
    script = f"""
import torch
from threadpoolctl import threadpool_info
from stemforge.evaluate.datadir import evaluate_datadir
from stemforge.separate.separator import Separator
from stemforge.store import DataDir

blas = lambda: sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
seen = []
evaluate_datadir(Separator.from_checkpoint({str(ck)!r}, device="cpu"), DataDir.open({str(root / "data")!r}), "all",
                 limit=1, progress=lambda *a: seen.append(blas()))
print(seen[-1], len(seen[-1]), blas())
"""
    env = {**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith("[1, 1] 2 "), line  # both OpenBLAS libraries at one thread while scoring
    assert line.endswith("[2, 2]"), line  # restored
