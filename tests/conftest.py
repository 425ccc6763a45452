"""Shared fixtures and the suite's layout.

``tests/unit/<package>/`` holds the tests of one package of stemforge, in process, on inputs made
at test time (the inner loop: ``pytest -m "not integration"``); ``tests/integration/`` the tests
that run whole commands (as real processes: subprocesses, torchrun, a browser, the demo; or the
CLI's own tests, its usage, help and output, through Typer's runner) or read real audio. Every test under ``tests/integration/`` is marked ``integration`` here, by its folder.

Fixtures: synthetic corpora made at test time (``dsd100_corpus``), tiny DataDirs ingested once
per session and shared read-only (``tiny_datadirs``), the real-data folder when configured.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

# A suite started in the background by a non-interactive shell (`pytest ... &`, a CI step's
# `cmd &`) inherits SIGINT ignored, and so would every command it starts: they would ignore the
# Ctrl-C the signal tests send, as no command started from a terminal does. Python installs its
# KeyboardInterrupt handler only where SIGINT is not ignored, so restore it here (and with it,
# SIG_DFL for the processes the tests start).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# An xdist worker shares the machine's cores with the other workers: it gets its share of threads
# (OpenMP: torch's intra-op pool; BLAS), set here before torch or numpy is imported. N workers
# with a thread per core each spin against each other: on 2 cores, -n 2 with two threads per
# worker took 16% more CPU time and wall time for the unit tests (docs/benchmarks.md, "Tests").
# A value set in the environment wins.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, _share)

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository
TEST_DATA = TESTS / "data"  # fixtures kept in the repository (tests/data)
INTEGRATION = TESTS / "integration"

# Fixtures that a package's unit tests and its integration tests share (tests/support/).
pytest_plugins = sorted(f"support.{p.stem}" for p in (TESTS / "support").glob("*.py") if p.stem != "__init__")


def pytest_ignore_collect(collection_path, config):
    """Under ``-m "not integration"`` (the inner loop) tests/integration/ is not collected at all:
    its modules were imported and their asserts rewritten only for every test in them to be
    deselected (0.7 of the 5.9 CPU-seconds each xdist worker spent collecting)."""
    if " ".join(config.getoption("markexpr", "").split()) == "not integration" and Path(collection_path).resolve() == INTEGRATION:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/integration/ ``integration`` (the folder is the rule)."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """Every test leaves torch's thread count as it found it (or, torch first loaded during the
    test, at the worker's share: $OMP_NUM_THREADS). A command run in process sets it for the
    process (``--threads``; ``serve`` gives each job its share of the cores), and every later
    test of that worker ran with it: on 2 cores, the model tests took 4 to 5 times their CPU time
    after the serve test had set two threads."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else int(os.environ.get("OMP_NUM_THREADS") or 0)
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test (restored after): on a small shared machine two
    threads are several times slower for the tiny models of the training tests. Modules that
    train take it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``$STEMFORGE_REAL_DATA`` (real excerpts with their licences), resolved to an absolute path
    (a relative one would break tests that follow symlinks from other folders); skips the test
    when unset."""
    value = os.environ.get("STEMFORGE_REAL_DATA")
    if not value:
        pytest.skip("STEMFORGE_REAL_DATA is not set")
    path = Path(value).resolve()
    if not path.is_dir():
        pytest.skip(f"STEMFORGE_REAL_DATA={value} is not a folder")
    return path


@pytest.fixture(scope="session")
def dsd100_corpus(tmp_path_factory) -> Path:
    """A small synthetic DSD100 tree (6 songs of 6 s, both subsets), shared read-only by tests."""
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("dsd100")
    write_corpus(root, "dsd100", songs=6, seconds=6.0, seed=7)
    return root


@dataclass(frozen=True)
class TinyDataDir:
    """A synthetic corpus and the DataDir ingested from it; both are shared: read, never write
    (copy with :func:`copy_tree` first)."""

    corpus: Path
    data: Path


class TinyDataDirs:
    """Synthetic corpora written and ingested once per test session, whatever the number of
    test modules (and xdist workers) asking for the same one.

    :meth:`get` takes :func:`stemforge.synth.layouts.write_corpus`'s arguments (and the
    ``recipe`` and ``config`` of the ingest); equal arguments give the same folder. The first
    caller builds it under a file lock in the session's base temporary folder, the folder all
    xdist workers of a run share; the others wait and reuse it. A test that changed a shared
    DataDir would corrupt the tests after it, so the files are listed (name, size, mtime) when
    handed out and compared at the end of the session.
    """

    def __init__(self, root: Path):
        self.root = root
        self.handed_out: dict[Path, dict[str, tuple[int, int]]] = {}

    def get(self, layout: str = "dsd100", *, songs: int, seconds: float, seed: int, recipe: str | None = None,
            config=None, **corpus_options) -> TinyDataDir:
        from stemforge.ingest.engine import ingest
        from stemforge.recipes import get_recipe
        from stemforge.store import DataDir
        from stemforge.synth.layouts import write_corpus

        recipe = recipe or layout
        key = json.dumps([layout, songs, seconds, seed, recipe, config and config.to_dict(), corpus_options],
                         sort_keys=True, default=str)
        folder = self.root / f"{layout}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        done = folder / "done.json"
        with _locked(self.root / f"{folder.name}.lock"):
            if not done.exists():
                if folder.exists():  # a builder that died half way
                    import shutil

                    shutil.rmtree(folder)
                write_corpus(folder / "corpus", layout, songs, seconds, seed, **corpus_options)
                report = ingest(DataDir.create(folder / "data", config), get_recipe(recipe).discover(folder / "corpus"),
                                workers=1)
                assert not report.failed, report.failed
                done.write_text(key)
        made = TinyDataDir(folder / "corpus", folder / "data")
        self.handed_out.setdefault(folder, _listing(folder))
        return made

    def check_unchanged(self) -> None:
        changed = {folder: sorted(set(before.items()) ^ set(_listing(folder).items()))
                   for folder, before in self.handed_out.items()}
        changed = {f: c for f, c in changed.items() if c}
        assert not changed, f"a test wrote into a shared tiny DataDir (copy it first): {changed}"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock"}


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_datadirs(tmp_path_factory) -> TinyDataDirs:
    """The session's :class:`TinyDataDirs` (shared by the xdist workers of one run)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "tiny-datadirs"
    root.mkdir(exist_ok=True)
    made = TinyDataDirs(root)
    yield made
    made.check_unchanged()


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a corpus so a test can damage it without touching the shared one."""
    import shutil

    shutil.copytree(src, dst)
    return dst


def import_museval():
    """museval, or a skip: it is in the test extra, but its import fails without the ffmpeg
    binaries (musdb/stempeg check for them and raise RuntimeError); .ci/run installs ffmpeg."""
    try:
        import museval
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"museval not importable ({str(exc).splitlines()[0][:80]}); install ffmpeg and museval")
    return museval
