"""What tests/unit/recipes/test_reliability_recipes.py and
tests/integration/test_reliability_recipes_memory.py share."""

from __future__ import annotations

from pathlib import Path


def _bomb(levels: int, width: int = 10) -> str:
    """A billion-laughs YAML: ``levels`` anchored lists, each ``width`` aliases of the previous
    one, so the last expands to ``width ** levels`` scalars; under 1 KB for 9 levels."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _medleydb(root: Path, songs: int = 3) -> list[dict]:
    from stemforge.synth.layouts import write_corpus

    return write_corpus(root, "medleydb", songs=songs, seconds=1.0, seed=16)


def _meta_path(rec: dict) -> Path:
    return rec["paths"]["metadata"]

