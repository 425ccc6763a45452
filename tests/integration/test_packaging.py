"""What ships: the reference manifests live in one place, the package's, and a built wheel holds them."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

MANIFESTS = ROOT / "stemforge" / "manifests"


def _read_names() -> set[str]:
    """The reference tables the package reads (``reference_manifest("name")`` calls)."""
    names = set()
    for path in (ROOT / "stemforge").rglob("*.py"):
        names |= set(re.findall(r'reference_manifest\("([a-z0-9_]+)"\)', path.read_text()))
    return names


def test_one_copy_of_the_reference_manifests_the_packages():
    assert MANIFESTS.is_dir() and not MANIFESTS.is_symlink()
    assert not (ROOT / "manifests").exists(), "a second copy of the reference manifests at the repository root"
    names = _read_names()
    assert names and all((MANIFESTS / f"{n}.csv").is_file() for n in names), names
    spec = importlib.util.spec_from_file_location("make_manifests", ROOT / "tools" / "make_manifests.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.OUT.resolve() == MANIFESTS.resolve()  # the tool rebuilds the package's copy


@pytest.mark.slow
def test_a_built_wheel_ships_the_reference_manifests(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "stemforge", src / "stemforge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "out"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "out").glob("stemforge-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("stemforge/manifests/")}
    assert shipped == {f"stemforge/manifests/{p.name}" for p in MANIFESTS.glob("*.csv")}
    assert {f"stemforge/manifests/{n}.csv" for n in _read_names()} <= shipped
