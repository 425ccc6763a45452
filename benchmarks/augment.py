"""Remix rendering throughput: hours of remixes rendered per minute of wall time.

Builds a synthetic DSD100 corpus, ingests it (not timed), then times ``augment`` adding
``--remix-hours`` hours of remixes with ``--workers`` processes (pool start-up included, as in a
real run). Target from the issue: 17 hours in under 10 minutes on 2 cores, i.e. >= 1.7 h/min.
Also prints peak RSS (memory must not grow with the hours rendered), the load average (the
machine may be shared), and the CPU seconds the run used (parent + workers), from which it
estimates the rate with the cores to ourselves.

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

from stemforge.augment.remix import AugmentOptions, augment, train_hours  # noqa: E402
from stemforge.ingest.engine import ingest  # noqa: E402
from stemforge.recipes import dsd100  # noqa: E402
from stemforge.store import DataDir  # noqa: E402
from stemforge.synth.layouts import write_corpus  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class TreeCPU:
    """CPU seconds (user + system) used by this process and its descendants (worker processes of
    a forkserver pool are grandchildren, which ``getrusage(RUSAGE_CHILDREN)`` misses), sampled
    from /proc every ``interval`` s; a process's last sample counts."""

    def __init__(self, interval: float = 0.1):
        import threading

        self.interval = interval
        self._seen: dict[int, float] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu(pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    @staticmethod
    def _tree(pid: int) -> list[int]:
        todo, out = [pid], []
        while todo:
            p = todo.pop()
            out.append(p)
            for task in Path(f"/proc/{p}/task").glob("*"):
                try:
                    todo += [int(x) for x in (task / "children").read_text().split()]
                except OSError:
                    pass
        return out

    def _sample(self) -> None:
        for pid in self._tree(os.getpid()):
            c = self._cpu(pid)
            if c is not None:
                self._start.setdefault(pid, c)
                self._seen[pid] = c

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "TreeCPU":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self._seen[p] - self._start[p] for p in self._seen)


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
        cpu = TreeCPU()
        t0 = time.perf_counter()
        if rss:
            rss.__enter__()
        try:
            with cpu:
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
        cpu_per_h = cpu.seconds / added_h
        print(
            f"CPU: {cpu.seconds:.1f} s (parent + workers) = {cpu_per_h:.0f} CPU-s per hour of remixes; "
            f"{args.workers} cores to ourselves would give about {args.workers * 60 / cpu_per_h:.2f} h/min "
            f"(CPU share this run got: {cpu.seconds / wall:.2f} cores)"
        )


if __name__ == "__main__":
    main()
