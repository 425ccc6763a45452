"""The training loader: sampling, fast crop reads, streaming/resident batches, validation crops."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import ManifestError, StemforgeError
from stemforge.store import DataDir
from stemforge.store.shards import TrackArrays
from stemforge.store.crops import CropReader, TrackList
from stemforge.train.layout import to_device
from stemforge.train.resident import ResidentBatches, resident_fits, resident_nbytes
from stemforge.train.sampling import PATCH_FRAMES, PatchSampler, step_torch_seed
from stemforge.train.streaming import StreamingBatches, streaming_loader
from stemforge.train.validation import validation_positions, validation_set

# (track_id, split, n_frames, duplicate_of, vocals silent from frame)
TRACKS = [
    ("a", "train", 700, None, None),
    ("b", "train", 300, None, None),
    ("c", "train", 90, None, None),  # shorter than a crop: one zero-padded crop
    ("d", "train", 1000, None, 400),  # vocals silent after frame 400
    ("dup", "train", 500, "x:a", None),  # a duplicate: never drawn
    ("v1", "valid", 400, None, None),
    ("v2", "valid", 200, None, None),
    ("t1", "test", 300, None, None),
]


def _arrays(rng: np.random.Generator, n: int, silent_from: int | None) -> TrackArrays:
    mix = rng.random((n, 513), dtype=np.float32)
    voc = rng.random((n, 513), dtype=np.float32) * 0.5
    if silent_from is not None:
        voc[silent_from:] = 0.0
    acc = mix - voc
    energy = np.einsum("tk,tk->t", voc, voc)
    wave = np.zeros(n * 512, np.float32)
    return TrackArrays(mix, voc, acc, 1.0, energy, wave, wave)


def make_datadir(path: Path, tracks=TRACKS, seed: int = 0) -> DataDir:
    rng = np.random.default_rng(seed)
    dd = DataDir.create(path)
    rows = []
    with dd.writing():
        w = dd.shard_writer("test")
        for track_id, split, n, dup, silent in tracks:
            key = f"k_{track_id}"
            w.add(key, f"x:{track_id}", _arrays(rng, n, silent))
            rows.append(
                dict(uid=f"x:{track_id}", dataset="x", track_id=track_id, split=split, n_frames=n, key=key,
                     norm=1.0, config_hash=dd.config.hash, duplicate_of=dup, duration_s=n * 512 / 16000)
            )
        final = w.close()
        for r in rows:
            r["shard"] = dd.relative(final)
        dd.commit(rows)
    return DataDir.open(path)


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> DataDir:
    return make_datadir(tmp_path_factory.mktemp("loader") / "data")


def _reference(dd: DataDir, tracks: TrackList, track: int, start: int, field: str) -> np.ndarray:
    """Frames [start, start+P) straight from h5py, zero-padded at the end."""
    with h5py.File(dd.path / tracks.shards[track], "r") as f:
        data = f["tracks"][tracks.keys[track]][field][start : start + PATCH_FRAMES]
    out = np.zeros((PATCH_FRAMES, 513), np.float16)
    out[: data.shape[0]] = data
    return out


def test_sampler_uses_train_rows_without_duplicates_and_weights_by_length(datadir):
    sampler = PatchSampler.from_datadir(datadir)
    assert set(sampler.tracks.uids) == {"x:a", "x:b", "x:c", "x:d"}
    counts = {u: 0 for u in sampler.tracks.uids}
    for step in range(300):
        track, start = sampler.positions(seed=1, rank=0, step=step, batch_size=16)
        n = sampler.tracks.n_frames[track]
        assert ((start >= 0) & ((start + PATCH_FRAMES <= n) | (start == 0))).all()
        for t in track:
            counts[sampler.tracks.uids[t]] += 1
    total = sum(counts.values())
    # positions per track: a 573, b 173, c 1, d 873 of 1620
    assert counts["x:a"] / total == pytest.approx(573 / 1620, abs=0.03)
    assert counts["x:d"] / total == pytest.approx(873 / 1620, abs=0.03)
    assert counts["x:c"] < counts["x:b"]


def test_sampler_is_a_pure_function_of_seed_rank_step(datadir):
    sampler = PatchSampler.from_datadir(datadir)
    a = sampler.positions(3, 0, 17, 8)
    b = PatchSampler.from_datadir(datadir).positions(3, 0, 17, 8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    for other in (sampler.positions(3, 1, 17, 8), sampler.positions(3, 0, 18, 8), sampler.positions(4, 0, 17, 8)):
        assert not (np.array_equal(a[0], other[0]) and np.array_equal(a[1], other[1]))
    assert step_torch_seed(3, 0, 17) == step_torch_seed(3, 0, 17) != step_torch_seed(3, 0, 18)
    with pytest.raises(StemforgeError):
        sampler.positions(-1, 0, 0, 4)


def test_vocal_energy_rejection(datadir):
    sampler = PatchSampler.from_datadir(datadir, min_vocal_db=-20.0)
    d = sampler.tracks.uids.index("x:d")
    assert 0 < sampler.rejected_fraction < 1
    seen_d = []
    for step in range(200):
        track, start = sampler.positions(0, 0, step, 16)
        seen_d.extend(start[track == d].tolist())
    # crops of track d must have a mean vocal energy near the track's level: mostly before frame 400
    assert seen_d and max(seen_d) < 400
    with pytest.raises(StemforgeError, match="min-vocal-db"):
        PatchSampler.from_datadir(datadir, min_vocal_db=10.0)


def test_crop_reader_fast_path_matches_h5py(datadir):
    tracks = TrackList.from_rows(datadir.select(split="train"))
    crops = CropReader(datadir.reader(), tracks)
    rng = np.random.default_rng(0)
    buf = np.empty((PATCH_FRAMES, 513), np.float16)
    for _ in range(40):
        t = int(rng.integers(len(tracks)))
        n = int(tracks.n_frames[t])
        start = int(rng.integers(0, max(1, n - PATCH_FRAMES + 1)))
        for field in ("mixture", "vocals", "accompaniment"):
            buf[:] = 7
            crops.read_into(t, start, {field: buf})
            np.testing.assert_array_equal(buf, _reference(datadir, tracks, t, start, field))
    # chunk boundaries and the short track (zero padded)
    for t, start in [(0, 128), (0, 127), (0, 700 - 128), (2, 0)]:
        crops.read_into(t, start, {"vocals": buf})
        np.testing.assert_array_equal(buf, _reference(datadir, tracks, t, start, "vocals"))
    assert crops.fast_reads > 0 and crops.slow_reads == 0
    # picklable, nothing open travels
    clone = pickle.loads(pickle.dumps(crops))
    assert clone._fds == {} and clone.reader._files == {}
    clone.read_into(0, 5, {"mixture": buf})
    np.testing.assert_array_equal(buf, _reference(datadir, tracks, 0, 5, "mixture"))
    crops.close()
    clone.close()


def test_crop_reader_falls_back_for_compressed_shards(tmp_path):
    dd = make_datadir(tmp_path / "data", tracks=[("a", "train", 300, None, None)])
    shard = dd.path / dd.manifest["shard"][0]
    key = dd.manifest["key"][0]
    # rewrite the magnitudes gzip-compressed in other chunks: h5py must be used
    with h5py.File(shard, "r+") as f:
        g = f["tracks"][key]
        data = g["mixture"][:]
        del g["mixture"]
        g.create_dataset("mixture", data=data, chunks=(50, 513), compression="gzip")
    tracks = TrackList.from_rows(dd.select(split="train"))
    crops = CropReader(dd.reader(), tracks)
    buf = np.empty((PATCH_FRAMES, 513), np.float16)
    crops.read_into(0, 99, {"mixture": buf})
    np.testing.assert_array_equal(buf, data[99 : 99 + PATCH_FRAMES])
    assert crops.slow_reads == 1 and crops.fast_reads == 0
    crops.close()


def test_crop_reader_reports_truncated_shard(tmp_path):
    dd = make_datadir(tmp_path / "data", tracks=[("a", "train", 1000, None, None)])
    shard = dd.path / dd.manifest["shard"][0]
    tracks = TrackList.from_rows(dd.select(split="train"))
    crops = CropReader(dd.reader(), tracks)
    buf = np.empty((PATCH_FRAMES, 513), np.float16)
    crops.read_into(0, 0, {"mixture": buf})  # the chunk index is read while the file is whole
    cut = int(crops._layouts[(0, "mixture")].offsets[3]) + 10
    with open(shard, "r+b") as f:
        f.truncate(cut)
    with pytest.raises(ManifestError, match="short read"):
        crops.read_into(0, 3 * 128 + 5, {"mixture": buf})
    crops.close()


def test_streaming_batches_layout_and_values(datadir):
    sampler = PatchSampler.from_datadir(datadir)
    batches = StreamingBatches(sampler, datadir.reader(), "vocals", batch_size=4, seed=5)
    batch = batches[3]
    assert batch.mixture.shape == (4, 1, 512, PATCH_FRAMES) and batch.mixture.dtype == torch.float16
    track, start = sampler.positions(5, 0, 3, 4)
    for i in range(4):
        ref_mix = _reference(datadir, sampler.tracks, int(track[i]), int(start[i]), "mixture")
        ref_voc = _reference(datadir, sampler.tracks, int(track[i]), int(start[i]), "vocals")
        np.testing.assert_array_equal(batch.mixture[i, 0].numpy(), ref_mix[:, 1:].T)
        np.testing.assert_array_equal(batch.target[i, 0].numpy(), ref_voc[:, 1:].T)
    acc = StreamingBatches(sampler, datadir.reader(), "accompaniment", batch_size=4, seed=5)[3]
    assert torch.equal(acc.mixture, batch.mixture) and not torch.equal(acc.target, batch.target)
    mix32, tgt32 = to_device(batch, "cpu")
    assert mix32.dtype == torch.float32 and torch.equal(mix32, batch.mixture.float())
    batches.close()


def test_loader_workers_give_the_same_batches_in_step_order(datadir):
    sampler = PatchSampler.from_datadir(datadir)
    batches = StreamingBatches(sampler, datadir.reader(), "vocals", batch_size=3, seed=2)
    steps = [10, 11, 12, 13, 14, 15, 3]
    direct = [batches[s] for s in steps]
    global_state = torch.random.get_rng_state()
    for workers in (0, 2):
        with streaming_loader(batches, steps, workers=workers, prefetch=2) as loader:
            # a batch is a view of a shared slot: valid until the next one is asked for
            loaded = [(b.step, b.mixture.clone(), b.target.clone()) for b in loader]
        assert [step for step, _, _ in loaded] == steps
        for a, (_, mix, tgt) in zip(direct, loaded):
            assert torch.equal(a.mixture, mix) and torch.equal(a.target, tgt)
    assert torch.equal(global_state, torch.random.get_rng_state())  # nothing drawn from torch's global RNG
    batches.close()


def test_loader_reports_worker_errors(tmp_path):
    dd = make_datadir(tmp_path / "data", tracks=[("a", "train", 1000, None, None)])
    sampler = PatchSampler.from_datadir(dd)
    (dd.path / dd.manifest["shard"][0]).write_bytes(b"not hdf5")
    batches = StreamingBatches(sampler, dd.reader(), "vocals", batch_size=2, seed=0)
    loader = streaming_loader(batches, range(4), workers=1, prefetch=1)
    with pytest.raises(ManifestError, match="cannot open shard"):
        next(loader)
    assert loader._procs == []  # closed on error
    loader.close()


def test_resident_batches_equal_streaming_ones(datadir):
    sampler = PatchSampler.from_datadir(datadir)
    streaming = StreamingBatches(sampler, datadir.reader(), "accompaniment", batch_size=6, seed=9)
    seen = []
    resident = ResidentBatches(sampler, datadir.reader(), "accompaniment", batch_size=6, seed=9, device="cpu",
                               progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (4, 4)
    assert resident.nbytes == resident_nbytes(sampler.tracks)
    for step in (0, 1, 50):
        mix, tgt = resident.batch(step)
        ref_mix, ref_tgt = to_device(streaming[step], "cpu")
        assert torch.equal(mix, ref_mix) and torch.equal(tgt, ref_tgt)
    ok, message = resident_fits(resident.nbytes, "cpu")
    assert ok and "GiB" in message
    assert not resident_fits(2**62, "cpu")[0]
    streaming.close()


def test_validation_set_is_fixed(datadir):
    vs = validation_set(datadir, "vocals")
    # v1: 400 frames -> crops at 0, 128, 256; v2: 200 frames -> crop at 0
    assert vs.uids == ("x:v1", "x:v1", "x:v1", "x:v2")
    assert vs.starts.tolist() == [0, 128, 256, 0]
    assert vs.mixture.shape == (4, 1, 512, PATCH_FRAMES)
    again = validation_set(datadir, "vocals")
    assert torch.equal(vs.mixture, again.mixture) and torch.equal(vs.target, again.target)
    tracks = TrackList.from_rows(datadir.select(split="valid"))
    track, start = validation_positions(tracks, max_crops=2)
    assert track.tolist() == [0, 1] and start.tolist() == [0, 0]
    assert validation_set(datadir, "vocals", split="nothing") is None


def test_empty_train_split_is_an_error(tmp_path):
    dd = make_datadir(tmp_path / "data", tracks=[("v", "valid", 300, None, None)])
    with pytest.raises(StemforgeError, match="no 'train' rows"):
        PatchSampler.from_datadir(dd)


def test_other_spectrogram_config_is_refused(datadir):
    from stemforge.core.errors import ConfigMismatchError
    from stemforge.store.shards import ShardReader

    other = ShardReader(datadir.path, SpectrogramConfig(n_fft=2048))
    tracks = TrackList.from_rows(datadir.select(split="train"))
    crops = CropReader(other, tracks)
    with pytest.raises(ConfigMismatchError):
        crops.read_into(0, 0, {"mixture": np.empty((PATCH_FRAMES, 513), np.float16)})


def test_open_batches_picks_a_loader_and_both_give_the_same_batches(datadir):
    from stemforge.train.batches import loader_workers, open_batches

    sampler = PatchSampler.from_datadir(datadir)
    cpu = torch.device("cpu")
    kw = dict(batch_size=3, seed=4, rank=0, prefetch=2)
    resident = open_batches(datadir, sampler, "vocals", cpu, range(5, 9), data_mode="auto", **kw)
    streaming = open_batches(datadir, sampler, "vocals", cpu, range(5, 9), data_mode="streaming", workers=0, **kw)
    try:
        assert resident.mode == "memory" and "resident in RAM" in resident.message
        assert streaming.mode == "streaming" and "asked for" in streaming.message and "0 loader processes" in streaming.message
        pairs = list(zip(resident, streaming))
        assert len(pairs) == 4
        for (m1, t1), (m2, t2) in pairs:
            assert m1.dtype == torch.float32 and m1.shape == (3, 1, 512, PATCH_FRAMES)
            assert torch.equal(m1, m2) and torch.equal(t1, t2)
    finally:
        resident.close()
        streaming.close()
    with pytest.raises(StemforgeError, match="data_mode"):
        open_batches(datadir, sampler, "vocals", cpu, range(1), data_mode="disk", **kw)
    assert loader_workers(cpu) == 1 and loader_workers("cuda:0") >= 1
