"""How fast is the procedural corpus? Seconds to synthesize one song, and times real time.

Usage: .venv/bin/python benchmarks/synth.py [--seconds 180] [--sample-rate 44100] [--repeats 5] [--mono]
       [--write LAYOUT]

Prints, for a song of --seconds at --sample-rate (stereo unless --mono): the first long call in
the process (after a 1 s warm-up call for the lazy imports; it pays for the first page faults
of ~250 MB of fresh output memory), then the
median and best of --repeats more calls, as wall-clock seconds, CPU seconds of this process
(user and system: system time is mostly page faults of fresh memory) and x real time (song
seconds / wall seconds). Each call uses its own seed. With --write, also
times write_corpus for one song in that layout (PCM_16 wav writing or AAC encoding included).
Run it on an idle machine: other processes on the same cores inflate the wall-clock figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def _one(seed: int, seconds: float, sample_rate: int, stereo: bool) -> tuple[float, float, float]:
    """(wall s, user CPU s, system CPU s) of one synthesize_song call."""
    from stemforge.synth.songs import synthesize_song

    wall, t0 = time.perf_counter(), os.times()
    synthesize_song(np.random.default_rng(seed), seconds, sample_rate, stereo)
    t1 = os.times()
    return time.perf_counter() - wall, t1.user - t0.user, t1.system - t0.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--sample-rate", type=int, default=44100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mono", action="store_true")
    parser.add_argument("--write", default=None, help="also time write_corpus(..., LAYOUT, songs=1)")
    args = parser.parse_args()
    stereo = not args.mono
    import stemforge.synth.layouts  # noqa: F401  (import time is not synthesis time)

    _one(999, 1.0, args.sample_rate, stereo)  # lazy imports (scipy.fft), not synthesis time
    what = f"{args.seconds:g} s song, {args.sample_rate} Hz, {'stereo' if stereo else 'mono'}"
    wall, user, system = _one(1000, args.seconds, args.sample_rate, stereo)
    print(
        f"{what}: first call  {wall:.3f} s wall, CPU {user:.3f} s user + {system:.3f} s system, "
        f"{args.seconds / wall:.0f}x real time"
    )
    runs = [_one(seed, args.seconds, args.sample_rate, stereo) for seed in range(args.repeats)]
    walls = [r[0] for r in runs]
    med = statistics.median(walls)
    print(
        f"{what}: median of {args.repeats}  {med:.3f} s wall (best {min(walls):.3f}), "
        f"CPU {statistics.median(r[1] for r in runs):.3f} s user + {statistics.median(r[2] for r in runs):.3f} s system, "
        f"{args.seconds / med:.0f}x real time (best {args.seconds / min(walls):.0f}x)"
    )
    if args.write:
        from stemforge.synth.layouts import write_corpus

        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            write_corpus(tmp, args.write, songs=1, seconds=args.seconds, seed=0)
            dt = time.perf_counter() - t
        print(f"write_corpus({args.write!r}, songs=1, seconds={args.seconds:g}): {dt:.3f} s wall, {args.seconds / dt:.0f}x real time")


if __name__ == "__main__":
    main()
