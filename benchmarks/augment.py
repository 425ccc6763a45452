"""Remix rendering throughput: hours of remixes rendered per minute of wall time.

Builds a synthetic DSD100 corpus, ingests it (not timed), then times ``augment`` adding
``--remix-hours`` hours of remixes with ``--workers`` processes (pool start-up included, as in a
real run). Target from the issue: 17 hours in under 10 minutes on 2 cores, i.e. >= 1.7 h/min.
Also prints peak RSS (memory must not grow with the hours rendered) and the load average, since
the machine may be shared.

    .venv/bin/python benchmarks/augment.py --songs 8 --seconds 60 --remix-hours 1 --workers 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from stemforge.augment import AugmentOptions, augment, train_hours  # noqa: E402
from stemforge.ingest import ingest  # noqa: E402
from stemforge.recipes import dsd100  # noqa: E402
from stemforge.store import DataDir  # noqa: E402
from stemforge.synth import write_corpus  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--remix-hours", type=float, default=1.0, help="hours of remixes to render")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--segment-seconds", type=float, default=10.0)
    ap.add_argument("--pitch-semitones", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        from _rss import PeakRSS
    except ImportError:  # the sampler is optional
        PeakRSS = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_corpus(work / "corpus", "dsd100", songs=args.songs, seconds=args.seconds, seed=1)
        dd = DataDir.create(work / "data")
        report = ingest(dd, dsd100.discover(work / "corpus"), workers=args.workers)
        assert report.ok, report.failed
        base = train_hours(dd.manifest)
        target = base.total_h + args.remix_hours
        options = AugmentOptions(segment_seconds=args.segment_seconds, pitch_semitones=args.pitch_semitones)
        print(f"train songs: {base.total_h:.3f} h; rendering {args.remix_hours} h of {args.segment_seconds:g}-s remixes "
              f"(pitch {args.pitch_semitones:g}) with {args.workers} worker(s); load average before: {_load()}", flush=True)
        rss = PeakRSS() if PeakRSS else None
        t0 = time.perf_counter()
        if rss:
            rss.__enter__()
        try:
            rep = augment(dd, target, seed=args.seed, options=options, workers=args.workers)
        finally:
            if rss:
                rss.__exit__(None, None, None)
        wall = time.perf_counter() - t0
        assert rep.ok, rep.failed
        added_h = rep.added_h
        rate = added_h / (wall / 60.0)
        peak = f"{rss.peak_total_mb:.0f} MB (largest process {rss.peak_process_mb:.0f} MB)" if rss else (
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB parent, "
            f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB largest child"
        )
        print(f"{'remixes':>7} {'hours':>6} {'wall_s':>7} {'h_per_min':>9} {'remix_per_s':>11} {'17h_in_min':>10}")
        print(f"{len(rep.added):>7} {added_h:>6.2f} {wall:>7.1f} {rate:>9.2f} {len(rep.added) / wall:>11.1f} {17 / rate:>10.1f}")
        print(f"peak RSS: {peak}; load average after: {_load()}")


if __name__ == "__main__":
    main()
