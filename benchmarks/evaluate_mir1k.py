"""How long does ``stemforge evaluate`` take on MIR-1K's 825 test clips (Huang et al.'s protocol)?

Times the whole command, ``stemforge evaluate MODEL DATA --split test`` (interpreter start,
imports, model load, every clip separated and scored, the report written), as a subprocess,
wall clock, and prints it with the clips, the seconds of audio, GNSDR of vocals and
accompaniment from the report, the CPU seconds of the process tree, and the load average
before and after (the machine may be shared: compare runs made together).

``--base DIR`` also times another checkout of stemforge (e.g. the code before a change) on the
same DataDir and model, alternating with this one (``--repeat`` rounds), and prints the ratio.
``--mir-eval N`` cross-checks the report of this checkout against ``mir_eval``'s
``bss_eval_sources`` (v3, no permutation) on the first N clips: the model, mixture and oracle
estimates are recomputed and scored by mir_eval, and the largest difference in dB of SDR, SIR,
SAR and NSDR printed (the mixture's SAR left out: it is rounding noise in both).

Prepare the DataDir and a model once (any model times the same; a trained one is not needed)::

    stemforge ingest mir1k /path/to/MIR-1K --split-rule huang2014 --out /tmp/mir1k-data
    stemforge train /tmp/mir1k-data --out /tmp/mir1k-run --width 0.5 --steps 50 --device cpu
    python benchmarks/evaluate_mir1k.py --data /tmp/mir1k-data --model /tmp/mir1k-run/model.pt
    python benchmarks/evaluate_mir1k.py --data /tmp/mir1k-data --model /tmp/mir1k-run/model.pt --base ../base --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def time_evaluate(code: Path, model: Path, data: Path, split: str, out: Path, extra: list[str]) -> dict:
    """One run of ``stemforge evaluate`` with ``code`` first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": str(code), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "stemforge", "evaluate", str(model), str(data), "--split", split, "-o", str(out), "--device", "cpu", *extra]
    before = _load()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stderr[-2000:]}")
    doc = json.loads(out.with_suffix(".json").read_text())
    gnsdr = {s["stem"]: s["gnsdr"] for s in doc["summary"] if s["method"] == "model"}
    return {
        "wall_s": wall,
        # CPU of the command's own process tree as the OS counts it (forkserver workers are not
        # its children: with --workers > 1 their CPU is missing here) and, where the report
        # has it, the CPU the clips took in whichever process scored them
        "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "clip_cpu_s": doc["meta"].get("clip_cpu_seconds"),
        "clips": doc["meta"]["tracks"],
        "audio_s": sum(t["duration_s"] for t in doc["tracks"] if t["method"] == "model" and t["stem"] == "vocals"),
        "gnsdr_vocals": gnsdr.get("vocals"),
        "gnsdr_accompaniment": gnsdr.get("accompaniment"),
        "load_before": before,
        "load_after": _load(),
        "report": out,
    }


