"""The layering of the package, held as a contract (in the spirit of mirdata's one test over every
loader): every import in every module of ``stemforge`` (module level and inside functions) is an
edge between two packages, and every edge must be one of :data:`ALLOWED`.

    core                                        the ground floor: imports nothing of stemforge
    store, karaoke, synth, model                 -> core (model: the U-Net and its checkpoint)
    recipes                                      -> core, karaoke
    ingest                                       -> core, recipes, store
    augment                                      -> core, ingest, recipes, store
    train                                        -> core, model, store
    separate                                     -> core, model          (never train)
    evaluate                                     -> core, model, recipes, separate, store
    serve                                        -> core                 (the Separator is handed in)
    console                                      -> core                 (progress, failures, help: what a command shows)
    demo                                         -> everything below the CLI
    cli                                          -> anything; __main__ -> cli

A package may import itself. The package root (``stemforge/__init__.py``, a lazy facade) is
exempt, and other modules may take only ``__version__`` from it, so the facade cannot become a
back door. A new edge is a one-line change to :data:`ALLOWED`, made on purpose and reviewed.
"""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

PACKAGE = ROOT / "stemforge"

#: importer -> the packages it may import (besides itself). The edges are today's imports;
#: evaluate -> model and evaluate -> store are allowed ahead of use (evaluating a DataDir,
#: loading checkpoints), as the layering calls for.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "store": {"core"},
    "karaoke": {"core"},
    "synth": {"core"},
    "model": {"core"},
    "recipes": {"core", "karaoke"},
    "ingest": {"core", "recipes", "store"},
    "augment": {"core", "ingest", "recipes", "store"},
    "train": {"core", "model", "store"},
    "separate": {"core", "model"},
    "evaluate": {"core", "model", "recipes", "separate", "store"},
    "serve": {"core"},
    "console": {"core"},
    "demo": {"augment", "core", "evaluate", "ingest", "model", "recipes", "separate", "store", "synth", "train"},
    "cli": {"augment", "console", "core", "demo", "evaluate", "ingest", "karaoke", "model", "recipes", "separate", "serve", "store",
            "synth", "train"},
    "__main__": {"cli"},
}


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
    """Every import of ``module`` (given as ``source``) that is not an allowed edge."""
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
        if mine not in ALLOWED or theirs not in ALLOWED:
            unknown = mine if mine not in ALLOWED else theirs
            bad.append(f"{module}:{line} imports {target}: package {unknown!r} is not in this contract (add it to ALLOWED)")
            continue
        if theirs not in ALLOWED[mine]:
            bad.append(f"{module}:{line} imports {target}: {mine} -> {theirs} is not an allowed edge "
                       f"({mine} may import {', '.join(sorted(ALLOWED[mine])) or 'nothing of stemforge'})")
    return bad


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def test_every_package_of_stemforge_is_in_the_contract():
    top = {p.name for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists())}
    top |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert top - set(ALLOWED) == set(), f"packages missing from ALLOWED in tests/unit/contracts/test_layers.py: {sorted(top - set(ALLOWED))}"
    assert all(targets <= set(ALLOWED) for targets in ALLOWED.values()), "ALLOWED names a package it does not list"


def test_the_allowed_edges_have_no_cycle():
    """The layering is a partial order: no package reaches itself through the allowed edges."""
    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(ALLOWED[start])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(ALLOWED[p])
        return seen

    assert [p for p in ALLOWED if p in reaches(p)] == []


def test_every_import_is_an_allowed_edge():
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
        ("stemforge.separate.separator", "from stemforge.train.loop import train\n"),
        ("stemforge.separate.inference", "def f():\n    import stemforge.train.setup\n"),
        ("stemforge.model.unet", "from stemforge.train.config import TrainConfig\n"),
        ("stemforge.model.checkpoint", "from stemforge.store import DataDir\n"),
        ("stemforge.train.loop", "from stemforge.evaluate.bss import bss_eval\n"),
        ("stemforge.serve.jobs", "from stemforge.separate.separator import Separator\n"),
        ("stemforge.recipes.csv", "from stemforge.synth.songs import song\n"),
        ("stemforge.newpackage.x", "from stemforge.core import errors\n"),
    ],
)
def test_the_contract_catches_a_forbidden_import(module, source):
    assert violations(source, module), f"{source!r} in {module} should be refused"


@pytest.mark.parametrize(
    "module, source",
    [
        ("stemforge.separate.separator", "from stemforge.model import UNet\n"),
        ("stemforge.recipes.karaoke", "from stemforge.karaoke.align import derive\n"),
        ("stemforge.store.datadir", "from stemforge import __version__\nfrom . import manifest\n"),
        ("stemforge.cli.main", "from stemforge.serve import create_app\n"),
        ("stemforge.train.loop", "from stemforge.model.unet import UNet\nfrom stemforge.store import DataDir\n"),
        ("stemforge.demo", "from stemforge.train.setup import resolve_run\n"),
        ("stemforge.evaluate.datadir", "from stemforge.model import load_checkpoint\n"),
    ],
)
def test_the_contract_allows_a_downward_import(module, source):
    assert violations(source, module) == []
