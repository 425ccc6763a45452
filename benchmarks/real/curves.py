"""Validation GNSDR of the vocals against steps, for several ``stemforge train`` runs, in one plot.

    python benchmarks/real/curves.py RUN_A RUN_B ... --label A --label B --out curves.png

Each RUN is a run folder (``--out`` of ``stemforge train`` with ``--select sdr``): its
``metrics.csv`` rows holding ``val_gnsdr_vocals`` are drawn, and printed as a table (steps in
rows, runs in columns), with each run's best.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mir1k import read_metrics, validation_curve  # noqa: E402  (the reading of metrics.csv, shared)


def validation(run: Path) -> dict[int, float]:
    """``{step: vocals GNSDR (dB)}`` of a run's validations."""
    return {step: vocals for step, _, vocals, _ in validation_curve(read_metrics(run / "metrics.csv"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--label", action="append", default=[], help="one per run, in order (default: the folder's name)")
    p.add_argument("--title", default="validation GNSDR of the vocals")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    a = p.parse_args(argv)
    labels = a.label + [r.name for r in a.runs[len(a.label):]]
    curves = [validation(r) for r in a.runs]

    steps = sorted(set().union(*curves))
    width = max(12, *(len(x) + 2 for x in labels))
    print("step".rjust(6) + "".join(x.rjust(width) for x in labels))
    for s in steps:
        print(f"{s:6d}" + "".join((f"{c[s]:.2f}" if s in c else "-").rjust(width) for c in curves))
    print("best".rjust(6) + "".join((f"{max(c.values()):.2f}@{max(c, key=c.get)}" if c else "-").rjust(width)
                                     for c in curves))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for c, label in zip(curves, labels):
        xs = sorted(k for k in c if k > 0)
        ax.plot(xs, [c[k] for k in xs], marker="o", ms=4, lw=1.5, label=label)
    ax.set_xlabel("training step (32 crops of 4.1 s each)")
    ax.set_ylabel("GNSDR, vocals (dB)")
    ax.set_title(a.title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, format="png")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
