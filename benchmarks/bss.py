"""How fast is BSS Eval v4 (the MUSDB18 protocol's scoring)? Seconds to score one track.

Usage: .venv/bin/python benchmarks/bss.py [--seconds 180] [--repeats 3] [--museval]

Scores a synthetic --seconds track at 44.1 kHz stereo, two targets (vocals, accompaniment),
1 s windows and hop, as the MUSDB18 protocol does: the reference factorization once
(``BssEvalV4(references)``) and one estimate pair (``evaluate``). One BLAS/FFT thread
(OMP/OPENBLAS/MKL_NUM_THREADS=1 are set before numpy loads), so the figure is "on one core".
Prints the median and best of --repeats runs (wall and CPU seconds, x real time) and the load
average. With --museval, also times ``museval.evaluate`` on the same arrays once (needs museval
and ffmpeg) and prints the largest difference of the per-track medians.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SR = 44100


def _track(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """References and estimates ``[2, samples, 2]`` float64 with interference and artifacts."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.2 * t)[:, None]
    v = env * rng.standard_normal((n, 2)) * 0.3
    a = rng.standard_normal((n, 2)) * 0.5
    refs = np.stack([v, a])
    noise = 0.05 * rng.standard_normal(refs.shape)
    ests = np.stack([v + 0.2 * a, a + 0.1 * v]) + noise
    return refs, ests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--museval", action="store_true")
    args = parser.parse_args()
    from stemforge.evaluate.bss import BssEvalV4, frame_medians

    refs, ests = _track(args.seconds)
    walls, cpus = [], []
    for _ in range(args.repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        med = frame_medians(BssEvalV4(refs).evaluate(ests, SR, SR))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("track_s  runs  wall_median_s  wall_best_s  cpu_median_s  x_realtime(best)")
    print(
        f"{args.seconds:7.0f} {args.repeats:5d} {statistics.median(walls):14.2f} {min(walls):12.2f} "
        f"{statistics.median(cpus):13.2f} {args.seconds / min(walls):17.1f}"
    )
    if args.museval:
        import museval

        w0 = time.perf_counter()
        theirs = museval.evaluate(refs, ests, win=SR, hop=SR)
        wall = time.perf_counter() - w0
        diff = max(float(np.nanmax(np.abs(med[k] - np.nanmedian(v, axis=1)))) for k, v in zip(("sdr", "isr", "sir", "sar"), theirs))
        print(f"museval.evaluate: {wall:.2f} s wall; largest difference of per-track medians {diff:.2e} dB")


if __name__ == "__main__":
    main()
