"""Training throughput: the whole trainer against the bare model step on in-memory tensors.

Usage::

    .venv/bin/python benchmarks/train.py --device cpu --width 0.25 --steps 20          # CPU check
    .venv/bin/python benchmarks/train.py --data DATA --device cuda --width 1 \\
        --precision fp32,bf16 --modes memory,streaming --steps 300                      # one GPU

"bare" is :class:`stemforge.train.loop.TrainStep` (forward, L1 loss, backward, Adam; the very
step the trainer runs) on one batch already on the device (the trainer's first batch): the most
the model allows. The
trainer figures are :func:`stemforge.train.loop.train` end to end (crops drawn and cut by the
loader, metrics, progress callback) with validation off, as ``TrainResult.patches_per_s``
(first step and the final checkpoint left out). The modes are ``memory`` (train magnitudes
resident on the device) and ``streaming`` (crops read from the shards by loader processes).
Rounds are interleaved (bare, memory, streaming, bare, ...) so that a machine shared with other
work affects all figures alike; the median of the rounds is printed.

Without ``--data`` a synthetic DataDir is built in a temporary folder (``stemforge.synth.layouts``
DSD100 layout + ``stemforge.ingest.engine``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_synthetic_datadir(path: Path, songs: int, seconds: float, seed: int = 0, geometry: str = "seed"):
    """``songs`` synthetic DSD100 songs (all train but one valid) ingested into ``path`` at the
    geometry preset ``geometry`` (seed, paper, fullband)."""
    from stemforge.core.config import SpectrogramConfig
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import dsd100
    from stemforge.store import DataDir
    from stemforge.synth.layouts import write_corpus

    entries = [dict(id=51 + i, subset="Dev", artist=f"Bench Artist {i}", title=f"Song {i}") for i in range(max(1, songs - 1))]
    entries.append(dict(id=65, subset="Dev", artist="Fergessen", title="Nos Palpitants"))  # a DSD100 validation song
    write_corpus(path / "corpus", "dsd100", songs=len(entries), seconds=seconds, seed=seed, entries=entries)
    dd = DataDir.create(path / "data", SpectrogramConfig.preset(geometry))
    report = ingest(dd, dsd100.discover(path / "corpus"), workers=1)
    if report.failed:
        raise SystemExit(f"ingest failed: {report.failed}")
    return DataDir.open(path / "data")


def first_batch(datadir, unet_config, batch_size: int, device):
    """The trainer's batch of step 0 (seed 0), on ``device``: the bare step runs on it."""
    from stemforge.train.resident import ResidentBatches
    from stemforge.train.sampling import PatchSampler

    sampler = PatchSampler.from_datadir(datadir, patch_frames=unet_config.patch_frames)
    return ResidentBatches(sampler, datadir.reader(), unet_config.target, batch_size, seed=0, device=device,
                           first_bin=unet_config.first_bin, n_bins=unet_config.n_bins).batch(0)


