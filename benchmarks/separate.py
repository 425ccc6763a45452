"""Separation speed and memory: decode -> mask -> full-band stems -> files written.

Speed (default): a synthetic 3-minute 44.1 kHz stereo song (PCM_16 wav) separated by the
FULL-WIDTH U-Net (random weights: the arithmetic is the same as a trained model's) on the CPU,
end to end with ``Separator.separate_file``; prints seconds and the real-time factor. One
warm-up separation of a 10 s file runs first (PyTorch's first forward pass allocates its
kernels); model construction is not timed.

Whole process (``--process``): what a user sees. The same song and a full-width checkpoint
(random weights, seeded) are written, then ``stemforge separate model.pt song.wav -o OUT`` runs
``--repeat`` times as a fresh process, timed from its launch to its exit (interpreter start,
imports, model load, separation, files written, exit); one untimed run first warms the page
cache. A child process then times the start-up by parts (interpreter, ``import torch``, the CLI
and the separator's imports, model load, separation) the way the CLI runs them.

Memory (``--memory``): a long song (default 30 minutes) separated in a fresh child process,
which reports its peak resident memory (``VmHWM`` from /proc/self/status, i.e. the kernel's own
high-water mark; ``resource.getrusage`` agrees).

    python benchmarks/separate.py                       # speed in a warm process, 180 s song
    python benchmarks/separate.py --process --repeat 5  # whole process, from the shell prompt
    python benchmarks/separate.py --memory --minutes 30 # peak RSS of a 30-minute song
    python benchmarks/separate.py --threads 2 --window-frames 2048 --batch-size 2

The songs are written to a temporary folder (or --workdir) and removed afterwards. The song is
one synthetic minute (stemforge.synth.songs) repeated, which is all the separator needs to do its
full work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_song(path: Path, seconds: float, sample_rate: int = 44100, seed: int = 0) -> Path:
    """Write a stereo PCM_16 wav of ``seconds`` s: a synthetic song of up to 60 s, repeated."""
    import soundfile as sf

    from stemforge.synth.songs import synthesize_song

    unit_s = min(60.0, seconds)
    song = synthesize_song(np.random.default_rng(seed), unit_s, sample_rate, stereo=True)
    unit = song.mixture.T  # [samples, 2]
    total = int(round(seconds * sample_rate))
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=2, subtype="PCM_16", format="WAV") as f:
        done = 0
        while done < total:
            n = min(unit.shape[0], total - done)
            f.write(unit[:n])
            done += n
    return path


def make_separator(args):
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.separate.separator import Separator
    from stemforge.model import UNet, UNetConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    model = UNet(UNetConfig(width=args.width), generator=torch.Generator().manual_seed(0))
    return Separator(
        model,
        SpectrogramConfig(),
        "vocals",
        args.device,
        window_frames=args.window_frames,
        overlap_frames=args.overlap_frames,
        batch_size=args.batch_size,
    )


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """Separate args.input into args.workdir and print one JSON line with the figures."""
    sep = make_separator(args)
    out = Path(args.workdir)
    before = peak_rss_mb()
    result = sep.separate_file(args.input, {"vocals": out / "vocals.wav", "accompaniment": out / "accompaniment.wav"})
    print(
        json.dumps(
            {
                "duration_s": result.duration_s,
                "seconds": result.seconds,
                "speed": result.speed,
                "timings": result.timings,
                "peak_rss_mb": peak_rss_mb(),
                "rss_after_model_mb": before,
                "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def seconds_since_process_start() -> float:
    """Wall seconds since this process was created (``/proc/self/stat`` start time; 10 ms ticks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    return float(Path("/proc/uptime").read_text().split()[0]) - start


def startup_child(args) -> None:
    """Time the separate command's stages as the CLI runs them; print one JSON line."""
    t = {"interpreter": seconds_since_process_start()}
    t0 = time.perf_counter()
    import torch  # noqa: F401

    t["import torch"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    import stemforge.cli.main  # noqa: F401  (typer and every command's registration)

    t["import cli"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    from stemforge.separate.separator import Separator

    import scipy.fft  # noqa: F401  (the STFT's FFTs: imported on first use otherwise)
    import soundfile  # noqa: F401
    import soxr  # noqa: F401

    t["import separator, scipy.fft, soundfile, soxr"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sep = Separator.from_checkpoint(args.model, device=args.device)
    t["model load"] = time.perf_counter() - t0
    out = Path(args.workdir)
    result = sep.separate_file(args.input, {"vocals": out / "vocals.wav", "accompaniment": out / "accompaniment.wav"})
    t["separation"] = result.seconds
    print(json.dumps({"stages": t, "timings": result.timings, "total": seconds_since_process_start()}))


def write_checkpoint(path: Path, width: float) -> Path:
    import torch

    from stemforge.core.config import SpectrogramConfig
    from stemforge.model.checkpoint import save_checkpoint
    from stemforge.model import UNet, UNetConfig

    model = UNet(UNetConfig(width=width), generator=torch.Generator().manual_seed(0))
    return save_checkpoint(path, model, model.config, SpectrogramConfig(), "vocals", 0)


def whole_process(args, tmp: Path) -> None:
    song = write_song(tmp / "song.wav", args.seconds)
    ckpt = write_checkpoint(tmp / "model.pt", args.width)
    exe = Path(sys.executable).with_name("stemforge")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "stemforge"]
    cmd = cli + ["separate", str(ckpt), str(song), "-o", str(tmp / "out"), "--device", args.device, "--force"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]

    def run(c: list[str]) -> float:
        t0 = time.perf_counter()
        res = subprocess.run(c, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.stderr.write(res.stdout + res.stderr)
            raise SystemExit(res.returncode)
        return wall

    run(cmd)  # page cache, bytecode
    walls, loads = [], []
    for _ in range(args.repeat):
        loads.append(os.getloadavg()[0])
        walls.append(run(cmd))
    best, median = min(walls), statistics.median(walls)
    print(f"$ stemforge separate model.pt song.wav -o out --device {args.device}  "
          f"({args.seconds:g} s 44.1 kHz stereo wav, U-Net width {args.width:g}, {args.repeat} runs)")
    print(f"whole process: best {best:.2f} s = {args.seconds / best:.1f}x real time; "
          f"median {median:.2f} s = {args.seconds / median:.1f}x real time")
    print(f"runs: {', '.join(f'{w:.2f}' for w in walls)} s; load average before each: {', '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores")
    floor = min(run([sys.executable, "-c", "pass"]) for _ in range(3))
    child_cmd = [sys.executable, __file__, "--startup-child", "--model", str(ckpt), "--input", str(song),
                 "--workdir", str(tmp), "--device", args.device]
    best_fig = None
    for _ in range(max(1, min(3, args.repeat))):
        t0 = time.perf_counter()
        res = subprocess.run(child_cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            sys.stderr.write(res.stderr)
            raise SystemExit(res.returncode)
        fig = json.loads(res.stdout.strip().splitlines()[-1])
        fig["wall"] = wall
        if best_fig is None or wall < best_fig["wall"]:
            best_fig = fig
    stages = best_fig["stages"]
    print(f"start-up by parts (the fastest of {max(1, min(3, args.repeat))} child runs, {best_fig['wall']:.2f} s launch to exit; "
          f"`python -c pass` takes {floor:.3f} s):")
    for name, value in stages.items():
        print(f"  {name:<46} {value:6.2f} s")
    print(f"  {'exit (after the files are written)':<46} {best_fig['wall'] - best_fig['total']:6.2f} s")
    print("  separation timings:", {k: round(v, 2) for k, v in best_fig["timings"].items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0, help="speed: song length (s)")
    p.add_argument("--memory", action="store_true", help="measure the peak RSS of a long song instead")
    p.add_argument("--process", action="store_true", help="time `stemforge separate` as a whole process instead")
    p.add_argument("--repeat", type=int, default=5, help="process: timed runs")
    p.add_argument("--minutes", type=float, default=30.0, help="memory: song length (min)")
    p.add_argument("--width", type=float, default=1.0, help="U-Net width (1.0: the seed's full network)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--window-frames", type=int, default=2048)
    p.add_argument("--overlap-frames", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--workdir", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--startup-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.startup_child:
        startup_child(args)
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        if args.process:
            whole_process(args, tmp)
            return
        if args.memory:
            seconds = args.minutes * 60
            t0 = time.perf_counter()
            song = write_song(tmp / "long.wav", seconds)
            print(f"wrote a {args.minutes:g}-minute 44.1 kHz stereo wav in {time.perf_counter() - t0:.1f} s", flush=True)
            cmd = [sys.executable, __file__, "--child", "--input", str(song), "--workdir", str(tmp)]
            cmd += ["--width", str(args.width), "--device", args.device, "--threads", str(args.threads)]
            cmd += ["--window-frames", str(args.window_frames), "--overlap-frames", str(args.overlap_frames)]
            cmd += ["--batch-size", str(args.batch_size)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                sys.stderr.write(res.stderr)
                raise SystemExit(res.returncode)
            fig = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"{args.minutes:g}-minute song, width {args.width:g}: peak RSS {fig['peak_rss_mb']:.0f} MB "
                f"(after loading the model: {fig['rss_after_model_mb']:.0f} MB); "
                f"{fig['seconds']:.1f} s, {fig['speed']:.1f}x real time"
            )
            print("timings:", {k: round(v, 2) for k, v in fig["timings"].items()})
            return

        sep = make_separator(args)
        import torch

        warm = write_song(tmp / "warm.wav", 10.0, seed=1)
        sep.separate_file(warm, {"vocals": tmp / "w_v.wav", "accompaniment": tmp / "w_a.wav"})
        song = write_song(tmp / "song.wav", args.seconds)
        load = os.getloadavg()[0]
        cpu0 = time.process_time()
        result = sep.separate_file(song, {"vocals": tmp / "vocals.wav", "accompaniment": tmp / "accompaniment.wav"})
        cpu = time.process_time() - cpu0
        print(
            f"{args.seconds:g} s 44.1 kHz stereo wav, U-Net width {args.width:g} on {args.device} "
            f"({torch.get_num_threads()} threads): {result.seconds:.2f} s end to end = {result.speed:.1f}x real time"
        )
        print(
            f"process CPU time {cpu:.2f} s (all threads; = {args.seconds / cpu:.1f}x real time per core); "
            f"load average before the run {load:.1f} on {os.cpu_count()} cores"
        )
        print("timings:", {k: round(v, 2) for k, v in result.timings.items()})


if __name__ == "__main__":
    main()
