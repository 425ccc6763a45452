"""The learning-rate schedule and early stopping of a run: one object, restored on resume.

:class:`Schedule` decides, step by step, the learning rate (``constant``, ``cosine``: a function
of the step, :meth:`~stemforge.train.config.TrainConfig.lr_at`) and, validation by validation,
whether the weights are the best so far, whether ``plateau`` halves the rate and whether early
stopping ends the run. Its counters travel in ``last.pt`` (:meth:`Schedule.state_dict`, under
``extra["schedule"]``, with ``best_val_loss``/``best_step`` beside it), so that a resumed run
takes the decisions the uninterrupted one would have. Torch-free: the loop applies the rate to
the optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from stemforge.train.config import TrainConfig


@dataclass
class Verdict:
    """What :meth:`Schedule.validated` decided about one validation.

    Attributes:
        best: a new best validation value (the caller keeps these weights).
        lr: the new learning rate when ``plateau`` halved it, else None.
        messages: what to tell the user (the rate was halved; training stops early).
    """

    best: bool
    lr: float | None = None
    messages: list[str] = field(default_factory=list)


class Schedule:
    """The learning rate, the best validation value and the early-stopping counters of a run.

    Args:
        config: the run's :class:`TrainConfig` (``lr``, ``lr_schedule``, ``patience``,
            ``early_stop``, ``steps``).
        state: what :meth:`state_dict` returned (None: a new run).
        best_val, best_step: the best validation value so far and its step (None: none yet).

    Attributes:
        lr: the rate of the latest step; plateau_count: validations without a new best since the
            last halving; since_best: validations without a new best; stopped_early: the step at
            which early stopping ended the run (None: it did not).
    """

    def __init__(self, config: TrainConfig, state: Mapping[str, Any] | None = None,
                 best_val: float | None = None, best_step: int | None = None):
        self.config = config
        self.best_val = best_val
        self.best_step = best_step
        self.load_state_dict(state or {})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (missing keys: a new run's values)."""
        self.lr = float(state.get("lr", self.config.lr))
        #: the rate last given to the optimizer (below :attr:`lr` during the warm-up, which sets
        #: it at every step; so it is not part of the state: after the warm-up it is :attr:`lr`)
        self.applied = self.lr
        self.plateau_count = int(state.get("plateau_count", 0))
        self.since_best = int(state.get("since_best", 0))
        self.stopped_early: int | None = state.get("stopped_early")

    def state_dict(self) -> dict[str, Any]:
        """What the schedule and early stopping carry over a resume (``extra["schedule"]`` of
        last.pt): ``lr_schedule``, ``lr``, ``plateau_count``, ``since_best``, ``stopped_early``."""
        return {
            "lr_schedule": self.config.lr_schedule, "lr": self.lr, "plateau_count": self.plateau_count,
            "since_best": self.since_best, "stopped_early": self.stopped_early,
        }

    def step_lr(self, step: int) -> float | None:
        """The learning rate to set before step ``step`` (0-based), or None when it stays: under
        ``cosine`` and during the ``warmup`` steps a value at every step, else only when it
        changed. :attr:`lr` stays the rate the warm-up ramps to (what ``plateau`` halves)."""
        cfg = self.config
        lr = float(cfg.lr_at(step, self.lr))
        if cfg.lr_schedule == "cosine":
            self.lr = self.applied = lr
            return lr
        if step < cfg.warmup or lr != self.applied:
            self.applied = lr
            return lr
        return None

    def validated(self, step: int, value: float) -> Verdict:
        """Take the validation value of step ``step`` (the loss: lower is better; with ``select``
        ``sdr`` the GNSDR in dB: higher is better): a new best resets the
        counters; otherwise ``plateau`` halves the rate after ``patience`` validations without
        one, and early stopping ends the run after ``early_stop`` of them (before ``steps``).
        Every process decides alike (``value`` is the same on all)."""
        cfg = self.config
        higher = cfg.select == "sdr"
        what = "validation GNSDR" if higher else "validation loss"
        if self.best_val is None or (value > self.best_val if higher else value < self.best_val):
            self.best_val, self.best_step = value, step
            self.since_best = self.plateau_count = 0
            return Verdict(best=True)
        verdict = Verdict(best=False)
        self.since_best += 1
        self.plateau_count += 1
        if cfg.lr_schedule == "plateau" and self.plateau_count >= cfg.patience:
            self.plateau_count = 0
            self.lr = self.applied = verdict.lr = self.lr / 2
            verdict.messages.append(
                f"no new best {what} for {cfg.patience} validations: learning rate halved to {self.lr:g}")
        if cfg.early_stop is not None and self.since_best >= cfg.early_stop and step < cfg.steps:
            self.stopped_early = step
            verdict.messages.append(
                f"early stop: no new best {what} for {cfg.early_stop} validations "
                f"(best {self.best_val:.5g} at step {self.best_step})")
        return verdict
