"""An ensemble of U-Nets of one target whose masks are averaged (``stemforge ensemble``).

Nets trained apart (other seeds, losses or widths) make partly independent errors, so the mean
of their masks is a better mask than either: on MIR-1K's unseen-singer validation the mean of two
nets' vocal masks was 0.25 dB above the better net (docs/benchmarks.md). :class:`MaskEnsemble`
is what a format-3 checkpoint (:mod:`stemforge.model.checkpoint`) loads as; the Separator runs it
like one net.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from stemforge.core.errors import StemforgeError
from stemforge.model.config import UNetConfig
from stemforge.model.unet import UNet

#: The UNetConfig fields every member must share: what the Separator feeds the nets (bins,
#: channels), what it takes out (target), and the frames it windows the input into.
SHARED_FIELDS = ("target", "first_bin", "n_bins", "channels", "patch_frames")


def members_problem(configs: Sequence[UNetConfig]) -> str | None:
    """Why nets with these configs cannot be one ensemble (a phrase naming the first field that
    differs and its values, by member number from 1), or None when they can."""
    if len(configs) < 2:
        return f"an ensemble needs at least two nets, got {len(configs)}"
    first = configs[0]
    for i, c in enumerate(configs[1:], start=2):
        for f in SHARED_FIELDS:
            if getattr(c, f) != getattr(first, f):
                return f"net 1 has {f}={getattr(first, f)!r} and net {i} {f}={getattr(c, f)!r}"
    return None


def check_members(members: Sequence[nn.Module], what: str) -> None:
    """StemforgeError, its message starting with ``what``, unless ``members`` are two or more
    :class:`UNet` that can be one ensemble (:func:`members_problem`)."""
    bad = [type(m).__name__ for m in members if not isinstance(m, UNet)]
    if bad:
        raise StemforgeError(f"{what}: members must be UNets, got {', '.join(bad)}")
    problem = members_problem([m.config for m in members])
    if problem:
        raise StemforgeError(f"{what}: {problem}")


class MaskEnsemble(nn.Module):
    """The mean mask of two or more nets that see the same magnitudes and extract one target.

    ``forward(x)`` maps magnitudes ``[batch, channels, n_bins, n_frames]`` to the mean of the
    members' masks, the same shape, in ``[0, 1]`` when theirs are. The members may differ in
    width, variant and kernel size, never in :data:`SHARED_FIELDS`.

    Attributes:
        members: the nets (an ``nn.ModuleList`` of :class:`UNet`).
        config: the first member's :class:`UNetConfig`: what the Separator reads (bins, channels,
            target, patch frames) is the same for every member.
    """

    def __init__(self, members: Sequence[UNet]):
        super().__init__()
        members = list(members)
        check_members(members, "MaskEnsemble")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> UNetConfig:
        return self.members[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.members[0](x)
        for net in self.members[1:]:
            total = total + net(x)
        return total / len(self.members)

    def for_inference(self) -> "MaskEnsemble":
        """Each member's :meth:`UNet.for_inference` copy, as an ensemble (eval mode)."""
        return MaskEnsemble([m.for_inference() for m in self.members]).eval()
