"""Song identity across corpora: one normalized ``artist - title`` key per song.

``song_key`` is the normalized ``artist - title`` of a song: lower case, accents and
punctuation removed, "feat." parts dropped, whitespace collapsed. Two rows with the same
song_key are the same song, whichever corpus they came from.

Names differ between corpora ("Set Me Free" in DSD100 is "Set Free Me" in MUSDB18; MUSDB18
calls MedleyDB's "Music Delta Multitracks - Country 1" "Music Delta - Country1"), so the shipped
table ``manifests/aliases.csv`` maps such keys to one canonical key (:func:`canonical_key`),
and can pin the key of one row by uid (MedleyDB's metadata gives two different Phoenix tracks
the same title). How rows of one song are reconciled across corpora (strictest split,
duplicates) is :mod:`stemforge.ingest.engine.reconcile`; split rules are :mod:`stemforge.recipes.splits`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_FEAT = re.compile(r"\s*[\(\[]?\b(feat|ft|featuring)\b\.?.*?([\)\]]|$)", re.IGNORECASE)


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
    from stemforge.recipes.reference import reference_manifest

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
