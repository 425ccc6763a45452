"""Song identity across corpora.

``song_key`` is the normalized ``artist - title`` of a song: lower case, accents and
punctuation removed, "feat." parts dropped, whitespace collapsed. Two rows with the same
song_key are the same song, whichever corpus they came from.
"""

from __future__ import annotations

import re
import unicodedata

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
