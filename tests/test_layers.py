"""The layering of the package, held as a contract (in the spirit of mirdata's one test over every
loader): every import in every module of ``stemforge`` (module level and inside functions) may
point only down the data flow.

    core (errors, config, audio, dsp, parallel)              the ground floor
    store, recipes, karaoke, synth                           read/write a DataDir; read a corpus
    ingest -> augment -> train -> separate -> evaluate -> serve -> demo -> cli

A package may import itself and any package of a lower rank; ``recipes`` may also import
``karaoke`` (the pairs recipe derives its vocals by alignment), nothing else of its own rank.
The package root (``stemforge/__init__.py``, a lazy facade) is exempt, and other modules may
take only ``__version__`` from it, so the facade cannot become a back door upwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stemforge"

RANK = {
    "core": 0,
    "store": 1,
    "recipes": 1,
    "karaoke": 1,
    "synth": 1,
    "ingest": 2,
    "augment": 3,
    "model": 3,
    "train": 4,
    "separate": 5,
    "evaluate": 6,
    "serve": 7,
    "demo": 8,
    "cli": 9,
    "__main__": 10,
}
#: imports allowed between packages of the same rank (importer -> imported)
SIDEWAYS = {("recipes", "karaoke")}


def _layer(module: str) -> str | None:
    """'stemforge.store.shards' -> 'store'; 'stemforge' -> None (the root facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports_of(source: str, module: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, imported module, names)`` for every stemforge import in ``source`` (relative
    imports resolved against ``module``), at any depth of the syntax tree."""
    out = []
    package = module.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "stemforge":
                    out.append((node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != "stemforge":
                continue
            names = tuple(a.name for a in node.names)
            if name == "stemforge":
                # "from stemforge import core" names a subpackage: check each as a module
                for n in names:
                    out.append((node.lineno, "stemforge" if n == "__version__" else f"stemforge.{n}", (n,)))
            else:
                out.append((node.lineno, name, names))
    return out


def violations(source: str, module: str) -> list[str]:
    """Every import of ``module`` (given as ``source``) that points up or sideways."""
    mine = _layer(module)
    if mine is None:
        return []
    bad = []
    for line, target, names in imports_of(source, module):
        theirs = _layer(target)
        if theirs is None:
            if set(names) - {"__version__"}:
                bad.append(f"{module}:{line} takes {names} from the package root (only __version__ is allowed)")
            continue
        if theirs == mine:
            continue
        if theirs not in RANK:
            bad.append(f"{module}:{line} imports {target}: a package this contract does not know (add it to RANK)")
            continue
        if RANK[theirs] < RANK[mine] or (mine, theirs) in SIDEWAYS:
            continue
        bad.append(f"{module}:{line} imports {target} ({theirs}, rank {RANK[theirs]}) from {mine} (rank {RANK[mine]})")
    return bad


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def test_every_package_of_stemforge_has_a_rank():
    top = {p.name for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists())}
    top |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert top - set(RANK) == set(), f"packages without a rank in tests/test_layers.py: {sorted(top - set(RANK))}"


def test_imports_point_only_down_the_data_flow():
    bad = []
    for module, path in _modules():
        bad += violations(path.read_text(encoding="utf-8"), module)
    assert bad == [], "imports against the layering:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "module, source",
    [
        ("stemforge.store.check", "def f():\n    from stemforge.augment.remix import stale_remixes\n"),
        ("stemforge.recipes.csv", "from stemforge.ingest.engine import TrackAudio\n"),
        ("stemforge.core.dsp", "import stemforge.store.shards\n"),
        ("stemforge.core.audio", "from stemforge import DataDir\n"),
        ("stemforge.train.loop", "def f():\n    if True:\n        from stemforge.separate.separator import Separator\n"),
        ("stemforge.evaluate.datadir", "from stemforge.cli.common import out\n"),
        ("stemforge.serve.jobs", "from ..cli import common\n"),
        ("stemforge.store.shards", "from stemforge import recipes\n"),
    ],
)
def test_the_contract_catches_an_upward_import(module, source):
    assert violations(source, module), f"{source!r} in {module} should be refused"


@pytest.mark.parametrize(
    "module, source",
    [
        ("stemforge.separate.separator", "from stemforge.model import UNet\n"),
        ("stemforge.recipes.karaoke", "from stemforge.karaoke.align import derive\n"),
        ("stemforge.store.datadir", "from stemforge import __version__\nfrom . import manifest\n"),
        ("stemforge.cli.main", "from stemforge.serve import create_app\n"),
    ],
)
def test_the_contract_allows_a_downward_import(module, source):
    assert violations(source, module) == []
