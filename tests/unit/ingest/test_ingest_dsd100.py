"""Ingesting DSD100: reference equality, idempotence, bad input, kill -9, CLI. kill -9 of the command:
tests/integration/test_ingest_kill.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import copy_tree
from stemforge.cli.main import app
from stemforge.core.errors import DatasetLayoutError
from stemforge.ingest.engine import ingest
from stemforge.recipes import dsd100
from stemforge.store import DataDir
from stemforge.store.check import validate


def _songs(root: Path) -> list[Path]:
    return sorted((root / "Sources").glob("*/*"))


def _ingest(root: Path, data: Path, **kw):
    return ingest(DataDir.create(data), dsd100.discover(root), **kw)


def test_stored_magnitudes_equal_the_seed_librosa_pipeline(dsd100_corpus, tmp_path):
    """Reference: librosa.load(sr=16000, res_type='soxr_hq'), librosa.stft(1024, 512), abs, / max mixture."""
    import librosa

    report = _ingest(dsd100_corpus, tmp_path / "d")
    assert report.ok and len(report.ingested) == 6
    dd = DataDir.open(tmp_path / "d")
    row = dd.manifest.iloc[0]
    src = dsd100_corpus / row["source_path"]
    sources = dsd100_corpus / "Sources" / src.parent.parent.name / src.parent.name

    def ref_mag(path: Path) -> np.ndarray:
        y, _ = librosa.load(path, sr=16000, mono=True, res_type="soxr_hq")
        return np.abs(librosa.stft(y, n_fft=1024, hop_length=512)).T

    mix = ref_mag(src)
    norm = mix.max()
    voc = ref_mag(sources / "vocals.wav")
    stored = dd.reader().read_frames(row["shard"], row["key"])
    assert stored["mixture"].shape == mix.shape == (int(row["n_frames"]), 513)
    np.testing.assert_allclose(stored["mixture"].astype(np.float32), mix / norm, atol=1e-3, rtol=0)
    np.testing.assert_allclose(stored["vocals"].astype(np.float32), voc / norm, atol=1e-3, rtol=0)
    assert abs(float(row["norm"]) - norm) / norm < 1e-4
    # DSD100's mixture is the sum of the sources up to PCM rounding
    assert float(row["mix_residual_db"]) < -40


def test_splits_and_rows(dsd100_corpus, tmp_path):
    _ingest(dsd100_corpus, tmp_path / "d")
    df = DataDir.open(tmp_path / "d").manifest
    subsets = {r.uid: r.track_id for r in df.itertuples()}
    for r in df.itertuples():
        folder = next(dsd100_corpus.glob(f"Mixtures/*/{r.track_id}"))
        assert r.split == ("test" if folder.parent.name == "Test" else "train")
    assert set(df["vocals_kind"]) == {"stem"} and len(subsets) == 6
    assert (df["source_sample_rate"] == 44100).all() and (df["source_channels"] == 2).all()
    assert df["vocal_activity"].between(0.05, 0.99).all()


def test_validation_list_sends_known_dev_songs_to_valid(tmp_path):
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "c", "dsd100", songs=2, seconds=2.0, seed=3,
                 names=[("Leaf", "Summerghost"), ("Some", "Body")])
    sources = dsd100.discover(tmp_path / "c")
    splits = {(s.artist, s.title): s.split for s in sources}
    # "Leaf - Summerghost" is a DSD100 Dev song held out for validation (as in MUSDB18)
    leaf = [v for (a, t), v in splits.items() if a == "Leaf"][0]
    assert leaf in ("valid", "test")
    for s in sources:
        if s.artist == "Leaf" and "/Dev/" in f"/{s.source_path}/":
            assert s.split == "valid"


def test_rerun_is_idempotent_and_force_redoes(dsd100_corpus, tmp_path):
    first = _ingest(dsd100_corpus, tmp_path / "d")
    before = (tmp_path / "d" / "manifest.csv").read_text()
    again = _ingest(dsd100_corpus, tmp_path / "d")
    assert len(again.ingested) == 0 and len(again.unchanged) == len(first.ingested)
    assert (tmp_path / "d" / "manifest.csv").read_text() == before
    forced = _ingest(dsd100_corpus, tmp_path / "d", force=True)
    assert len(forced.ingested) == len(first.ingested)
    dd = DataDir.open(tmp_path / "d")
    assert len(dd.manifest) == 6 and validate(dd).ok


def test_changed_source_is_redone(dsd100_corpus, tmp_path):
    root = copy_tree(dsd100_corpus, tmp_path / "c")
    _ingest(root, tmp_path / "d")
    victim = _songs(root)[0] / "vocals.wav"
    from stemforge.core import audio

    y, sr = audio.load(victim)
    audio.write(victim, y * 0.5, sr, "PCM_16")
    again = _ingest(root, tmp_path / "d")
    assert [r["track_id"] for r in again.ingested] == [victim.parent.name]
    assert len(again.unchanged) == 5


def test_two_corpora_compose_into_one_datadir(tmp_path):
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "a", "dsd100", songs=2, seconds=2.0, seed=11)
    write_corpus(tmp_path / "b", "dsd100", songs=2, seconds=2.0, seed=12)
    _ingest(tmp_path / "a", tmp_path / "d")
    _ingest(tmp_path / "b", tmp_path / "d")
    dd = DataDir.open(tmp_path / "d")
    assert len(dd.manifest) == 4 and validate(dd).ok


def _break(root: Path) -> dict[str, str]:
    """Damage six songs of a copy, each in one way; returns song folder -> expected reason."""
    from stemforge.core import audio

    songs = _songs(root)
    expected = {}
    # 1. truncated wav
    p = songs[0] / "drums.wav"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    expected[songs[0].name] = "truncated"
    # 2. a stem of another length
    p = songs[1] / "bass.wav"
    y, sr = audio.load(p)
    audio.write(p, y[:, : y.shape[1] // 2], sr, "PCM_16")
    expected[songs[1].name] = "length"
    # 3. a stem at another sample rate
    p = songs[2] / "other.wav"
    y, sr = audio.load(p)
    audio.write(p, audio.resample(y, sr, 22050), 22050, "PCM_16")
    expected[songs[2].name] = "sample rate"
    # 4. missing vocals.wav
    (songs[3] / "vocals.wav").unlink()
    expected[songs[3].name] = "missing stem"
    # 5. a text file named .wav
    (songs[4] / "bass.wav").write_text("this is not audio\n")
    expected[songs[4].name] = "not a readable audio file"
    # 6. an empty song folder (in Mixtures)
    empty = root / "Mixtures" / "Dev" / "099 - Nobody - Nothing"
    empty.mkdir(parents=True)
    expected[empty.name] = "empty song folder"
    return expected


def test_bad_input_is_reported_per_track_and_nothing_stored_is_lost(dsd100_corpus, tmp_path):
    from stemforge.synth.layouts import write_corpus

    good = tmp_path / "good"
    write_corpus(good, "dsd100", songs=2, seconds=2.0, seed=99)
    _ingest(good, tmp_path / "d")
    stored_before = set(DataDir.open(tmp_path / "d").manifest["uid"])

    root = copy_tree(dsd100_corpus, tmp_path / "bad")
    expected = _break(root)
    # one more good song so that something is ingested from the damaged corpus
    write_corpus(tmp_path / "extra", "dsd100", songs=1, seconds=2.0, seed=5)
    for sub in ("Mixtures", "Sources"):
        for p in (tmp_path / "extra" / sub).glob("*/*"):
            copy_tree(p, root / sub / p.parent.name / p.name)

    result = CliRunner().invoke(app, ["ingest", "dsd100", str(root), "--out", str(tmp_path / "d"), "--workers", "2"])
    assert result.exit_code == 1, result.output
    for song, reason in expected.items():
        lines = [line for line in result.output.splitlines() if song in line and reason in line]
        assert lines, f"no one-line reason {reason!r} for {song}:\n{result.output}"
    dd = DataDir.open(tmp_path / "d")
    uids = set(dd.manifest["uid"])
    assert stored_before <= uids
    assert len(uids) == len(stored_before) + 2  # the undamaged sixth song and the extra one
    assert validate(dd).ok


def test_root_that_is_not_dsd100(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "song.wav").write_text("x")
    with pytest.raises(DatasetLayoutError, match="expected Mixtures"):
        dsd100.discover(tmp_path / "x")
    result = CliRunner().invoke(app, ["ingest", "dsd100", str(tmp_path / "x"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 3 and "not a DSD100 root" in result.output


def test_validate_finds_damage(dsd100_corpus, tmp_path):
    import h5py

    _ingest(dsd100_corpus, tmp_path / "d")
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(tmp_path / "d")])
    assert ok.exit_code == 0, ok.output
    dd = DataDir.open(tmp_path / "d")
    row = dd.manifest.iloc[0]
    with h5py.File(tmp_path / "d" / row["shard"], "r+") as f:
        ds = f["tracks"][row["key"]]["vocals"]
        ds[3, 3] = np.float16(np.nan)
        del f["tracks"][dd.manifest.iloc[1]["key"]]["wave_vocals"]
    (tmp_path / "d" / "shards" / "stray-00000.h5").write_bytes(b"")
    bad = runner.invoke(app, ["validate", str(tmp_path / "d")])
    assert bad.exit_code == 1
    assert "non-finite" in bad.output and "waveform vocals missing" in bad.output and "orphan shard" in bad.output


def test_default_datadir_from_environment(dsd100_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEMFORGE_DATA", str(tmp_path / "envdata"))
    result = CliRunner().invoke(app, ["ingest", "dsd100", str(dsd100_corpus)])
    assert result.exit_code == 0, result.output
    assert "envdata" in result.output and "STEMFORGE_DATA" in result.output
    monkeypatch.delenv("STEMFORGE_DATA")
    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 3 and "stemforge-data" in result.output  # default ./stemforge-data does not exist
    result = CliRunner().invoke(app, ["info", str(tmp_path / "envdata")])
    assert result.exit_code == 0 and "no song is in more than one split" in result.output
