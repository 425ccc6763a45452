"""Song identity across corpora, deterministic splits, and leakage control.

``song_key`` is the normalized ``artist - title`` of a song: lower case, accents and
punctuation removed, "feat." parts dropped, whitespace collapsed. Two rows with the same
song_key are the same song, whichever corpus they came from.

Names differ between corpora ("Set Me Free" in DSD100 is "Set Free Me" in MUSDB18; MUSDB18
calls MedleyDB's "Music Delta Multitracks - Country 1" "Music Delta - Country1"), so the shipped
table ``manifests/aliases.csv`` maps such keys to one canonical key (:func:`canonical_key`),
and can pin the key of one row by uid (MedleyDB's metadata gives two different Phoenix tracks
the same title).

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

Splits without an official list are deterministic functions of names, never of a random state:
:func:`hash_unit` (a stable number in [0, 1) per name) and :func:`balanced_split`, which
assigns whole groups (songs, singers, artists) to train/valid/test to approach the target
fractions.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

_FEAT = re.compile(r"\s*[\(\[]?\b(feat|ft|featuring)\b\.?.*?([\)\]]|$)", re.IGNORECASE)

SPLIT_RANK = {"train": 0, "valid": 1, "test": 2}

#: Which corpus keeps the primary row when a song is stored by several (first wins): the
#: multitracks with the most separate stems first, lossless before lossy; unknown corpora last.
DATASET_PRIORITY = ("medleydb", "dsd100", "musdb", "ccmixter", "ikala", "mir1k", "csv")


def normalize(text: str) -> str:
    """Lower case ASCII words separated by single spaces (accents, punctuation, 'feat.' dropped)."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _FEAT.sub(" ", text)
    text = text.replace("&", " and ")
    text = re.sub(r"[^0-9a-zA-Z]+", " ", text).strip().lower()
    return re.sub(r"\s+", " ", text)


def song_key(artist: str, title: str) -> str:
    """``"<artist> - <title>"`` normalized; falls back to the title alone when no artist."""
    a, t = normalize(artist), normalize(title)
    return f"{a} - {t}" if a else t


def split_camel(text: str) -> str:
    """``"LarkOnTheStrand80sRock"`` -> ``"Lark On The Strand 80s Rock"`` (MedleyDB ids)."""
    text = re.sub(r"(?<=[a-z])(?=[A-Z0-9])|(?<=[0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", text)
    return re.sub(r"\s+", " ", text).strip()


# -- aliases -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AliasTable:
    """``by_key``: song_key -> canonical song_key; ``by_uid``: uid -> song_key pinned for that row."""

    by_key: Mapping[str, str]
    by_uid: Mapping[str, str]


@lru_cache(maxsize=1)
def aliases() -> AliasTable:
    """The shipped alias table (``manifests/aliases.csv``: columns uid, alias, song_key, note)."""
    from stemforge.reference import reference_manifest

    ref = reference_manifest("aliases")
    by_key: dict[str, str] = {}
    by_uid: dict[str, str] = {}
    for uid, alias, key in zip(ref["uid"], ref["alias"], ref["song_key"]):
        if uid:
            by_uid[uid] = key
        elif alias:
            by_key[alias] = key
    return AliasTable(by_key, by_uid)


def canonical_key(key: str, uid: str | None = None, table: AliasTable | None = None) -> str:
    """The canonical song_key of ``key`` (of row ``uid``): a uid pin first, then a key alias.

    Aliases are followed until a fixed point (at most 8 steps), so chains resolve.
    """
    table = table or aliases()
    if uid and uid in table.by_uid:
        return table.by_uid[uid]
    seen = 0
    while key in table.by_key and seen < 8 and table.by_key[key] != key:
        key = table.by_key[key]
        seen += 1
    return key


# -- deterministic splits ------------------------------------------------------------------
def hash_unit(name: str, salt: str = "") -> float:
    """A stable number in [0, 1) for ``name`` (SHA-256; the same on every machine and run)."""
    digest = hashlib.sha256(f"{salt}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(name: str, valid_fraction: float, test_fraction: float, salt: str = "") -> str:
    """train/valid/test for ``name`` alone from :func:`hash_unit` (for names outside any list)."""
    u = hash_unit(name, salt)
    if u < test_fraction:
        return "test"
    return "valid" if u < test_fraction + valid_fraction else "train"


def check_fractions(valid_fraction: float, test_fraction: float) -> None:
    """Raise StemforgeError unless both fractions are in [0, 1) and sum below 1."""
    from stemforge.errors import StemforgeError

    for name, v in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(v) < 1.0:
            raise StemforgeError(f"{name} must be in [0, 1), got {v}")
    if valid_fraction + test_fraction >= 1.0:
        raise StemforgeError(f"valid_fraction + test_fraction must stay below 1, got {valid_fraction + test_fraction}")


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


# -- reconciliation of a DataDir -----------------------------------------------------------
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
