"""Ingest throughput per recipe, one worker, on synthetic corpora in every real layout.

Prints seconds of audio ingested per second (x real time) at --workers 1 for each recipe
(DSD100 included, as the reference) and the ratio to DSD100, both per wall second and per CPU
second of the process (--workers 1 runs in the calling process, so its CPU time is the whole
cost; it is the steadier figure on a shared machine). Runs every recipe once per round,
--rounds times, interleaved, and keeps each recipe's best round. Writing the corpora is not
timed.

    python benchmarks/recipes.py --songs 3 --seconds 60 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

from stemforge.ingest.reconcile import reconcile_datadir
from stemforge.ingest.engine import ingest
from stemforge.recipes import get_recipe
from stemforge.store import DataDir
from stemforge.synth.layouts import write_corpus

CASES = ("dsd100", "musdb", "musdb-hq", "medleydb", "ccmixter", "ikala", "mir1k", "csv")


def make(case: str, out: Path, songs: int, seconds: float) -> tuple[str, Path]:
    """Write the corpus of ``case``; returns (recipe name, discover root)."""
    if case == "csv":
        recs = write_corpus(out / "audio", "musdb-hq", songs=songs, seconds=seconds, seed=9)
        with open(out / "list.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["mixture", "vocals", "artist", "title"])
            w.writeheader()
            for r in recs:  # mixture + vocals: accompaniment derived by the csv loader
                folder = r["paths"]["vocals"].parent.relative_to(out)
                w.writerow({"mixture": f"{folder}/mixture.wav", "vocals": f"{folder}/vocals.wav", "artist": r["artist"], "title": r["title"]})
        return "csv", out / "list.csv"
    options = {"clip_seconds": seconds} if case == "mir1k" else {}
    write_corpus(out, case, songs=songs, seconds=seconds, seed=9, **options)
    return ("musdb" if case == "musdb-hq" else case), out


def run(recipe: str, root: Path, work: Path) -> tuple[float, float, float]:
    """Ingest ``root`` into a fresh DataDir -> (audio seconds, wall seconds, CPU seconds)."""
    data = work / f"data-{time.time_ns()}"
    t0, c0 = time.perf_counter(), time.process_time()
    sources = get_recipe(recipe).discover(root)
    report = ingest(DataDir.create(data), sources, workers=1, post_commit=reconcile_datadir)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not report.ok or report.excluded:
        sys.exit(f"{recipe}: failed {report.failed} excluded {report.excluded}")
    audio_s = sum(r["duration_s"] for r in report.ingested)
    shutil.rmtree(data)
    return audio_s, wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpora = {c: make(c, work / c, args.songs, args.seconds) for c in cases}
        warm = work / "warm"
        write_corpus(warm, "dsd100", songs=1, seconds=5.0, seed=2)
        run("dsd100", warm, work)  # imports, FFT plans
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        audio: dict[str, float] = {}
        for _ in range(args.rounds):
            for c in cases:
                audio[c], w, u = run(*corpora[c], work)
                wall[c], cpu[c] = min(wall.get(c, w), w), min(cpu.get(c, u), u)
        ref_w = audio["dsd100"] / wall["dsd100"] if "dsd100" in wall else float("nan")
        ref_c = audio["dsd100"] / cpu["dsd100"] if "dsd100" in cpu else float("nan")
        print(f"{args.songs} songs x {args.seconds:.0f} s per corpus, --workers 1, best of {args.rounds} rounds")
        print(f"{'recipe':>10} {'audio_s':>8} {'wall_s':>7} {'x_rt_wall':>9} {'vs_dsd100':>9} {'cpu_s':>6} {'x_rt_cpu':>8} {'vs_dsd100':>9}")
        for c in cases:
            xw, xc = audio[c] / wall[c], audio[c] / cpu[c]
            print(
                f"{c:>10} {audio[c]:>8.1f} {wall[c]:>7.2f} {xw:>9.0f} {xw / ref_w:>9.2f} {cpu[c]:>6.2f} {xc:>8.0f} {xc / ref_c:>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
