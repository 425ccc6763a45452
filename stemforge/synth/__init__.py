"""A procedural corpus: synthetic songs (:mod:`stemforge.synth.songs`) written in the on-disk
layout of each real corpus (:mod:`stemforge.synth.layouts`).

:data:`LAYOUTS` is the one registry of layouts. It holds names only (no numpy), so that the
CLI reads it at start-up without importing the synthesis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """One on-disk layout that :func:`stemforge.synth.layouts.write_corpus` writes.

    ``recipe`` is the ``NAME`` of the recipe that reads it (``stemforge ingest RECIPE``),
    ``writer`` the ``write_*`` function of :mod:`stemforge.synth.layouts` that writes it,
    ``options`` the keyword options it takes (``entries``: real ids or names for some songs).
    """

    recipe: str
    writer: str
    options: tuple[str, ...] = ("entries",)


#: layout name -> Layout. A layout is named after the recipe that reads it; a recipe that reads
#: two on-disk formats has one layout per format (``musdb-hq``: MUSDB18-HQ's wav folders).
#: Adding a corpus: its recipe (``stemforge.recipes.RECIPES``), its writer, and one line here.
LAYOUTS: dict[str, Layout] = {
    "dsd100": Layout("dsd100", "write_dsd100"),
    "musdb": Layout("musdb", "write_musdb", ("entries", "bit_rate")),
    "musdb-hq": Layout("musdb", "write_musdb_hq"),
    "medleydb": Layout("medleydb", "write_medleydb", ("metadata_dir", "track_ids")),
    "ikala": Layout("ikala", "write_ikala"),
    "mir1k": Layout("mir1k", "write_mir1k", ("entries", "singers", "clip_seconds")),
    "ccmixter": Layout("ccmixter", "write_ccmixter"),
    "pairs": Layout("pairs", "write_pairs", ("entries", "max_offset_s", "max_gain_db", "karaoke_rate")),
}
