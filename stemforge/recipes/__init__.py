"""One module per corpus, each with ``NAME``, a layout docstring and ``discover(root)``.

:data:`RECIPES` maps a corpus name to its module path; :func:`get_recipe` imports it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stemforge.core.errors import StemforgeError

#: corpus name -> module (imported lazily). Add a line per recipe.
RECIPES: dict[str, str] = {
    "dsd100": "stemforge.recipes.dsd100",
    "medleydb": "stemforge.recipes.medleydb",
    "ikala": "stemforge.recipes.ikala",
    "mir1k": "stemforge.recipes.mir1k",
    "ccmixter": "stemforge.recipes.ccmixter",
    "musdb": "stemforge.recipes.musdb",
    "csv": "stemforge.recipes.csv",
    "pairs": "stemforge.recipes.karaoke",
}


def get_recipe(name: str) -> ModuleType:
    """The recipe module for corpus ``name``; StemforgeError lists the known ones otherwise."""
    key = name.lower()
    if key not in RECIPES:
        raise StemforgeError(f"unknown corpus {name!r}; known: {', '.join(sorted(RECIPES))}")
    return importlib.import_module(RECIPES[key])
