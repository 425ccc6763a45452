"""The DataDir contract: config hash, manifest, shards, lock, atomic writes."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import ConfigMismatchError, DataDirLockedError, ManifestError
from stemforge.store import DataDir, TrackArrays
from stemforge.store import manifest as mf


def _arrays(n_frames: int, rng: np.random.Generator, n_bins: int = 513) -> TrackArrays:
    mix = rng.random((n_frames, n_bins), dtype=np.float32)
    n_samples = (n_frames - 1) * 512
    return TrackArrays(
        mixture=mix,
        vocals=mix * 0.5,
        accompaniment=mix * 0.5,
        norm=3.0,
        vocal_energy=np.ones(n_frames, np.float32),
        wave_vocals=rng.standard_normal(n_samples).astype(np.float32),
        wave_accompaniment=rng.standard_normal(n_samples).astype(np.float32),
    )


def _row(uid: str, shard: str, key: str, n_frames: int, split: str = "train") -> dict:
    cfg = SpectrogramConfig()
    return {
        "uid": uid,
        "dataset": uid.split(":")[0],
        "track_id": uid.split(":")[1],
        "song_key": uid,
        "split": split,
        "n_frames": n_frames,
        "duration_s": (n_frames - 1) * 512 / 16000,
        "shard": shard,
        "key": key,
        "norm": 3.0,
        "config_hash": cfg.hash,
    }


def _store(dd: DataDir, uid: str, n_frames: int, rng) -> dict:
    with dd.writing():
        w = dd.shard_writer("t")
        w.add(uid.replace(":", "_"), uid, _arrays(n_frames, rng))
        final = w.close()
        row = _row(uid, dd.relative(final), uid.replace(":", "_"), n_frames)
        dd.commit([row])
    return row


def test_config_hash_is_stable_and_sensitive():
    a, b = SpectrogramConfig(), SpectrogramConfig()
    assert a.hash == b.hash and len(a.hash) == 12
    assert SpectrogramConfig(hop_length=256).hash != a.hash
    assert SpectrogramConfig.from_dict(a.to_dict()) == a
    assert a.n_bins == 513 and a.n_frames(16000) == 32


def test_open_with_other_config_names_both_values(tmp_path):
    DataDir.create(tmp_path / "d")
    other = SpectrogramConfig(hop_length=256)
    with pytest.raises(ConfigMismatchError) as info:
        DataDir.open(tmp_path / "d", other)
    msg = str(info.value)
    assert other.hash in msg and SpectrogramConfig().hash in msg and "hop_length=256" in msg


def test_open_missing_or_foreign_folder(tmp_path):
    with pytest.raises(ManifestError, match="not a stemforge DataDir"):
        DataDir.open(tmp_path / "nope")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(ManifestError, match="not empty"):
        DataDir.create(tmp_path / "foreign")


def test_crop_reads_match_full_track_and_reader_pickles(tmp_path):
    rng = np.random.default_rng(0)
    dd = DataDir.create(tmp_path / "d")
    row = _store(dd, "x:one", 300, rng)
    reader = DataDir.open(tmp_path / "d").reader()
    full = reader.read_frames(row["shard"], row["key"])
    crop = reader.read_frames(row["shard"], row["key"], 100, 228)
    for name in ("mixture", "vocals", "accompaniment"):
        assert full[name].dtype == np.float16 and full[name].shape == (300, 513)
        np.testing.assert_array_equal(crop[name], full[name][100:228])
    buf = {"mixture": np.empty((128, 513), np.float16)}
    reader.read_frames_into(row["shard"], row["key"], 50, buf)
    np.testing.assert_array_equal(buf["mixture"], full["mixture"][50:178])
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._files == {}
    np.testing.assert_array_equal(clone.read_frames(row["shard"], row["key"], 0, 10)["vocals"], full["vocals"][:10])
    wave = reader.read_wave(row["shard"], row["key"], "vocals", 10, 20)
    assert wave.dtype == np.float32 and wave.shape == (10,)


def test_shard_with_other_config_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    dd = DataDir.create(tmp_path / "d")
    row = _store(dd, "x:one", 40, rng)
    from stemforge.store.shards import ShardReader

    reader = ShardReader(tmp_path / "d", SpectrogramConfig(n_fft=2048))
    with pytest.raises(ConfigMismatchError):
        reader.read_frames(row["shard"], row["key"], 0, 4)


def test_lock_keeps_a_second_writer_out(tmp_path):
    dd = DataDir.create(tmp_path / "d")
    other = DataDir.open(tmp_path / "d")
    with dd.writing():
        with pytest.raises(DataDirLockedError, match="another stemforge process"):
            with other.writing():
                pass
    with other.writing():  # released
        pass


def test_commit_replaces_rows_and_drops_unreferenced_shards(tmp_path):
    rng = np.random.default_rng(2)
    dd = DataDir.create(tmp_path / "d")
    first = _store(dd, "x:one", 40, rng)
    second = _store(dd, "x:one", 50, rng)  # same uid again: replaces the row
    df = DataDir.open(tmp_path / "d").manifest
    assert len(df) == 1 and int(df.iloc[0]["n_frames"]) == 50
    assert not (tmp_path / "d" / first["shard"]).exists()
    assert (tmp_path / "d" / second["shard"]).exists()
    assert not list((tmp_path / "d").glob(".manifest.*"))


def test_half_written_shard_is_removed_by_next_writer(tmp_path):
    rng = np.random.default_rng(3)
    dd = DataDir.create(tmp_path / "d")
    with dd.writing():
        w = dd.shard_writer("t")
        w.add("k", "x:k", _arrays(20, rng))
        tmp = w.tmp_path
        w._file.close()  # simulate a crash: never renamed
    assert tmp.exists() and not list((tmp_path / "d" / "shards").glob("*.h5"))
    with dd.writing():
        pass
    assert not tmp.exists()


def test_manifest_roundtrip_keeps_extra_columns(tmp_path):
    df = mf.upsert(mf.empty_manifest(), [dict(_row("a:1", "shards/a.h5", "k", 10), align_score=0.9)])
    mf.write_manifest(df, tmp_path / "m.csv")
    back = mf.read_manifest(tmp_path / "m.csv")
    assert list(back.columns[: len(mf.COLUMNS)]) == list(mf.COLUMNS)
    assert back.loc[0, "align_score"] == "0.9" or float(back.loc[0, "align_score"]) == 0.9
    assert int(back.loc[0, "n_frames"]) == 10
    bad = pd.concat([back, back])
    bad.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ManifestError, match="duplicate uids"):
        mf.read_manifest(tmp_path / "dup.csv")


def test_errors_survive_pickling():
    from stemforge.core.errors import AudioError

    for exc in (AudioError("/x/y.wav", "truncated"), ConfigMismatchError("shard", "a", "b")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
