"""Docs stay current with the code."""

from pathlib import Path

from stemforge.store.manifest import COLUMNS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_manifest_column_is_documented():
    text = (DOCS / "data-format.md").read_text()
    missing = [c for c in COLUMNS if f"`{c}`" not in text]
    assert not missing, f"docs/data-format.md lacks {missing}"
