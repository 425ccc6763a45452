"""The CPU cost of a batch of fresh remixes (``stemforge train --remix fresh``), with and without
``--remix-pitch`` and ``--remix-eq``, measured alternately in one process on one thread.

    .venv/bin/python benchmarks/remix.py DATADIR --batches 20 --pitch 0 3 3 --eq 0 0 6

DATADIR is any DataDir with a train split (e.g. MIR-1K ingested with ``--split-rule huang2014``).
For each setting (the n-th ``--pitch`` value with the n-th ``--eq`` value; ``--eq`` 0 for all
when not given) a :class:`~stemforge.train.remix.RemixBatches` cuts ``--batches`` batches of
``--batch-size`` crops of 128 frames (steps 0, 1, ...), rounds alternating between the
settings; the process CPU time per batch is printed (median over rounds), beside the load
average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stemforge.store import DataDir  # noqa: E402
from stemforge.train.remix import RemixBatches  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("datadir", type=Path)
    p.add_argument("--batches", type=int, default=20, help="batches per value and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pitch", type=float, nargs="+", default=[0.0, 3.0], help="--remix-pitch values (semitones)")
    p.add_argument("--eq", type=float, nargs="+", help="--remix-eq values (dB), one per --pitch value")
    a = p.parse_args(argv)
    eqs = a.eq if a.eq is not None else [0.0] * len(a.pitch)
    if len(eqs) != len(a.pitch):
        p.error("give one --eq value per --pitch value")
    torch.set_num_threads(1)
    dd = DataDir.open(a.datadir)
    sources = {(v, e): RemixBatches(dd, "vocals", a.batch_size, seed=0, rank=0, device=torch.device("cpu"),
                                    patch_frames=128, aligned=0.1, gain_db=3.0, pitch=v, eq=e)
               for v, e in zip(a.pitch, eqs)}
    per_batch: dict[tuple[float, float], list[float]] = {k: [] for k in sources}
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for key, src in sources.items():
            t0 = time.process_time()
            for step in range(a.batches):
                src.batch(step)
            per_batch[key].append((time.process_time() - t0) / a.batches)
        load.append(os.getloadavg()[0])
    print(f"{a.datadir}: {len(dd.select(split='train'))} train tracks; {a.batches} batches of {a.batch_size} crops "
          f"x 128 frames per setting and round, {a.rounds} rounds alternating, 1 thread; load {min(load):.1f}-{max(load):.1f}")
    base = statistics.median(next(iter(per_batch.values())))
    for (v, e), times in per_batch.items():
        m = statistics.median(times)
        runs = ", ".join(f"{x * 1e3:.0f}" for x in times)
        print(f"--remix-pitch {v:g} --remix-eq {e:g}: {m * 1e3:6.0f} CPU-ms a batch (median; rounds {runs}), "
              f"{m / base:.2f}x the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
