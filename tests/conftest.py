"""Shared fixtures: synthetic corpora made at test time, the real-data folder when configured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
    """``$STEMFORGE_REAL_DATA`` (real excerpts with their licences); skips the test when unset."""
    value = os.environ.get("STEMFORGE_REAL_DATA")
    if not value:
        pytest.skip("STEMFORGE_REAL_DATA is not set")
    path = Path(value)
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
