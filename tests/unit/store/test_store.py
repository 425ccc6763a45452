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

    from stemforge.core.errors import DiskFullError

    for exc in (
        AudioError("/x/y.wav", "truncated"),
        ConfigMismatchError("shard", "a", "b"),
        DiskFullError("/data", "No space left on device", "kept 3 tracks"),
    ):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)


def test_checksum_of_blocks_chains_to_the_whole_array():
    import zlib

    from stemforge.store.shards import checksum

    rng = np.random.default_rng(1)
    a = rng.random((300, 513)).astype(np.float16)
    crc = 0
    for start in range(0, 300, 77):
        crc = checksum(a[start : start + 77], crc)
    assert crc == checksum(a) == zlib.crc32(a.tobytes())
    assert checksum(a.astype(">f2")) == checksum(a)  # bytes as stored (little-endian), whatever the order in memory
    b = a.copy()
    b[150, 200] = 0
    assert checksum(b) != checksum(a)


def test_stored_checksums_and_whole_reads(tmp_path):
    import h5py

    from stemforge.core.errors import CorruptDataError
    from stemforge.store.shards import ARRAY_NAMES, CHECKSUM_ATTR, checksum

    rng = np.random.default_rng(2)
    dd = DataDir.create(tmp_path / "d")
    row = _store(dd, "a:1", 300, rng)
    reader = dd.reader()
    assert reader.verify(row["shard"], row["key"]) == []
    whole = reader.read_frames(row["shard"], row["key"])  # checked on the way
    with h5py.File(tmp_path / "d" / row["shard"], "r") as f:
        g = f["tracks"][row["key"]]
        assert set(ARRAY_NAMES) <= set(g)
        for name in ARRAY_NAMES:
            assert int(g[name].attrs[CHECKSUM_ATTR]) == checksum(g[name][:])
        assert int(g["mixture"].attrs[CHECKSUM_ATTR]) == checksum(whole["mixture"])
    reader.close()
    with h5py.File(tmp_path / "d" / row["shard"], "r+") as f:
        f["tracks"][row["key"]]["vocals"][10, 10] = np.float16(0.123)
    reader = dd.reader()
    with pytest.raises(CorruptDataError, match=r"'a_1': vocals fails its checksum"):
        reader.read_frames(row["shard"], row["key"], fields=("vocals",))
    assert reader.read_frames(row["shard"], row["key"], 0, 5, fields=("vocals",))["vocals"].shape == (5, 513)
    with pytest.raises(CorruptDataError, match="vocals fails its checksum"):
        reader.verify(row["shard"], row["key"])
    reader.close()


def test_shard_reservation_is_given_back(tmp_path, monkeypatch):
    """Every byte libhdf5 writes is reserved before; the unused rest does not stay in the shard:
    it comes out the size of the same shard written without a reservation."""
    import h5py

    from stemforge.core import files

    rng = np.random.default_rng(3)
    arrays = [_arrays(n, rng) for n in (400, 129, 3000)]
    sizes = []
    for run in ("reserved", "plain"):
        dd = DataDir.create(tmp_path / run)
        with dd.writing():
            w = dd.shard_writer("t")
            for i, a in enumerate(arrays):
                w.add(f"k{i}", f"t:{i}", a)
            reserved = w._reserved  # bytes claimed ahead of libhdf5
            final = w.close()
        sizes.append(final.stat().st_size)
        with h5py.File(final, "r") as f:
            assert len(f["tracks"]) == 3
        if run == "reserved":
            assert reserved >= sizes[0]  # libhdf5 wrote only inside the reservation
            monkeypatch.setattr(files, "reserve", lambda fd, size, path: None)
    assert sizes[0] == sizes[1]


def test_reserve_checks_free_space_where_it_cannot_allocate(tmp_path, monkeypatch):
    import errno
    import os

    from stemforge.core import files
    from stemforge.core.errors import DiskFullError

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    path = tmp_path / "x.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        files.reserve(fd, 1 << 20, path)  # enough room: nothing happens
        monkeypatch.setattr(files, "free_bytes", lambda _p: 1000)
        with pytest.raises(DiskFullError, match=r"x\.bin: disk full"):
            files.reserve(fd, 1 << 20, path)
    finally:
        os.close(fd)


def test_full_disk_drops_the_shard_being_written_and_keeps_the_rest(tmp_path, monkeypatch):
    import errno
    import os

    from stemforge.core.errors import DiskFullError
    from stemforge.store.check import validate
    from stemforge.store.sink import ShardSink

    rng = np.random.default_rng(4)
    dd = DataDir.create(tmp_path / "d")
    real = os.posix_fallocate
    budget = {"calls": 4}  # shard 0: overhead + 2 tracks; shard 1: overhead, then full

    def fallocate(fd, offset, length):
        budget["calls"] -= 1
        if budget["calls"] < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    with dd.writing():
        with pytest.raises(DiskFullError) as info:
            with ShardSink(dd, "t", 2) as sink:
                for i in range(4):
                    sink.add(f"k{i}", f"t:{i}", _row(f"t:{i}", "", f"k{i}", 50), _arrays(50, rng))
    msg = str(info.value)
    assert msg.startswith(f"{dd.path}: disk full (No space left on device while writing shards/t-00001.h5)")
    assert "kept the 2 track(s) committed before (2 by this run), dropped the 1" in msg
    dd = DataDir.open(tmp_path / "d")
    assert sorted(dd.manifest["uid"]) == ["t:0", "t:1"]
    assert [p.name for p in (tmp_path / "d" / "shards").iterdir()] == ["t-00000.h5"]
    assert validate(dd).ok
