"""The training tests' DataDir (tests/unit/train/, tests/integration/test_train*_commands.py)."""

from __future__ import annotations

import pytest

from stemforge.store import DataDir


@pytest.fixture(scope="module")
def datadir(tiny_datadirs) -> DataDir:
    """Synthetic DSD100 songs: four train songs and one valid song (a name the recipe holds out),
    ingested once per session and shared read-only (conftest's tiny_datadirs)."""
    entries = [dict(id=51 + i, subset="Dev", artist=f"Synth Artist {i}", title=f"Song {i}") for i in range(4)]
    entries.append(dict(id=65, subset="Dev", artist="Fergessen", title="Nos Palpitants"))  # valid in DSD100
    made = tiny_datadirs.get("dsd100", songs=5, seconds=10.0, seed=3, entries=entries)  # ingest asserts nothing failed
    dd = DataDir.open(made.data)
    assert sorted(dd.manifest["split"]) == ["train"] * 4 + ["valid"]
    return dd
