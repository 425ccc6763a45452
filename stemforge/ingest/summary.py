"""What an ingest changed, as figures for its summary (``stemforge ingest`` prints them).

* :func:`split_table`: tracks, duplicates and hours per split, and what this run added;
* :func:`excluded_by_rule`: the excluded tracks grouped by the rule their reason names;
* :func:`moved_rows`: rows stored before the run that identity reconciliation moved to a
  stricter split;
* :func:`suggest_valid_fraction`: for a DataDir left without a valid split, the smallest
  ``valid_fraction`` of :data:`TRY_FRACTIONS` that puts one of the corpus's songs in valid.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pandas as pd

SPLIT_NAMES = ("train", "valid", "test")
#: ``valid_fraction`` values :func:`suggest_valid_fraction` tries, in order.
TRY_FRACTIONS = (0.15, 0.2, 0.25, 0.34, 0.5)


def split_table(df: pd.DataFrame, new_uids: set[str]) -> list[dict]:
    """One row per split of the manifest ``df``: ``added`` tracks (of ``new_uids``) and their
    hours ``added_h``, ``tracks``, ``duplicates`` (rows with ``duplicate_of``), ``hours``."""
    is_dup = df["duplicate_of"].notna() & (df["duplicate_of"] != "")
    rows = []
    for split in SPLIT_NAMES:
        part = df[df["split"] == split]
        added = df[df["uid"].isin(new_uids) & (df["split"] == split)]
        rows.append(
            {
                "split": split,
                "added": len(added),
                "added_h": float(added["duration_s"].sum()) / 3600 if len(added) else 0.0,
                "tracks": len(part),
                "duplicates": int(is_dup[part.index].sum()),
                "hours": float(part["duration_s"].sum()) / 3600,
            }
        )
    return rows


def reason_kind(reason: str) -> str:
    """The rule an exclusion reason names: the text before its first ':' ("instrumental", ...)."""
    head = reason.split(":", 1)[0].strip()
    return head if head and len(head) <= 40 and "/" not in head else "other"


def excluded_by_rule(excluded: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """``(uid, reason)`` pairs grouped by :func:`reason_kind`, the largest group first."""
    kinds: dict[str, list[tuple[str, str]]] = {}
    for uid, why in excluded:
        kinds.setdefault(reason_kind(why), []).append((uid, why))
    return dict(sorted(kinds.items(), key=lambda kv: -len(kv[1])))


def moved_rows(before: pd.DataFrame, df: pd.DataFrame, new_uids: set[str]) -> list[tuple[str, str, str]]:
    """``(uid, old split, new split)`` of the rows stored before the run (``before``: uid and
    split) whose split the run changed (identity reconciliation), in ``before``'s order."""
    if not len(before):
        return []
    old, cur = before.set_index("uid"), df.set_index("uid")
    common = [u for u in old.index if u in cur.index and u not in new_uids]
    return [(u, old.at[u, "split"], cur.at[u, "split"]) for u in common if old.at[u, "split"] != cur.at[u, "split"]]


def suggest_valid_fraction(recipe: ModuleType, root: str | Path, options: dict) -> tuple[float, int, int] | None:
    """``(valid_fraction, songs in valid, songs found)`` for the smallest of :data:`TRY_FRACTIONS`
    above the ``valid_fraction`` in ``options`` (keeping its sum with ``test_fraction`` below
    1) with which ``recipe.discover(root, **options)`` puts a usable track in valid; None when
    none does. Only a suggestion: a discovery that fails ends the search (None)."""
    test_fraction = float(options.get("test_fraction", recipe.TEST_FRACTION))
    current = float(options.get("valid_fraction", recipe.VALID_FRACTION))
    for fraction in TRY_FRACTIONS:
        if fraction <= current or fraction + test_fraction >= 1.0:
            continue
        try:
            trial = recipe.discover(root, **{**options, "valid_fraction": fraction})
        except Exception:  # the ingest itself already succeeded
            return None
        usable = [t for t in trial if not t.skip_reason and not t.error]
        n_valid = sum(1 for t in usable if t.split == "valid")
        if n_valid:
            return fraction, n_valid, len(usable)
    return None
