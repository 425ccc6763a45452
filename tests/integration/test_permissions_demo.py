"""Every file the demo writes gets the mode a plain ``open()`` gives under the user's umask (a
shortened demo run as a whole). Each writer on its own: tests/unit/core/test_permissions.py."""

from __future__ import annotations

import os

import pytest

from support.permissions import _assert_modes


@pytest.mark.slow
def test_every_file_the_demo_writes(tmp_path):
    """synth -> ingest -> augment -> train (checkpoint, run files, plots) -> separate -> evaluate."""
    from stemforge.demo import DemoConfig, run_demo

    old = os.umask(0o027)
    try:
        run_demo(
            tmp_path / "demo",
            DemoConfig(songs=6, seconds=12.0, pairs=2, workers=1, steps=2, seed=0, augment_factor=1.5),
            lambda name, message: None,
        )
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "demo").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.csv" for p in written) and any(p.suffix == ".wav" for p in written)
    _assert_modes(written, 0o640)
