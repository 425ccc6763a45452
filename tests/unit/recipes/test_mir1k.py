"""MIR-1K: the huang2014 protocol (train abjones and amy, valid their songs abjones_5 and amy_9, test
every other singer) and clips that are not 16 kHz stereo, on synthetic trees. On the real clips
($STEMFORGE_REAL_DATA): tests/integration/test_mir1k_real.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core.errors import StemforgeError
from stemforge.recipes import mir1k
from stemforge.store import DataDir
from stemforge.synth.layouts import write_corpus

SONGS = ["abjones_5", "abjones_1", "amy_9", "amy_2", "annar_1", "Ani_3"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Six songs of two 2-second clips each, named as in MIR-1K."""
    root = tmp_path_factory.mktemp("mir1k") / "MIR-1K"
    write_corpus(root, "mir1k", songs=len(SONGS), seconds=4, seed=2, clip_seconds=2, entries=[{"id": s} for s in SONGS])
    return root


def test_huang2014_valid_is_the_songs_holding_the_development_clips(tree):
    tracks = mir1k.discover(tree, split_rule="huang2014")
    splits = {t.track_id: t.split for t in tracks}
    assert len(splits) == 12
    assert {k for k, v in splits.items() if v == "valid"} == {"abjones_5_01", "abjones_5_02", "amy_9_01", "amy_9_02"}
    assert {k for k, v in splits.items() if v == "train"} == {"abjones_1_01", "abjones_1_02", "amy_2_01", "amy_2_02"}
    assert {k for k, v in splits.items() if v == "test"} == {"annar_1_01", "annar_1_02", "Ani_3_01", "Ani_3_02"}
    # whole songs: every clip of one song (one song key) is on one side
    by_song: dict[str, set] = {}
    for t in tracks:
        by_song.setdefault(f"{t.artist} - {t.title}", set()).add(t.split)
    assert all(len(v) == 1 for v in by_song.values())
    # the songs unit follows the same rule
    songs = {t.track_id: t.split for t in mir1k.discover(tree, unit="songs", split_rule="huang2014")}
    assert songs == {"abjones_5": "valid", "amy_9": "valid", "abjones_1": "train", "amy_2": "train", "annar_1": "test", "Ani_3": "test"}
    # the protocol fixes the split: fractions other than the defaults are refused
    with pytest.raises(StemforgeError, match="huang2014 fixes the split"):
        mir1k.discover(tree, split_rule="huang2014", valid_fraction=0.2)


def test_huang2014_singer_validates_on_the_singer_abjones(tree):
    """huang2014-singer: amy trains, every clip of abjones validates, the test split is
    huang2014's; its fractions are fixed too."""
    splits = {t.track_id: t.split for t in mir1k.discover(tree, split_rule="huang2014-singer")}
    standard = {t.track_id: t.split for t in mir1k.discover(tree, split_rule="huang2014")}
    assert {k for k, v in splits.items() if v == "valid"} == {"abjones_1_01", "abjones_1_02", "abjones_5_01", "abjones_5_02"}
    assert {k for k, v in splits.items() if v == "train"} == {"amy_2_01", "amy_2_02", "amy_9_01", "amy_9_02"}
    assert {k for k, v in splits.items() if v == "test"} == {k for k, v in standard.items() if v == "test"}
    with pytest.raises(StemforgeError, match="huang2014-singer fixes the split"):
        mir1k.discover(tree, split_rule="huang2014-singer", test_fraction=0.3)


def test_cli_ingest_huang2014_has_a_valid_split_and_no_warning(tree, tmp_path):
    data = tmp_path / "data"
    r = CliRunner().invoke(app, ["ingest", "mir1k", str(tree), "--split-rule", "huang2014", "--out", str(data), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "NO VALID SPLIT" not in r.output
    counts = DataDir.open(data).select()["split"].value_counts().to_dict()
    assert counts == {"train": 4, "valid": 4, "test": 4}


def test_bad_clips_fail_one_line_each_and_the_rest_is_stored(tree, tmp_path):
    """A mono clip, a 44.1 kHz clip, a missing one (dangling link) and an empty file: one line
    each naming the file and the reason; the eight good clips stored; exit 1."""
    import shutil

    root = tmp_path / "MIR-1K"
    shutil.copytree(tree, root)
    wav = root / "Wavfile"
    x, sr = sf.read(wav / "abjones_1_01.wav", dtype="float32")
    sf.write(wav / "abjones_1_01.wav", x[:, 1], sr, subtype="PCM_16")  # mono
    x, sr = sf.read(wav / "amy_2_01.wav", dtype="float32")
    sf.write(wav / "amy_2_01.wav", np.repeat(x, 2, axis=0)[: 2 * len(x)], 2 * sr, subtype="PCM_16")  # 32 kHz
    (wav / "annar_1_01.wav").unlink()
    os.symlink(tmp_path / "gone.wav", wav / "annar_1_01.wav")  # listed, but the file is missing
    (wav / "Ani_3_01.wav").write_bytes(b"")
    data = tmp_path / "data"
    r = CliRunner().invoke(app, ["ingest", "mir1k", str(root), "--split-rule", "huang2014", "--out", str(data), "--workers", "1"])
    assert r.exit_code == 1, r.output
    tail = [line[len("failed: ") :] for line in r.output.splitlines() if line.startswith("failed: ")]
    assert len(tail) == 4, r.output  # each failure said once
    reasons = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in tail}
    assert reasons.keys() == {str(wav / n) for n in ("abjones_1_01.wav", "amy_2_01.wav", "annar_1_01.wav", "Ani_3_01.wav")}
    assert "channel" in reasons[str(wav / "abjones_1_01.wav")] and "stereo" in reasons[str(wav / "abjones_1_01.wav")]
    assert "32000 Hz" in reasons[str(wav / "amy_2_01.wav")] and "16000 Hz" in reasons[str(wav / "amy_2_01.wav")]
    assert "dangling symbolic link" in reasons[str(wav / "annar_1_01.wav")]
    assert "empty" in reasons[str(wav / "Ani_3_01.wav")]
    stored = set(DataDir.open(data).select()["uid"])
    assert len(stored) == 8 and "mir1k:abjones_5_01" in stored and "mir1k:amy_2_01" not in stored


def test_stereo_geometry_puts_each_channel_on_both(tree, tmp_path):
    from stemforge.core.config import SpectrogramConfig

    src = next(t for t in mir1k.discover(tree) if t.track_id == "amy_9_01")
    got = mir1k.load_clip(src, SpectrogramConfig.preset("seed", channels=2))
    x, _ = sf.read(tree / src.source_path, dtype="float32")
    assert got.vocals.shape == (2, len(x)) and np.allclose(got.vocals[0], x[:, 1]) and np.allclose(got.vocals[1], x[:, 1])
    assert np.allclose(got.accompaniment[1], x[:, 0]) and got.source_sample_rate == 16000 and got.source_channels == 2


