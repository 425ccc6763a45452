"""Karaoke-pair throughput: seconds to align and derive the vocals of one song, on one core.

Synthesizes a song (``stemforge.synth.songs.synthesize_song``, 44.1 kHz stereo) as the original and
its accompaniment as the karaoke, resampled to 48 kHz, with an extra intro (``--offset``),
another gain (``--gain-db``) and its end cut (``--tail``); decoding is not part of the timing
(``derive`` takes arrays). Threads are pinned to one (BLAS/OpenMP environment variables set
before numpy loads, threadpoolctl, torch). Prints the best and median wall and CPU time of
``--repeat`` timed runs after one warm-up run, with the alignment found (CPU time is the figure
to trust on a shared machine). Target from the issue: a 4-minute pair in
under 2 s.

    .venv/bin/python benchmarks/pairs.py --minutes 4 --repeat 5
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--offset", type=float, default=5.3, help="seconds of extra intro in the karaoke")
    ap.add_argument("--gain-db", type=float, default=-2.5, help="karaoke level change (dB)")
    ap.add_argument("--tail", type=float, default=7.0, help="seconds cut from the karaoke's end")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    from stemforge.core import audio
    from stemforge.karaoke.align import derive
    from stemforge.synth.songs import synthesize_song

    rng = np.random.default_rng(args.seed)
    seconds = args.minutes * 60.0
    t0 = time.perf_counter()
    song = synthesize_song(rng, seconds, 44100)
    accompaniment = song.drums + song.bass + song.other
    original = song.vocals + accompaniment
    karaoke = audio.resample(accompaniment, 44100, 48000)
    intro = synthesize_song(rng, args.offset + 1.0, 48000)
    shift = int(round(args.offset * 48000))
    karaoke = np.concatenate([(intro.drums + intro.other)[:, :shift], karaoke], axis=1)
    karaoke = karaoke[:, : karaoke.shape[1] - int(round(args.tail * 48000))] * np.float32(10 ** (args.gain_db / 20))
    print(
        f"pair: original {original.shape[1] / 44100:.1f} s 44.1 kHz stereo, karaoke {karaoke.shape[1] / 48000:.1f} s "
        f"48 kHz stereo (offset {shift / 48000:+.6f} s, level {args.gain_db:+.2f} dB); made in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    derive(original, 44100, karaoke, 48000)  # warm-up: imports, FFT plans, librosa's JIT
    times, cpu = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        derived = derive(original, 44100, karaoke, 48000)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    a = derived.alignment
    print(
        f"found: offset {a.offset_s:+.6f} s (error {1e3 * (a.offset_s - shift / 48000):+.4f} ms), "
        f"gain {a.gain_db:+.3f} dB (error {a.gain_db + args.gain_db:+.3f} dB), score {a.score:.3f}"
    )
    print(
        f"derive, one core: wall best {min(times):.2f} s, median {statistics.median(times):.2f} s; CPU best "
        f"{min(cpu):.2f} s, median {statistics.median(cpu):.2f} s; {args.repeat} runs on {args.minutes:g} min of audio; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (the machine may be shared)"
    )


if __name__ == "__main__":
    main()
