"""Real music, MUSDB18: fine-tune the imported Spleeter nets on MUSDB18's train tracks at full
band, select by validation SDR, and score imported vs fine-tuned and each separator post-filter on
the 14 tracks of MUSDB18's official validation list (MUSDB18 protocol), with their speed.

    STEMFORGE_REAL_DATA=/work/shared/realdata python benchmarks/real/musdb7.py \\
        --root /work/shared/realdata/musdb18-7s --init spleeter.pt --out /tmp/musdb7

Steps (each skipped when its output is already in --out, so an interrupted run continues):

1. **Ingest** ``stemforge ingest musdb ROOT --preset fullband --out OUT/data`` (44.1 kHz stereo,
   4096/1024; official split: the 14 validation tracks -> ``valid``, the rest ``train``).
2. **Fine-tune** each net of ``--targets`` (default: the accompaniment net, the setting the
   r2 study found least bad: lr 2e-5, batch 4, 256-frame crops, BatchNorm statistics frozen)
   with stemforge's trainer (``train(..., init=INIT, target=...)``, the library call of
   ``stemforge train --init``), ``--steps`` steps, a copy of the weights every ``--every``.
3. **Select** per net the step (0 = the imported net) with the best median vocals SDR over the
   validation tracks (the default post-filter, the other net imported), among the steps whose
   accompaniment median is not below the imported one's; the two selected nets are written as
   the two-net checkpoint ``OUT/model.pt`` (``stemforge separate OUT/model.pt song.wav``).
   Each candidate's scores are kept in ``OUT/selection.json`` (a rerun does not score it again).
   The selection and the table use the same 14 tracks (the only held-out songs the 7-second
   set has): the fine-tuned row is an upper estimate; step 0 stays a candidate, so
   fine-tuning that does not help leaves the imported nets.
4. **Score** (the MUSDB18 protocol's SDR: BSS Eval v4 image-mode SDR on 1 s windows, median
   over windows then tracks; computed as :func:`sdr_windows` says, checked at the start against
   stemforge's full BSS Eval v4 on one track) the imported nets and the fine-tuned ones (the best
   candidate after step 0, shown even when not selected), each with the ratio mask at power 2
   (Spleeter's), the default (power 1.5), and the Wiener filter (1 EM iteration from the power-1
   mask); beside them the mixture and the ideal ratio mask. Speed: seconds of audio separated per
   wall second (the separations alone, in this process; 6.8-s tracks, so start-up costs weigh).

Prints the table, the load average before and after, and writes OUT/table.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

POSTS = {  # name -> Separator options
    "mask p2 (Spleeter's)": dict(mask_power=2.0),
    "mask p1.5 (default)": dict(),
    "wiener 1 it (p1)": dict(wiener_iterations=1),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", flush=True)


def ingest(root: Path, data: Path, workers: int) -> None:
    if (data / "manifest.csv").is_file():
        log(f"ingest: {data} exists, kept")
        return
    cmd = [sys.executable, "-m", "stemforge", "ingest", "musdb", str(root), "--preset", "fullband", "--out", str(data), "--workers", str(workers)]
    log("ingest: " + " ".join(cmd))
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log(f"ingest: {time.time() - t0:.0f} s")


def finetune(data: Path, runs: Path, init: Path, target: str, args) -> dict[int, Path]:
    """Fine-tune ``target``'s net; returns {step: checkpoint} (step 0: the imported net)."""
    from stemforge.store import DataDir
    from stemforge.train.loop import TrainConfig, train

    snaps = runs / f"{target}_steps"
    found = {0: init}
    done = snaps / "done"
    if not done.is_file():
        shutil.rmtree(runs / target, ignore_errors=True)
        shutil.rmtree(snaps, ignore_errors=True)
        snaps.mkdir(parents=True)

        def progress(ev) -> None:
            if ev.kind == "checkpoint" and ev.path and str(ev.path).endswith("last.pt") and ev.step > 0:
                shutil.copy(ev.path, snaps / f"step_{ev.step:05d}.pt")
                log(f"{target}: step {ev.step} saved")

        cfg = TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, patch_frames=args.patch, val_every=args.every,
                          checkpoint_every=args.every, log_every=10, tensorboard=False, data_mode="memory", freeze_bn=True, seed=0)
        t0, c0 = time.time(), _cpu()
        log(f"fine-tune {target}: {args.steps} steps, lr {args.lr:g}, batch {args.batch}, patch {args.patch}, frozen BN")
        train(DataDir.open(data), runs / target, cfg, None, progress=progress, device="cpu", init=init, target=target)
        (snaps / "done").write_text(json.dumps({"wall_s": time.time() - t0, "cpu_s": _cpu() - c0}))
    info = json.loads(done.read_text())
    log(f"fine-tune {target}: {info['wall_s']:.0f} s wall, {info['cpu_s']:.0f} CPU s")
    for p in sorted(snaps.glob("step_*.pt")):
        found[int(p.stem.split("_")[1])] = p
    return found


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_net(path: Path, target: str):
    from stemforge.model.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    return ck.net(target) if len(ck.nets) > 1 else ck.model, ck.spectrogram_config