def bare_rate(unet_config, batch, device, precision: str, steps: int, warmup: int, compile_: bool) -> float:
    """Patches/s of TrainStep on one fixed batch ``(mixture, target)`` resident on ``device``."""
    import torch

    from stemforge.train.config import TrainConfig
    from stemforge.train.loop import TrainStep
    from stemforge.model import UNet

    x, y = batch
    batch_size = x.shape[0]

    model = UNet(unet_config, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    model.train()
    net = torch.compile(model) if compile_ else model
    step = TrainStep(net, model.parameters(), TrainConfig(precision=precision, batch_size=batch_size), device)
    for i in range(warmup):
        step(i, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for i in range(steps):
        step(warmup + i, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * batch_size / (time.perf_counter() - t)


def trainer_rate(datadir, unet_config, batch_size: int, device: str, precision: str, steps: int, mode: str,
                 workers: int | None, compile_: bool, workdir: Path) -> tuple[float, str]:
    """Patches/s of train() end to end (validation off) and how its batches were made."""
    from stemforge.train.config import TrainConfig
    from stemforge.train.loop import train

    out = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    try:
        cfg = TrainConfig(
            steps=steps + min(10, max(1, steps // 10)), batch_size=batch_size, precision=precision, data_mode=mode, workers=workers,
            compile=compile_, val_crops=0, val_every=10**9, checkpoint_every=10**9, log_every=max(1, steps // 4),
            tensorboard=False, patch_frames=unet_config.patch_frames,
        )
        result = train(datadir, out, cfg, unet_config, device=device)
        return float(result.patches_per_s or 0.0), result.data_message
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="a DataDir (default: a temporary synthetic one)")
    ap.add_argument("--songs", type=int, default=6, help="songs of the synthetic DataDir")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per synthetic song")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--width", type=float, default=0.25, help="U-Net width multiplier (1.0: full)")
    ap.add_argument("--kernel-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per figure (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps of the bare model first")
    ap.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16,fp16")
    ap.add_argument("--modes", default="memory,streaming", help="comma-separated trainer data modes: memory,streaming")
    ap.add_argument("--workers", type=int, default=None, help="loader processes when streaming (default: the trainer's)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are printed")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--geometry", default="seed", help="the synthetic DataDir's preset: seed, paper, fullband (44.1 kHz stereo)")
    ap.add_argument("--patch-frames", type=int, default=None, help="frames per crop (default: the geometry's, 512 at fullband)")
    ap.add_argument("--model-bins", type=int, default=None, help="bins the model sees (default: the geometry's, 1024 at fullband)")
    args = ap.parse_args(argv)

    import torch

    from stemforge.store import DataDir
    from stemforge.core.device import resolve_device
    from stemforge.model import UNet, UNetConfig, count_parameters

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="stemforge-train-bench-"))
    try:
        if args.data is None:
            t = time.perf_counter()
            datadir = build_synthetic_datadir(workdir, args.songs, args.seconds, geometry=args.geometry)
            print(f"built a synthetic DataDir ({args.songs} songs x {args.seconds:g} s) in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        else:
            datadir = DataDir.open(args.data)
        from stemforge.model.config import geometry_unet_config

        sizes = {k: v for k, v in (("patch_frames", args.patch_frames), ("n_bins", args.model_bins)) if v is not None}
        unet = geometry_unet_config(datadir.config, "seed", width=args.width, kernel_size=args.kernel_size, **sizes)
        print(f"geometry {datadir.config.geometry()}; crops {unet.channels} x {unet.n_bins} bins x {unet.patch_frames} frames")
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
        print(
            f"device {device} ({gpu}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
            f"U-Net width {unet.width:g} kernel {unet.kernel_size} ({count_parameters(UNet(unet)):,} parameters), "
            f"batch {args.batch_size}, {args.steps} timed steps, {args.rounds} round(s)"
        )
        batch = first_batch(datadir, unet, args.batch_size, device)
        for precision in precisions:
            figures: dict[str, list[float]] = {"bare": []}
            notes: dict[str, str] = {}
            for _ in range(args.rounds):
                figures["bare"].append(
                    bare_rate(unet, batch, device, precision, args.steps, args.warmup, args.compile)
                )
                for mode in modes:
                    rate, note = trainer_rate(datadir, unet, args.batch_size, str(device), precision, args.steps,
                                              mode, args.workers, args.compile, workdir)
                    figures.setdefault(mode, []).append(rate)
                    notes[mode] = note
            def rounds(values: list[float]) -> str:
                return "" if len(values) < 2 else "  rounds: " + ", ".join(f"{v:.1f}" for v in values)

            bare = statistics.median(figures["bare"])
            print(f"[{precision}] bare model step (in-memory tensors): {bare:10.1f} patches/s{rounds(figures['bare'])}")
            for mode in modes:
                value = statistics.median(figures[mode])
                print(f"[{precision}] trainer, {mode:<9}: {value:10.1f} patches/s = {100 * value / bare:5.1f}% of bare"
                      f"{rounds(figures[mode])}  ({notes[mode]})")
            sys.stdout.flush()
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
