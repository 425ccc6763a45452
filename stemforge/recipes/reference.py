"""Reference manifests shipped with the package (``stemforge/manifests/*.csv``, the one copy): track lists, official
splits, identity across corpora. Built from public facts by ``tools/make_manifests.py``."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

from stemforge.core.errors import ManifestError


@lru_cache(maxsize=None)
def reference_manifest(name: str) -> pd.DataFrame:
    """The shipped reference table ``manifests/<name>.csv`` (read once per process)."""
    try:
        ref = resources.files("stemforge").joinpath("manifests", f"{name}.csv")
        with ref.open("r", encoding="utf-8") as f:
            return pd.read_csv(f, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ManifestError(f"reference manifest {name}.csv is not installed with stemforge") from None
