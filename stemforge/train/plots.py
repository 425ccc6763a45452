"""The loss curve of a training run: ``loss.png`` from ``metrics.csv``.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch), so it works
on machines without a display and never touches the caller's matplotlib state.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from stemforge.core.errors import StemforgeError
from stemforge.core.files import atomic_path


def read_losses(metrics_csv: str | os.PathLike) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(train, valid)`` lists of ``(step, loss)`` from a run's metrics.csv (empty cells skipped)."""
    path = Path(metrics_csv)
    if not path.exists():
        raise StemforgeError(f"{path}: no metrics file")
    train: list[tuple[int, float]] = []
    valid: list[tuple[int, float]] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            for key, dest in (("train_loss", train), ("val_loss", valid)):
                value = (row.get(key) or "").strip()
                if value:
                    try:
                        dest.append((step, float(value)))
                    except ValueError:
                        pass
    return train, valid


def plot_loss(metrics_csv: str | os.PathLike, out_png: str | os.PathLike, title: str | None = None) -> Path:
    """Write the train and validation L1 loss against step to ``out_png`` (atomically); returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train, valid = read_losses(metrics_csv)
    out_png = Path(out_png)
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="train (mean over log interval)", color="tab:blue", lw=1.2)
    if valid:
        ax.plot([s for s, _ in valid], [v for _, v in valid], label="validation", color="tab:orange", marker="o", ms=3, lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("L1 loss (normalized magnitude)")
    ax.set_title(title or "training loss")
    ax.grid(True, alpha=0.3)
    if train or valid:
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no loss recorded yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png, fsync=False) as tmp:  # a picture: not fsynced, as before
        fig.savefig(tmp, format="png")
    return out_png
