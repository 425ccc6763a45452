"""Reconciliation of a DataDir's rows across corpora: aliases, strictest split, duplicates.

:func:`reconcile_datadir` runs after every manifest commit of an ingest (under the write lock):

1. every row's ``song_key`` goes through the alias table;
2. ``corpus_split`` keeps the split the row's own recipe gave (filled once, when the row is new);
3. every row of a song gets the strictest ``corpus_split`` found among that song's rows in any
   corpus (test > valid > train), so a later ingest can move rows that are already stored to a
   stricter split (never to a laxer one while the stricter corpus is still there);
4. when a song is stored by several corpora, the rows of the preferred corpus
   (:data:`DATASET_PRIORITY`) stay primary and the rows of every other corpus get
   ``duplicate_of`` = the primary uid. Their arrays are kept (nothing is lost) but
   ``DataDir.select()`` leaves them out, so training and remixing see each song once. Rows of
   one corpus that share a key (iKala's chorus and verse of one song, MIR-1K clips of one
   song) are excerpts, not duplicates: they only share the split.

Remix rows (``vocals_kind == "remix"``) are left alone: remixes are built from train rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stemforge.recipes.identity import AliasTable, aliases, canonical_key
from stemforge.recipes.splits import SPLIT_RANK, strictest

#: Which corpus keeps the primary row when a song is stored by several (first wins): the
#: multitracks with the most separate stems first, lossless before lossy; unknown corpora last.
DATASET_PRIORITY = ("medleydb", "dsd100", "musdb", "ccmixter", "ikala", "mir1k", "csv")


@dataclass
class ReconcileReport:
    """What :func:`reconcile_datadir` changed: rows moved to a stricter split, keys aliased,
    rows newly marked duplicate (uid -> primary uid)."""

    moved: list[tuple[str, str, str, str]] = field(default_factory=list)  # uid, from, to, because uid
    rekeyed: list[tuple[str, str, str]] = field(default_factory=list)  # uid, old key, new key
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    n_changed: int = 0


def _empty(v) -> bool:
    """True for None, NaN, pandas.NA and ""."""
    import pandas as pd

    if v is None or v is pd.NA:
        return True
    if isinstance(v, float):
        return v != v
    return isinstance(v, str) and v == ""


def _priority(dataset: str) -> tuple[int, str]:
    try:
        return (DATASET_PRIORITY.index(dataset), dataset)
    except ValueError:
        return (len(DATASET_PRIORITY), dataset)


def reconcile_frame(df, table: AliasTable | None = None) -> tuple[list[dict], ReconcileReport]:
    """Compute the identity fields of manifest ``df``; returns (changed rows as dicts, report).

    Pure: reads ``df`` (a manifest DataFrame) and returns full row dicts for the rows whose
    ``song_key``, ``corpus_split``, ``split`` or ``duplicate_of`` must change.
    """
    report = ReconcileReport()
    if df is None or len(df) == 0:
        return [], report
    table = table or aliases()
    records = df.to_dict("records")
    state: list[dict] = []
    for rec in records:
        remix = rec.get("vocals_kind") == "remix" or rec.get("dataset") == "remix"
        key = rec.get("song_key")
        key = "" if _empty(key) else str(key)
        new_key = canonical_key(key, rec["uid"], table) if key and not remix else key
        corpus_split = rec.get("corpus_split")
        corpus_split = rec["split"] if _empty(corpus_split) else str(corpus_split)
        state.append({"key": new_key, "corpus_split": corpus_split, "split": rec["split"], "dup": "", "remix": remix})
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(state):
        if s["key"] and not s["remix"]:
            groups.setdefault(s["key"], []).append(i)
    for key, idx in groups.items():
        split = strictest(state[i]["corpus_split"] for i in idx)
        because = next(records[i]["uid"] for i in idx if state[i]["corpus_split"] == split)
        datasets = sorted({str(records[i]["dataset"]) for i in idx}, key=_priority)
        primary = None
        if len(datasets) > 1:
            primary = min((records[i]["uid"] for i in idx if records[i]["dataset"] == datasets[0]))
        for i in idx:
            s = state[i]
            s["split"] = split
            s["because"] = because
            if primary is not None and records[i]["dataset"] != datasets[0]:
                s["dup"] = primary
    changed: list[dict] = []
    for rec, s in zip(records, state):
        old_key = "" if _empty(rec.get("song_key")) else str(rec.get("song_key"))
        old_dup = "" if _empty(rec.get("duplicate_of")) else str(rec.get("duplicate_of"))
        old_cs = rec.get("corpus_split")
        if s["remix"]:
            continue
        diff = False
        new = dict(rec)
        if s["key"] != old_key:
            report.rekeyed.append((rec["uid"], old_key, s["key"]))
            new["song_key"] = s["key"]
            diff = True
        if _empty(old_cs) or str(old_cs) != s["corpus_split"]:
            new["corpus_split"] = s["corpus_split"]
            diff = True
        if s["split"] != rec["split"]:
            report.moved.append((rec["uid"], rec["split"], s["split"], s.get("because", "")))
            new["split"] = s["split"]
            diff = True
        if s["dup"] != old_dup:
            if s["dup"]:
                report.duplicates.append((rec["uid"], s["dup"]))
            new["duplicate_of"] = s["dup"] or None
            diff = True
        if diff:
            changed.append(new)
    report.n_changed = len(changed)
    return changed, report


def reconcile_datadir(datadir) -> ReconcileReport:
    """Apply aliases, split propagation and duplicate marking to ``datadir``'s manifest.

    Called by the ingest engine under the write lock after every manifest commit (the CLI
    passes it as ``post_commit``); takes the lock itself when called alone. Commits only the
    rows that change. Idempotent: a second call changes nothing.
    """
    with datadir.writing():
        changed, report = reconcile_frame(datadir.manifest)
        if changed:
            datadir.commit(changed)
    return report
