"""`stemforge evaluate` end to end on a synthetic DataDir with a tiny random checkpoint, scoring on
one BLAS thread in a fresh process for every OpenBLAS, and MIR-1K clip scores against mir_eval on
the real clips ($STEMFORGE_REAL_DATA). The functions are tested in
tests/unit/evaluate/test_evaluate.py."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stemforge.core.config import SpectrogramConfig
from stemforge.evaluate.datadir import TABLE_COLUMNS, ideal_ratio_mask


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


def test_an_ensemble_checkpoint_is_scored_by_worker_processes_as_in_process(datadir_and_model, tmp_path):
    """An ensemble's members travel to the pool's workers with the separator; each worker's
    scores equal one process's, and differ from either member's alone."""
    import torch

    from stemforge.evaluate.datadir import evaluate_datadir
    from stemforge.model import UNet, UNetConfig
    from stemforge.model.checkpoint import ensemble_checkpoints, save_checkpoint
    from stemforge.separate.separator import Separator

    root, dd, _ = datadir_and_model
    cfg = UNetConfig(width=0.125)
    paths = [save_checkpoint(tmp_path / f"m{seed}.pt", UNet(cfg, generator=torch.Generator().manual_seed(seed)),
                             cfg, dd.config, "vocals", 0) for seed in (0, 1)]
    sep = Separator.from_checkpoint(ensemble_checkpoints(paths, tmp_path / "e.pt"), device="cpu")
    inline = evaluate_datadir(sep, dd, split="all", workers=1)
    pooled = evaluate_datadir(sep, dd, split="all", workers=2)
    alone = evaluate_datadir(Separator.from_checkpoint(paths[0], device="cpu"), dd, split="all", workers=1)
    assert not pooled.failed and pooled.meta["workers"] == 2
    cols = ["uid", "method", "stem", "sdr", "sir", "sar"]
    pd.testing.assert_frame_equal(inline.table[cols], pooled.table[cols])
    model = inline.table["method"] == "model"
    assert not np.allclose(inline.table.loc[model, "sdr"], alone.table.loc[alone.table["method"] == "model", "sdr"])


def test_a_two_net_checkpoint_is_scored_by_worker_processes_as_in_process(datadir_and_model, tmp_path):
    """Two nets are 2 x 79 tensors: sent to the pool's workers as themselves, each went as a
    shared-memory file descriptor and every `evaluate --workers 2` of a two-net checkpoint
    failed with "too many fds". The workers score what one process scores."""
    import torch

    from stemforge.evaluate.datadir import evaluate_datadir
    from stemforge.model import UNet, UNetConfig
    from stemforge.model.checkpoint import combine_checkpoints, save_checkpoint
    from stemforge.separate.separator import Separator

    root, dd, _ = datadir_and_model
    one = {}
    for seed, target in enumerate(("vocals", "accompaniment")):
        cfg = UNetConfig(width=0.125, target=target)
        net = UNet(cfg, generator=torch.Generator().manual_seed(seed))
        one[target] = save_checkpoint(tmp_path / f"{target}.pt", net, cfg, dd.config, target, 0)
    both = combine_checkpoints(one["vocals"], one["accompaniment"], tmp_path / "both.pt")
    sep = Separator.from_checkpoint(both, device="cpu")
    assert sum(len(net.state_dict()) for net in sep.nets.values()) > 150
    inline = evaluate_datadir(sep, dd, split="all", workers=1)
    pooled = evaluate_datadir(sep, dd, split="all", workers=2)
    assert not pooled.failed and pooled.meta["workers"] == 2
    cols = ["uid", "method", "stem", "sdr", "sir", "sar"]
    pd.testing.assert_frame_equal(inline.table[cols], pooled.table[cols])
