"""evaluate: BSS Eval v4 frames (checked against museval when importable), summaries, and ``stemforge
evaluate`` end to end on a synthetic DataDir with a tiny random checkpoint. The command end to end,
a fresh process per OpenBLAS, real MIR-1K: tests/integration/test_evaluate_commands.py."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stemforge.core.config import SpectrogramConfig
from conftest import import_museval
from stemforge.core.errors import StemforgeError
from stemforge.evaluate.bss import BssEvalV4, bss_eval_sources, bss_eval_v4, frame_medians
from stemforge.evaluate.datadir import SUMMARY_COLUMNS, ideal_ratio_mask, summarize
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
