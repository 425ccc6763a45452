"""The suite's own layout (tests/conftest.py): every test module lives in ``tests/unit/<package>/``,
``<package>`` one of stemforge's packages (or ``contracts``, the rules over the whole package), or
in ``tests/integration/``, so that ``pytest -m "not integration"`` is the whole inner loop and the
folder says which layer a test exercises."""

from __future__ import annotations

from conftest import ROOT, TESTS

PACKAGES = {p.name for p in (ROOT / "stemforge").iterdir() if (p / "__init__.py").is_file()}


def misplaced(tests: list[str], packages: set[str]) -> list[str]:
    """The test modules (paths relative to tests/) outside unit/<package>/ and integration/."""
    out = []
    for name in tests:
        parts = name.split("/")
        if parts[0] == "integration" and len(parts) >= 2:
            continue
        if parts[0] == "unit" and len(parts) == 3 and parts[1] in packages | {"contracts"}:
            continue
        out.append(name)
    return out


def test_every_test_module_is_in_a_unit_package_folder_or_in_integration():
    tests = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py"))
    assert len(tests) > 40
    assert misplaced(tests, PACKAGES) == []


def test_the_rule_catches_a_flat_module_and_an_unknown_package():
    assert misplaced(["test_store.py", "unit/nope/test_x.py", "unit/test_y.py"], {"store"}) == [
        "test_store.py", "unit/nope/test_x.py", "unit/test_y.py"]
    assert misplaced(["unit/store/test_store.py", "integration/test_demo.py"], {"store"}) == []


def test_the_unit_folders_mirror_packages_that_exist():
    folders = {p.name for p in (TESTS / "unit").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - PACKAGES == {"contracts"}


def test_ci_runs_the_readmes_test_command_on_the_whole_suite():
    """`.ci/run` ends with the README's set-up-and-test command, word for word, and that command
    runs every test (no marker or path narrows it; the inner loop is the README's other command)."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index(next(line for line in ci if "the README's test command" in line)) + 1]
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{command}\n```" in readme
    pytest_part = command.split("&&")[-1].split()
    assert pytest_part[0] == "pytest" and "-m" not in pytest_part and not any(p.startswith("tests") for p in pytest_part)
    assert '```bash\npytest -m "not integration" -q -n 2\n```' in readme