def mir_eval_check(model: Path, data: Path, report_csv: Path, n: int, split: str) -> tuple[float, int]:
    """Largest |stemforge - mir_eval| (dB) over the first ``n`` clips of the report (its JSON:
    the CSV rounds to 4 decimals)."""
    import warnings

    import numpy as np
    import pandas as pd
    from mir_eval.separation import bss_eval_sources

    from stemforge.evaluate.datadir import ideal_ratio_mask
    from stemforge.separate.separator import Separator
    from stemforge.store import DataDir

    warnings.filterwarnings("ignore", category=FutureWarning)
    table = pd.DataFrame(json.loads(report_csv.with_suffix(".json").read_text())["tracks"])
    dd = DataDir.open(data)
    cfg = dd.config
    sep = Separator.from_checkpoint(model, device="cpu")
    rows = dd.select(split=split).head(n)
    reader = dd.reader()
    worst = 0.0
    for rec in rows.to_dict(orient="records"):
        v = reader.read_wave(rec["shard"], rec["key"], "vocals")
        a = reader.read_wave(rec["shard"], rec["key"], "accompaniment")
        mix = v + a
        out = sep.separate(mix, cfg.sample_rate)
        irm = ideal_ratio_mask(v, a, cfg)
        orc = Separator.from_mask_fn(lambda _x: irm, cfg, window_frames=None).separate(mix, cfg.sample_rate)
        refs = np.stack([v, a]).astype(np.float64)
        ests = {
            "model": np.stack([out["vocals"], out["accompaniment"]]),
            "mixture": np.stack([mix, mix]),
            "oracle": np.stack([orc["vocals"], orc["accompaniment"]]),
        }
        theirs = {m: bss_eval_sources(refs, e.astype(np.float64), compute_permutation=False)[:3] for m, e in ests.items()}
        mine = table[table["uid"] == rec["uid"]]
        for r in mine.to_dict(orient="records"):
            j = 0 if r["stem"] == "vocals" else 1
            sdr, sir, sar = (t[j] for t in theirs[r["method"]])
            diffs = [r["sdr"] - sdr, r["sir"] - sir, r["nsdr"] - (sdr - theirs["mixture"][0][j])]
            if r["method"] != "mixture":
                diffs.append(r["sar"] - sar)
            worst = max(worst, max(abs(d) for d in diffs))
    reader.close()
    return worst, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="A DataDir of MIR-1K ingested with --split-rule huang2014.")
    ap.add_argument("--model", type=Path, required=True, help="Any checkpoint at the DataDir's geometry.")
    ap.add_argument("--split", default="test")
    ap.add_argument("--base", type=Path, default=None, help="Another stemforge checkout to time on the same data (before/after).")
    ap.add_argument("--repeat", type=int, default=1, help="Rounds (this checkout, then --base, alternating).")
    ap.add_argument("--mir-eval", type=int, default=0, metavar="N", help="Cross-check the first N clips against mir_eval.")
    ap.add_argument("extra", nargs="*", help="More options for this checkout's `stemforge evaluate` (after --), e.g. -- --frames.")
    args = ap.parse_args()
    print(f"cores {len(os.sched_getaffinity(0))}, load average {_load()}")
    runs: dict[str, list[dict]] = {"this": [], "base": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k in range(args.repeat):
            runs["this"].append(time_evaluate(REPO, args.model, args.data, args.split, tmp / f"this{k}" / "r.csv", args.extra))
            if args.base is not None:
                runs["base"].append(time_evaluate(args.base.resolve(), args.model, args.data, args.split, tmp / f"base{k}" / "r.csv", []))
        print("code  round  clips  audio_min  wall_s  cpu_s(tree)  clip_cpu_s  gnsdr_vocals  gnsdr_accomp  load_before     load_after")
        for name in ("this", "base"):
            for k, r in enumerate(runs[name]):
                print(
                    f"{name:<4}  {k:>5}  {r['clips']:>5}  {r['audio_s'] / 60:>9.1f}  {r['wall_s']:>6.1f}  {r['cpu_s']:>11.1f}  "
                    f"{r['clip_cpu_s'] if r['clip_cpu_s'] is None else round(r['clip_cpu_s'], 1)!s:>10}  "
                    f"{r['gnsdr_vocals']:>12.2f}  {r['gnsdr_accompaniment']:>12.2f}  {r['load_before']:<14} {r['load_after']}"
                )
        if runs["base"]:
            best = lambda name: min(r["wall_s"] for r in runs[name])  # noqa: E731
            print(f"best wall: this {best('this'):.1f} s, base {best('base'):.1f} s: {best('base') / best('this'):.2f}x faster")
        if args.mir_eval:
            worst, n = mir_eval_check(args.model, args.data, runs["this"][0]["report"], args.mir_eval, args.split)
            print(f"largest |stemforge - mir_eval| over {n} clips (SDR, SIR, SAR, NSDR of model, mixture, oracle): {worst:.2e} dB")


if __name__ == "__main__":
    main()
