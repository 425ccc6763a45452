"""MIR-1K's huang2014 split on the real clips ($STEMFORGE_REAL_DATA). The protocol on synthetic
trees: tests/unit/recipes/test_mir1k.py."""

from __future__ import annotations

import pytest

from stemforge.recipes import mir1k


@pytest.mark.realdata
def test_real_mir1k_huang2014_split(real_data):
    """The real clips: abjones and amy train except their songs abjones_5 and amy_9 (18
    clips, holding Huang et al.'s four development clips), the other singers test."""
    root = real_data / "mir1k"
    tracks = mir1k.discover(root, split_rule="huang2014")
    valid = sorted(t.track_id for t in tracks if t.split == "valid")
    assert len(valid) == 18 and {"abjones_5_08", "abjones_5_09", "amy_9_08", "amy_9_09"} <= set(valid)
    assert all(v.startswith(("abjones_5_", "amy_9_")) for v in valid)
    train = [t for t in tracks if t.split == "train"]
    assert len(train) == 175 - 18 and {t.artist for t in train} == {"abjones", "amy"}
    assert {t.artist for t in tracks if t.split == "test"} == {"Ani", "tammy"}

