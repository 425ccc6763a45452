"""Deterministic train/valid/test splits for corpora without an official list.

Splits are functions of names, never of a random state: :func:`hash_unit` (a stable number in
[0, 1) per name), :func:`hash_split` for one name alone, and :func:`balanced_split`, which
assigns whole groups (songs, singers, artists) to train/valid/test to approach the target
fractions. :data:`SPLIT_RANK` orders them from laxest to strictest.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

from stemforge.core.errors import OptionError

SPLIT_RANK = {"train": 0, "valid": 1, "test": 2}


def hash_unit(name: str, salt: str = "") -> float:
    """A stable number in [0, 1) for ``name`` (SHA-256; the same on every machine and run)."""
    digest = hashlib.sha256(f"{salt}|{name}".encode("utf-8", "surrogateescape")).digest()  # a file name need not be UTF-8
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(name: str, valid_fraction: float, test_fraction: float, salt: str = "") -> str:
    """train/valid/test for ``name`` alone from :func:`hash_unit` (for names outside any list)."""
    u = hash_unit(name, salt)
    if u < test_fraction:
        return "test"
    return "valid" if u < test_fraction + valid_fraction else "train"


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """Raise OptionError unless both fractions are in [0, 1) and sum below 1."""
    for name, v in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(v) < 1.0:
            raise OptionError(name, f"must be in [0, 1), got {v}")
    if valid_fraction + test_fraction >= 1.0:
        raise OptionError("valid_fraction", f"valid_fraction + test_fraction must stay below 1, got {valid_fraction + test_fraction:g}")


def balanced_split(
    weights: Mapping[str, float],
    valid_fraction: float,
    test_fraction: float,
    salt: str = "",
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign whole groups to train/valid/test, approaching the target fractions of the weight.

    ``weights``: group -> weight (e.g. artist -> number of songs). ``fixed``: groups whose
    split is imposed (official lists); they count towards the targets. Groups are taken
    heaviest first (ties broken by :func:`hash_unit` of the name with ``salt``) and each goes
    to the split whose target is furthest from reached, so big groups fill train and the
    held-out splits get many small groups. Deterministic: the same names and fractions give the
    same answer on every machine. Returns group -> split for every group of ``weights``.
    """
    check_fractions(valid_fraction, test_fraction)
    fixed = dict(fixed or {})
    total = float(sum(weights.values()))
    target = {
        "test": test_fraction * total,
        "valid": valid_fraction * total,
        "train": (1.0 - valid_fraction - test_fraction) * total,
    }
    used = {"train": 0.0, "valid": 0.0, "test": 0.0}
    out: dict[str, str] = {}
    for group, split in fixed.items():
        if group in weights:
            out[group] = split
            used[split] += float(weights[group])
    order = sorted((g for g in weights if g not in out), key=lambda g: (-float(weights[g]), hash_unit(g, salt), g))
    for group in order:
        # the split with the largest remaining deficit; ties: test, then valid, then train
        split = max(("test", "valid", "train"), key=lambda s: (target[s] - used[s], SPLIT_RANK[s]))
        if target[split] - used[split] <= 0:
            split = "train"
        out[group] = split
        used[split] += float(weights[group])
    return out


def strictest(splits) -> str:
    """The strictest of ``splits`` (test > valid > train)."""
    return max(splits, key=lambda s: SPLIT_RANK.get(s, -1))
