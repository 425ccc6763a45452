"""What tests/unit/store/test_reliability_store.py and
tests/integration/test_reliability_store_disk.py share."""

from __future__ import annotations

from pathlib import Path

N_SONGS = 6


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _assert_complete(data: Path) -> None:
    from stemforge.store import DataDir
    from stemforge.store.check import validate

    dd = DataDir.open(data)
    assert len(dd.manifest) == N_SONGS
    res = validate(dd)
    assert res.ok, res.problems

