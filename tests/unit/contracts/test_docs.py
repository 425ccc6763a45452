"""Docs stay current with the code."""

import re

from stemforge.store.manifest import COLUMNS

from conftest import ROOT

DOCS = ROOT / "docs"


def test_every_manifest_column_is_documented():
    text = (DOCS / "data-format.md").read_text()
    missing = [c for c in COLUMNS if f"`{c}`" not in text]
    assert not missing, f"docs/data-format.md lacks {missing}"


def test_references_to_readme_sections_name_sections_that_exist():
    """`README "Section"` in the project's files (pyproject.toml, .ci/run, code, docs) names a
    heading README.md has."""
    root = DOCS.parent
    headings = {line.lstrip("#").strip() for line in (root / "README.md").read_text().splitlines() if line.startswith("#")}
    files = [root / "pyproject.toml", root / ".ci" / "run", *root.joinpath("stemforge").rglob("*.py"), *DOCS.glob("*.md")]
    cited = {}
    for path in files:
        for name in re.findall(r'README(?:\.md)?\s+"([^"]+)"', path.read_text()):
            cited.setdefault(name, path)
    assert cited, "no README reference found (the pattern is wrong)"
    missing = {name: str(path) for name, path in cited.items() if name not in headings}
    assert not missing, f"README.md has no section {missing}"
