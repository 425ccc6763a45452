"""Ingest throughput and peak memory on a synthetic DSD100 corpus of 3-minute songs.

Prints seconds of audio ingested per wall second (x real time), per worker, peak RSS and the
shard bytes per hour of audio, at --workers 1 and 2, for N and 2N songs (peak RSS must not grow
with the number of songs), at the geometry of --preset (seed, paper or fullband; the synthetic
DSD100 is 44.1 kHz stereo, so fullband does not resample).

    python benchmarks/ingest.py --songs 6 --seconds 180
    python benchmarks/ingest.py --songs 2 --seconds 180 --preset fullband --workers 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _rss import PeakRSS  # noqa: E402

from stemforge.core.config import PRESETS, SpectrogramConfig  # noqa: E402
from stemforge.ingest.engine import ingest  # noqa: E402
from stemforge.recipes import dsd100  # noqa: E402
from stemforge.store import DataDir  # noqa: E402
from stemforge.synth.layouts import write_corpus  # noqa: E402


def run(root: Path, work: Path, workers: int, config: SpectrogramConfig) -> tuple[float, float, float, float, float]:
    data = work / f"data-{workers}-{time.time_ns()}"
    sources = dsd100.discover(root)
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        report = ingest(DataDir.create(data, config), sources, workers=workers)
    wall = time.perf_counter() - t0
    assert report.ok, report.failed
    audio_s = sum(r["duration_s"] for r in report.ingested)
    n_bytes = sum(p.stat().st_size for p in (data / "shards").glob("*.h5"))
    shutil.rmtree(data)
    return audio_s, wall, rss.peak_total_mb, rss.peak_process_mb, n_bytes * 3600.0 / audio_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--preset", default="seed", choices=list(PRESETS), help="Geometry of the DataDir (default: seed).")
    args = ap.parse_args()
    config = SpectrogramConfig.preset(args.preset)
    print(f"preset {args.preset}: {config.geometry()} (config {config.hash})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small, large = work / "small", work / "large"
        write_corpus(small, "dsd100", songs=args.songs, seconds=args.seconds, seed=1)
        write_corpus(large, "dsd100", songs=2 * args.songs, seconds=args.seconds, seed=1)
        warm = work / "warm"
        write_corpus(warm, "dsd100", songs=1, seconds=5.0, seed=2)
        run(warm, work, 1, config)  # imports, FFT plans
        print(f"{'songs':>5} {'workers':>7} {'audio_min':>9} {'wall_s':>7} {'x_realtime':>10} {'x_rt/worker':>11} {'peak_rss_total_MB':>17} {'peak_rss_proc_MB':>16} {'GB_per_hour':>11}")
        for workers in [int(w) for w in args.workers.split(",")]:
            for root, n in ((small, args.songs), (large, 2 * args.songs)):
                audio_s, wall, total, proc, per_hour = run(root, work, workers, config)
                x = audio_s / wall
                print(f"{n:>5} {workers:>7} {audio_s / 60:>9.1f} {wall:>7.2f} {x:>10.0f} {x / workers:>11.0f} {total:>17.0f} {proc:>16.0f} {per_hour / 1e9:>11.3f}", flush=True)


if __name__ == "__main__":
    main()
