"""What an ingest changed, as figures for its summary (``stemforge ingest`` prints them).

* :func:`split_table`: tracks, duplicates and hours per split, and what this run added;
* :func:`excluded_by_rule`: the excluded tracks grouped by the rule their reason names;
* :func:`moved_rows`: rows stored before the run that identity reconciliation moved to a
  stricter split;
* :func:`suggest_valid_fraction`: for a DataDir left without a valid split, the smallest
  ``valid_fraction`` of :data:`TRY_FRACTIONS` that puts one of the corpus's songs in valid;
* :func:`summarize` and :func:`no_valid_split`: the summary's lines, handed to the caller's
  ``out`` (the summary) and ``err`` (warnings) or returned (nothing here prints).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

import pandas as pd

from stemforge.core.text import format_table

Say = Callable[[str], None]

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


def summarize(df: pd.DataFrame, report, before: pd.DataFrame, out: Say, err: Say) -> None:
    """The summary of an ingest whose :class:`~stemforge.ingest.engine.IngestReport` is
    ``report``, the manifest ``df`` read after it and ``before`` (uid, split, duplicate_of)
    before it: split table, counts, tracks downmixed file by file, excluded tracks grouped by
    rule, what identity reconciliation changed in rows stored before (split moves, duplicates)
    to ``out``; stale remixes and leaks to ``err``."""
    from stemforge.store.check import leakage
    from stemforge.store.lineage import stale_remixes

    new_uids = {r["uid"] for r in report.ingested}
    out("")
    out(format_table(split_table(df, new_uids)))
    out(
        f"ingested {len(report.ingested)}, unchanged {len(report.unchanged)}, "
        f"excluded {len(report.excluded)}, failed {len(report.failed)}"
    )
    mixed = [r["uid"] for r in report.ingested if isinstance(r.get("stem_channels"), str) and r["stem_channels"]]
    if mixed:
        shown = ", ".join(mixed[:5]) + (f" and {len(mixed) - 5} more" if len(mixed) > 5 else "")
        track = "track had" if len(mixed) == 1 else "tracks had"
        out(f"{len(mixed)} {track} files of different channel counts, each file downmixed on its own (column stem_channels): {shown}")
    if report.excluded:
        kinds = excluded_by_rule(report.excluded)
        out("excluded by rule: " + ", ".join(f"{k} {len(v)}" for k, v in kinds.items()))
        for kind, items in sorted(kinds.items()):
            shown = items if len(items) <= 12 else items[:10]
            for uid, why in shown:
                out(f"  {uid}: {why}")
            if len(shown) < len(items):
                out(f"  ... and {len(items) - len(shown)} more {kind}")
    moved = moved_rows(before, df, new_uids)
    if moved:
        out(f"moved to a stricter split ({len(moved)} stored row(s); the same song is held out in another corpus):")
        for u, a, b in moved:
            out(f"  {u}: {a} -> {b}")
    dups = df[df["duplicate_of"].notna() & (df["duplicate_of"] != "")]
    involved = dups[dups["uid"].isin(new_uids) | dups["duplicate_of"].isin(new_uids)]
    if len(involved):
        out(f"duplicates of songs stored by another corpus ({len(involved)}; kept, marked duplicate_of, left out of training):")
        for r in involved.head(20).itertuples():
            out(f"  {r.uid} -> {r.duplicate_of}")
        if len(involved) > 20:
            out(f"  ... and {len(involved) - 20} more (stemforge info lists them all)")
    stale = stale_remixes(df)
    if stale:
        err(
            f"{len(stale)} remix row(s) now have a parent outside train (moved by identity reconciliation); "
            "the next `stemforge augment` drops and replaces them"
        )
    for line in leakage(df):
        err(f"leak: {line}")


def no_valid_split(df: pd.DataFrame, corpus: str, recipe: ModuleType, root: str | Path, options: dict,
                   official: bool) -> list[str]:
    """Warning lines when the DataDir (``df``: its rows without duplicates) holds no valid track (training would have
    no validation): what to do, with a ``--valid-fraction`` that gives the songs of
    ``recipe.discover(root, **options)`` a valid split when one exists (not for a corpus whose
    split is ``official`` or a recipe's fixed split rule)."""
    if not len(df) or (df["split"] == "valid").any():
        return []
    counts = df["split"].value_counts()
    held = ", ".join(f"{name} {int(counts.get(name, 0))}" for name in SPLIT_NAMES)
    lines = [
        f"warning: this DataDir has NO VALID SPLIT ({held} tracks): `stemforge train` will have no "
        "validation loss and can keep only its last checkpoint, not its best."
    ]
    if official:
        lines.append(f"  {corpus} follows its official split: ingest more of its songs (or another corpus with a valid split).")
        return lines
    fixed = getattr(recipe, "fixed_split", lambda **_: None)(**options)
    if fixed:  # the fraction options do not apply: never recommend them
        lines.append(f"  {fixed}: ingest another corpus with a valid split, or choose another split rule.")
        return lines
    found = suggest_valid_fraction(recipe, root, options)
    lines.append("  ingest more songs, or re-run this ingest with a larger --valid-fraction and --force")
    if found:
        f, n_valid, n = found
        lines[-1] += f": --valid-fraction {f:g} --force puts {n_valid} of these {n} songs in valid."
    else:
        lines[-1] += (
            f" (no --valid-fraction up to {TRY_FRACTIONS[-1]:g} puts one of these songs in valid: the assignment is "
            "deterministic by song, so add songs)."
        )
    return lines
