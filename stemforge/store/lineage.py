"""Remix lineage read from manifest columns alone: which rows are remixes, which rows a remix
may take audio from, and which stored remixes have gone stale.

A remix row (``dataset == "remix"``, ``vocals_kind == "remix"``) records its parents as JSON in
``parents`` (vocal uid, accompaniment uid, offsets, gains). Remixes are built from train rows
only (:func:`remix_sources`); when identity reconciliation later moves a parent to valid or
test, marks it a duplicate or it leaves the manifest, the remix would leak a held-out song
into training (:func:`stale_remixes`): ``augment`` drops such rows and ``validate`` flags them.
"""

from __future__ import annotations

import json

import pandas as pd

DATASET = "remix"
VOCALS_KIND = "remix"


def remix_sources(df: pd.DataFrame) -> pd.DataFrame:
    """Rows a remix may take audio from: train, not a duplicate, not itself a remix, sorted by uid."""
    if df.empty:
        return df
    dup = df["duplicate_of"].isna() | (df["duplicate_of"] == "")
    mask = (df["split"] == "train") & dup.fillna(True) & (df["vocals_kind"] != VOCALS_KIND).fillna(True)
    mask &= df["dataset"] != DATASET
    return df[mask.fillna(False)].sort_values("uid", kind="stable")


def is_remix(df: pd.DataFrame) -> pd.Series:
    """Boolean mask of remix rows."""
    return ((df["vocals_kind"] == VOCALS_KIND) | (df["dataset"] == DATASET)).fillna(False).astype(bool)


def stale_remixes(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Remix rows whose parents are no longer train sources (moved to valid/test by identity
    reconciliation, marked duplicate, removed, or unreadable lineage): ``[(uid, reason)]``.

    Such a remix would leak a held-out song into training; :func:`augment` drops them.
    """
    if df.empty:
        return []
    sources = set(remix_sources(df)["uid"])
    by_uid = df.set_index("uid")
    out = []
    for row in df[is_remix(df)].itertuples(index=False):
        try:
            lineage = json.loads(row.parents)
            parents = [lineage["vocals"], lineage["accompaniment"]]
        except (TypeError, ValueError, KeyError):
            out.append((row.uid, "lineage (parents) missing or unreadable"))
            continue
        if row.split != "train":
            out.append((row.uid, f"remix is in split {row.split}, not train"))
            continue
        for p in parents:
            if p in sources:
                continue
            if p not in by_uid.index:
                why = f"parent {p} is no longer in the manifest"
            else:
                prow = by_uid.loc[p]
                if prow["split"] != "train":
                    why = f"parent {p} is now in split {prow['split']}"
                elif isinstance(prow["duplicate_of"], str) and prow["duplicate_of"]:
                    why = f"parent {p} is now a duplicate of {prow['duplicate_of']}"
                else:
                    why = f"parent {p} is not a remix source"
            out.append((row.uid, why))
            break
    return out
