"""Patches per second of the training loader: streaming (in-process, 1 and 2 worker processes)
and resident (in-memory) modes.

Usage::

    .venv/bin/python benchmarks/loader.py                 # a temporary DataDir of random magnitudes
    .venv/bin/python benchmarks/loader.py --data stemforge-data --seconds 5
    .venv/bin/python benchmarks/loader.py --geometry fullband --tracks 10 --frames 2500   # 44.1 kHz stereo

A patch is one 128-frame crop of the mixture and of the target (vocals), delivered as the
network's layout ``[1, 512, 128]`` float16 at the seed geometry, ``[2, 1024, 512]`` at the
fullband one (the float32 conversion happens on the device). The
shards are read once before timing so that they are in the page cache (the figure is the
loader's CPU cost, not the disk's). Reading is content independent, so random magnitudes
measure the same thing as real ones.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_random_datadir(path: Path, tracks: int, frames: int, seed: int = 0, geometry: str = "seed"):
    """A DataDir of ``tracks`` train tracks of about ``frames`` frames of random magnitudes, at
    the geometry preset ``geometry``."""
    from stemforge.core.config import SpectrogramConfig
    from stemforge.store import DataDir
    from stemforge.store.shards import TrackArrays, mag_shape

    rng = np.random.default_rng(seed)
    dd = DataDir.create(path, SpectrogramConfig.preset(geometry))
    rows = []
    with dd.writing():
        w = dd.shard_writer("bench")
        for i in range(tracks):
            n = int(frames * rng.uniform(0.7, 1.3))
            shape = mag_shape(dd.config, n)
            mix = rng.random(shape, dtype=np.float32)
            voc = mix * rng.random(shape, dtype=np.float32)
            wave = np.zeros(16 if dd.config.channels == 1 else (dd.config.channels, 16), np.float32)
            w.add(f"t{i:04d}", f"bench:{i}", TrackArrays(mix, voc, mix - voc, 1.0, np.ones(n, np.float32), wave, wave))
            rows.append(dict(uid=f"bench:{i}", dataset="bench", track_id=str(i), split="train", n_frames=n,
                             key=f"t{i:04d}", norm=1.0, config_hash=dd.config.hash))
        final = w.close()
        for r in rows:
            r["shard"] = dd.relative(final)
        dd.commit(rows)
    return DataDir.open(path)


def warm_page_cache(dd) -> None:
    for p in dd.shard_files():
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes ``pids`` (from /proc; 0 where unreadable)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def rate(fetch, batch_size: int, seconds: float, pids: list[int] | None = None, min_batches: int = 3) -> tuple[float, float]:
    """``(patches per wall second, patches per CPU second)`` of calling ``fetch(i)`` for
    i = 0, 1, ... for about ``seconds``. CPU time is this process's, or that of ``pids`` (the
    loader's worker processes) when given: on a machine shared with other work the second
    figure is what one core delivers."""
    fetch(0)  # warm up (open files, read chunk indexes, start workers)
    n, t0 = 0, time.perf_counter()
    c0 = time.process_time() if pids is None else _cpu_seconds(pids)
    while n < min_batches or time.perf_counter() - t0 < seconds:
        fetch(n + 1)
        n += 1
    wall = time.perf_counter() - t0
    cpu = (time.process_time() if pids is None else _cpu_seconds(pids)) - c0
    return n * batch_size / wall, (n * batch_size / cpu if cpu > 0 else float("nan"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="an existing DataDir (default: a temporary random one)")
    ap.add_argument("--tracks", type=int, default=40, help="tracks of the temporary DataDir")
    ap.add_argument("--frames", type=int, default=5000, help="mean frames per track of the temporary DataDir")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per mode")
    ap.add_argument("--workers", default="1,2", help="worker process counts to time (comma separated)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process (workers use 1)")
    ap.add_argument("--geometry", default="seed", help="preset of the temporary DataDir: seed, paper, fullband")
    ap.add_argument("--patch-frames", type=int, default=None, help="frames per crop (default: the geometry's: 128, 512 at fullband)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    from stemforge.store import DataDir
    from stemforge.train.resident import ResidentBatches
    from stemforge.train.sampling import PatchSampler
    from stemforge.train.streaming import StreamingBatches, streaming_loader

    tmp = None
    try:
        if args.data is None:
            tmp = Path(tempfile.mkdtemp(prefix="stemforge-loader-bench-"))
            t = time.perf_counter()
            dd = build_random_datadir(tmp / "data", args.tracks, args.frames, geometry=args.geometry)
            print(f"built a random DataDir ({args.tracks} tracks) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        else:
            dd = DataDir.open(args.data)
        warm_page_cache(dd)
        from stemforge.model.config import geometry_unet_config

        unet = geometry_unet_config(dd.config, **({"patch_frames": args.patch_frames} if args.patch_frames else {}))
        bins = {"first_bin": unet.first_bin, "n_bins": unet.n_bins}
        sampler = PatchSampler.from_datadir(dd, patch_frames=unet.patch_frames)
        print(f"geometry {dd.config.geometry()}; patches {unet.channels} x {unet.n_bins} bins x {unet.patch_frames} frames")
        hours = sampler.tracks.total_frames * dd.config.hop_length / dd.config.sample_rate / 3600
        print(f"data: {len(sampler.tracks)} train tracks, {hours:.2f} h, batch {args.batch_size}, "
              f"torch threads {torch.get_num_threads()}")
        B = args.batch_size
        results = []

        batches = StreamingBatches(sampler, dd.reader(), "vocals", B, seed=0, **bins)
        results.append(("streaming, in-process (0 workers)", rate(lambda i: batches[i], B, args.seconds)))
        batches.close()

        for workers in [int(w) for w in args.workers.split(",") if w.strip()]:
            batches = StreamingBatches(sampler, dd.reader(), "vocals", B, seed=0, **bins)
            loader = streaming_loader(batches, range(10**6), workers=workers, prefetch=4)
            pids = [p.pid for p in loader._procs]
            results.append((f"streaming, {workers} worker process{'es' if workers > 1 else ''}",
                            rate(lambda i: next(loader), B, args.seconds, pids=pids)))
            loader.close()

        resident = ResidentBatches(sampler, dd.reader(), "vocals", B, seed=0, device="cpu", **bins)
        results.append(("resident in RAM, float16 batch", rate(lambda i: resident[i], B, args.seconds)))
        results.append(("resident in RAM, float32 batch", rate(lambda i: resident.batch(i), B, args.seconds)))

        width = max(len(name) for name, _ in results)
        print(f"{'mode':<{width}}  {'patches/s':>9}  {'patches per CPU-second':>22}")
        for name, (wall, cpu) in results:
            print(f"{name:<{width}}  {wall:9.0f}  {cpu:22.0f}")
        print("(CPU-seconds: of the loader's worker processes, or of this process for in-process modes)")
        return 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
