"""The CPU cost of a batch of fresh remixes (``stemforge train --remix fresh``), with and without
``--remix-pitch``, measured alternately in one process on one thread.

    .venv/bin/python benchmarks/remix.py DATADIR --batches 20 --pitch 0 3

DATADIR is any DataDir with a train split (e.g. MIR-1K ingested with ``--split-rule huang2014``).
For each ``--pitch`` value a :class:`~stemforge.train.remix.RemixBatches` cuts ``--batches``
batches of ``--batch-size`` crops of 128 frames (steps 0, 1, ...; the same draws for every
value), rounds alternating between the values; the process CPU time per batch is printed
(median over rounds), beside the load average.
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
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    dd = DataDir.open(a.datadir)
    sources = {v: RemixBatches(dd, "vocals", a.batch_size, seed=0, rank=0, device=torch.device("cpu"),
                               patch_frames=128, aligned=0.1, gain_db=3.0, pitch=v) for v in a.pitch}
    per_batch: dict[float, list[float]] = {v: [] for v in a.pitch}
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for v, src in sources.items():
            t0 = time.process_time()
            for step in range(a.batches):
                src.batch(step)
            per_batch[v].append((time.process_time() - t0) / a.batches)
        load.append(os.getloadavg()[0])
    print(f"{a.datadir}: {len(dd.select(split='train'))} train tracks; {a.batches} batches of {a.batch_size} crops "
          f"x 128 frames per value and round, {a.rounds} rounds alternating, 1 thread; load {min(load):.1f}-{max(load):.1f}")
    base = statistics.median(per_batch[a.pitch[0]])
    for v in a.pitch:
        m = statistics.median(per_batch[v])
        runs = ", ".join(f"{x * 1e3:.0f}" for x in per_batch[v])
        print(f"--remix-pitch {v:g}: {m * 1e3:6.0f} CPU-ms a batch (median; rounds {runs}), {m / base:.2f}x the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
