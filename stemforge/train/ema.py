"""An exponential moving average of a model's weights (``stemforge train --ema DECAY``).

After optimizer step ``t`` (1-based, counted over the whole run), every floating-point
parameter and buffer (BatchNorm running statistics included) of the average becomes::

    ema = d * ema + (1 - d) * current,    d = min(decay, (1 + t) / (10 + t))

so the average forgets the initial weights within the first steps (``d`` is 0.18 at ``t = 1``,
0.9 at ``t = 80``) and is an average over about ``1 / (1 - decay)`` steps afterwards; integer
buffers (BatchNorm's batch counter) are copied. The average is what a run validates and what
best.pt and model.pt hold; last.pt holds it too (``extra["ema"]``: its state and ``t``) so a
resumed run continues it exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay used at update ``updates`` (1-based): ``min(decay, (1 + t) / (10 + t))``."""
    return min(float(decay), (1.0 + updates) / (10.0 + updates))


class WeightAverage:
    """The moving average of ``model``'s weights: :attr:`model` is a copy (eval mode, no
    gradients) updated by :meth:`update` after each optimizer step.

    Args:
        model: the network being trained (copied).
        decay: the decay per step, in (0, 1).
        state: what :meth:`state_dict` returned (resume), or None to start from ``model``'s weights.
    """

    def __init__(self, model: nn.Module, decay: float, state: dict[str, Any] | None = None):
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if state is not None:
            self.load_state_dict(state)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        self.updates += 1
        d = ema_decay(self.decay, self.updates)
        current = model.state_dict()
        for name, value in self.model.state_dict().items():
            if value.is_floating_point():
                value.mul_(d).add_(current[name].detach(), alpha=1.0 - d)
            else:
                value.copy_(current[name])

    def state_dict(self) -> dict[str, Any]:
        """``{"decay", "updates", "weights"}`` (the average's state_dict, on the CPU)."""
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {"decay": self.decay, "updates": self.updates, "weights": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])