def load_tracks(tracks: list) -> list:
    """[(track, TrackAudio44)], decoded once (musdb18.load_track: mixture = stream 0, vocals,
    accompaniment = drums + bass + other)."""
    from stemforge.evaluate import musdb18

    return [(t, musdb18.load_track(t)) for t in tracks]


def sdr_windows(a, est: dict[str, np.ndarray]) -> np.ndarray:
    """The MUSDB18 protocol's SDR per 1 s window, ``[2 (vocals, accompaniment), n_windows]``.

    BSS Eval v4 in image mode (museval) takes the reference image itself as the target, so its SDR
    is ``10 log10(sum s^2 / sum (s_hat - s)^2)`` over the window and both channels (the ``sdr`` line
    of :meth:`stemforge.evaluate.bss.Projection.frames`), NaN where a reference's or an
    estimate's channel sum is silent throughout (museval's rule, the same function). SIR, SAR and
    ISR, which need the 512-tap projections (most of the cost), are not computed; ``--check``
    compares this with the full :func:`stemforge.evaluate.musdb18.track_frames`."""
    from stemforge.evaluate.bss import BssEvalV4

    refs = np.stack([a.vocals, a.accompaniment]).astype(np.float64)  # [2, C, n]
    ests = np.stack([np.asarray(est[k], dtype=np.float64) for k in ("vocals", "accompaniment")])
    n, w = refs.shape[-1], a.sample_rate
    starts = np.arange((n - w + w) // w) * w if n >= w else np.array([0])
    w = min(w, n)
    silent = BssEvalV4._silent_windows(refs, starts, w) | BssEvalV4._silent_windows(ests, starts, w)
    out = np.empty((2, len(starts)))
    for k, s0 in enumerate(starts):
        r, e = refs[..., s0 : s0 + w], ests[..., s0 : s0 + w]
        with np.errstate(divide="ignore"):
            out[:, k] = 10 * np.log10((r**2).sum(axis=(1, 2)) / ((e - r) ** 2).sum(axis=(1, 2)))
    out[:, silent] = np.nan
    return out


def _median(frames: np.ndarray) -> np.ndarray:
    return np.array([np.nanmedian(f) if np.isfinite(f).any() else np.nan for f in frames])


def score(nets: dict, cfg, loaded: list, methods: dict[str, dict], floor_and_ceiling: bool = False):
    """{method: (vocals median, accompaniment median, x real time)}: per track the median SDR over
    its 1 s windows (:func:`sdr_windows`), then the median over tracks; speed = audio seconds /
    separation wall seconds (this process)."""
    from stemforge.evaluate import musdb18
    from stemforge.separate.separator import Separator

    fns = {name: musdb18.model_method(Separator(dict(nets), cfg, device="cpu", **opts), name=name).estimate for name, opts in methods.items()}
    if floor_and_ceiling:
        fns["mixture"] = musdb18.mixture_method().estimate
        fns["oracle (IRM 4096/1024)"] = musdb18.oracle_method().estimate
    per = {name: [] for name in fns}
    secs = {name: 0.0 for name in fns}
    audio_s = 0.0
    for track, a in loaded:
        audio_s += a.mixture.shape[1] / a.sample_rate
        for name, fn in fns.items():
            t0 = time.perf_counter()
            est = fn(track, a, None)
            secs[name] += time.perf_counter() - t0
            per[name].append(_median(sdr_windows(a, est)))
    out = {}
    for name, rows in per.items():
        med = np.median(np.array(rows), axis=0)
        out[name] = (float(med[0]), float(med[1]), audio_s / secs[name] if name in methods else float("nan"))
    return out, per


def check_against_full_v4(nets: dict, cfg, loaded: list) -> float:
    """The largest |difference| (dB) between :func:`sdr_windows` and the full BSS Eval v4 of
    stemforge's MUSDB18 protocol (``track_frames``) on the first track, default post-filter."""
    from stemforge.evaluate import musdb18
    from stemforge.evaluate.bss import BssEvalV4
    from stemforge.evaluate.musdb18 import FILTER_LENGTH
    from stemforge.separate.separator import Separator

    track, a = loaded[0]
    est = musdb18.model_method(Separator(dict(nets), cfg, device="cpu")).estimate(track, a, None)
    refs = BssEvalV4(np.stack([a.vocals.T, a.accompaniment.T]).astype(np.float64), FILTER_LENGTH)
    full = musdb18.track_frames(refs, est, a.sample_rate)["sdr"]
    fast = sdr_windows(a, est)
    both = np.isfinite(full) & np.isfinite(fast)
    if not np.array_equal(np.isfinite(full), np.isfinite(fast)):
        raise SystemExit("sdr_windows: the silent windows differ from BSS Eval v4's")
    return float(np.abs(full[both] - fast[both]).max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="MUSDB18 root (train/ with .stem.mp4 files)")
    p.add_argument("--init", required=True, type=Path, help="the imported two-net checkpoint (stemforge import-spleeter)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--targets", default="accompaniment", help="nets to fine-tune: vocals, accompaniment or vocals,accompaniment")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--every", type=int, default=50, help="steps between the candidate copies")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="ingest workers")
    p.add_argument("--tracks", type=int, default=None, help="score only the first N validation tracks (a quick check)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from stemforge.evaluate import musdb18
    from stemforge.model.checkpoint import save_nets_checkpoint

    t_start = time.time()
    log(f"start; {os.cpu_count()} cores, torch threads {args.threads}")
    args.out.mkdir(parents=True, exist_ok=True)
    ingest(args.root, args.out / "data", args.workers)
    tracks = [t for t in musdb18.find_tracks(args.root, "train") if t.split == "valid"][: args.tracks]
    loaded = load_tracks(tracks)
    log(f"validation: {len(tracks)} tracks (MUSDB18's official list), decoded")

    imported, cfg = {}, None
    for t in ("vocals", "accompaniment"):
        imported[t], cfg = load_net(args.init, t)
    diff = check_against_full_v4(imported, cfg, loaded)
    log(f"check: SDR per window against stemforge's full BSS Eval v4 on {tracks[0].name}: max |difference| {diff:.2e} dB")
    if diff > 1e-3:
        raise SystemExit("the window SDR is not BSS Eval v4's")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    chosen = dict(imported)
    steps_of = {"vocals": 0, "accompaniment": 0}
    selection = {}
    tuned = dict(imported)  # the best candidate after step 0 of each target, for the table
    tuned_steps = {"vocals": 0, "accompaniment": 0}
    cache_file = args.out / "selection.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    base = None
    for target in targets:
        cands = finetune(args.out / "data", args.out / "runs", args.init, target, args)
        res = {}
        for step, path in sorted(cands.items()):
            if step == 0 and base is not None:
                res[0] = base
                continue
            key = f"{target}/{step}/" + ",".join(f"{t}:{steps_of[t]}" for t in sorted(steps_of)) + f"/{len(tracks)}"
            if key not in cache:
                nets = dict(chosen)
                nets[target] = load_net(path, target)[0] if step else imported[target]
                r, _ = score(nets, cfg, loaded, {"default": {}})
                cache[key] = list(r["default"][:2])
                cache_file.write_text(json.dumps(cache, indent=1))
            res[step] = tuple(cache[key])
            if step == 0:
                base = res[0]
            log(f"select {target}: step {step}: vocals {res[step][0]:.3f} accompaniment {res[step][1]:.3f} dB")
        ok = [s for s in res if res[s][1] >= res[0][1]]
        best = max(ok, key=lambda s: res[s][0])
        selection[target] = {str(s): [round(x, 3) for x in res[s][:2]] for s in res} | {"chosen": best}
        later = [s for s in res if s]
        if later:
            top = max(later, key=lambda s: res[s][0])
            tuned[target] = load_net(cands[top], target)[0]
            tuned_steps[target] = top
        if best:
            chosen[target] = load_net(cands[best], target)[0]
            steps_of[target] = best
            base = res[best]
        log(f"select {target}: step {best}")
    model = save_nets_checkpoint(args.out / "model.pt", chosen, cfg, steps=steps_of,
                                 extra={"musdb7": {"init": str(args.init), "selected_steps": steps_of}})
    log(f"wrote {model}")

    load0 = os.getloadavg()
    rows = {}
    r_imp, _ = score(imported, cfg, loaded, POSTS, floor_and_ceiling=True)
    for k, v in r_imp.items():
        rows[("imported", k) if k in POSTS else ("-", k)] = v
    if any(tuned_steps.values()):
        r_ft, _ = score(tuned, cfg, loaded, POSTS)
        for k, v in r_ft.items():
            rows[("fine-tuned", k)] = v
    load1 = os.getloadavg()
    ref = rows[("imported", "mask p2 (Spleeter's)")]
    print()
    print(f"MUSDB18 official validation ({len(tracks)} tracks), BSS Eval v4 median over 1 s windows then tracks")
    print(f"{'nets':11s} {'post-filter':22s} {'vocals':>7s} {'acc':>7s} {'d voc':>6s} {'d acc':>6s} {'x RT':>6s}")
    for (nets, post), (v, a, speed) in rows.items():
        print(f"{nets:11s} {post:22s} {v:7.2f} {a:7.2f} {v - ref[0]:+6.2f} {a - ref[1]:+6.2f} {speed:6.1f}")
    print(f"fine-tuned rows: steps {tuned_steps}; selected for model.pt: steps {steps_of} (selection: {selection})")
    print(f"load average before scoring {load0[0]:.1f}, after {load1[0]:.1f}; total {time.time() - t_start:.0f} s")
    (args.out / "table.json").write_text(json.dumps({
        "rows": [{"nets": n, "post": p, "vocals": v, "accompaniment": a, "x_realtime": s} for (n, p), (v, a, s) in rows.items()],
        "selection": selection, "steps": steps_of, "fine_tuned_rows_steps": tuned_steps, "load": [load0[0], load1[0]], "seconds": time.time() - t_start,
    }, indent=1))


if __name__ == "__main__":
    main()
