"""``stemforge train --remix fresh``: examples remixed every step from the stored waveforms.

An aligned original equals the stored crop (to float16 rounding); a remix takes the vocals and
the accompaniment of independently drawn tracks at sample offsets, the vocals times a gain in
range, normalized by its own mixture maximum; every draw is a pure function of (seed, rank,
step) (no global random state), so a run with fresh remixes resumes bit-exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.model import UNetConfig
from stemforge.store import DataDir
from stemforge.train.batches import open_batches
from stemforge.train.config import TrainConfig
from stemforge.train.loop import train
from stemforge.train.remix import STREAM_REMIX, RemixBatches
from stemforge.train.sampling import PatchSampler, step_seed_sequence

pytestmark = pytest.mark.usefixtures("one_thread")

SONGS = ["abjones_1", "abjones_5", "amy_2", "amy_9", "annar_1"]


@pytest.fixture(scope="module")
def datadir(tmp_path_factory) -> DataDir:
    """Synthetic MIR-1K clips (5 s, shorter and longer than a 128-frame crop) ingested with the
    huang2014 rule: train abjones_1 and amy_2, valid abjones_5 and amy_9, test annar_1."""
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import mir1k
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("remix")
    write_corpus(root / "MIR-1K", "mir1k", songs=len(SONGS), seconds=10, seed=5, clip_seconds=5,
                 entries=[{"id": s} for s in SONGS])
    dd = DataDir.create(root / "data")
    report = ingest(dd, mir1k.discover(root / "MIR-1K", split_rule="huang2014"), workers=1)
    assert not report.failed
    dd = DataDir.open(root / "data")
    assert set(dd.manifest["split"]) == {"train", "valid", "test"}
    return dd


def _source(dd: DataDir, **kw) -> RemixBatches:
    args = dict(target="vocals", batch_size=16, seed=3, rank=0, device=torch.device("cpu"), patch_frames=128,
                aligned=0.1, gain_db=3.0)
    args.update(kw)
    return RemixBatches(dd, **args)


def _replay(src: RemixBatches, step: int) -> list[tuple]:
    """The draws of ``step`` as the module docstring defines them, replayed independently:
    ``("aligned", track, first frame)`` or ``("remix", vocals track, offset, accompaniment
    track, offset, gain dB)``."""
    rng = np.random.default_rng(step_seed_sequence(src.seed, src.rank, step, STREAM_REMIX))
    hop, n = src.config.hop_length, len(src.tracks)
    last = np.maximum(0, src.tracks.n_frames - src.patch_frames)
    out = []
    for _ in range(src.batch_size):
        i = int(rng.choice(n, p=src.p))
        if rng.random() < src.aligned:
            out.append(("aligned", i, int(rng.integers(0, last[i] + 1))))
            continue
        j = int(rng.choice(n, p=src.p))
        av = int(rng.integers(0, last[i] * hop + 1))
        aa = int(rng.integers(0, last[j] * hop + 1))
        g = float(rng.uniform(-src.gain_db, src.gain_db))
        if src.pitch > 0:
            out.append(("remix", i, av, j, aa, g, *rng.uniform(-src.pitch, src.pitch, 2)))
        else:
            out.append(("remix", i, av, j, aa, g))
    return out


def test_an_aligned_original_is_the_stored_crop(datadir):
    """With ``aligned=1`` every example is a stored crop: mixture, vocals and accompaniment equal
    the stored float16 magnitudes (the DataDir's STFT, centring and the track's norm), the zero
    padding of a crop running past a short track's end included."""
    src = _source(datadir, aligned=1.0, batch_size=24)
    mags = src.magnitudes(*src.draw(4))
    reader = datadir.reader()
    draws = _replay(src, 4)
    assert {d[0] for d in draws} == {"aligned"}
    starts = set()
    for b, (_, i, f) in enumerate(draws):
        n = min(src.patch_frames, int(src.tracks.n_frames[i]) - f)
        stored = reader.read_frames(src.tracks.shards[i], src.tracks.keys[i], f, f + n)
        for name in ("mixture", "vocals", "accompaniment"):
            got = mags[name][b].astype(np.float32)
            want = stored[name].astype(np.float32)
            assert got.shape == (src.patch_frames, datadir.config.n_bins)
            # to float16 rounding: at most one unit in the last place of the stored value
            np.testing.assert_allclose(got[:n], want, rtol=2**-10, atol=2**-24, err_msg=f"{name} of example {b}")
            assert not got[n + 1:].any()  # past the track's frames: silence
        starts.add(f)
    assert len(starts) > 3  # crops at several places, not always the start
    # the comparison sees a one-hop shift (it would catch a misplaced frame grid)
    _, i, f = next(d for d in draws if src.tracks.n_frames[d[1]] - d[2] > 130)
    stored = reader.read_frames(src.tracks.shards[i], src.tracks.keys[i], f + 1, f + 1 + 64)["vocals"].astype(np.float32)
    b = next(k for k, d in enumerate(draws) if d[1:] == (i, f))
    assert np.abs(mags["vocals"][b, :64].astype(np.float32) - stored).max() > 1e-3


def test_a_remix_is_independent_draws_at_sample_offsets_with_a_gain(datadir):
    """A remix: the vocals of one track and the accompaniment of another (independently drawn),
    each a slice of the stored waveform at its sample offset, the vocals times 10^(g/20) with g
    within +-gain_db; normalized by the crop's own mixture maximum (max 1)."""
    src = _source(datadir, aligned=0.0, batch_size=32, gain_db=6.0)
    voc, acc, norm = src.draw(9)
    draws = _replay(src, 9)
    assert np.isnan(norm).all()
    half = src.config.n_fft // 2
    pairs, gains = set(), []
    for b, (kind, i, av, j, aa, g) in enumerate(draws):
        assert kind == "remix"
        v_track, a_track = src.vocals[i][0], src.accompaniment[j][0]
        want_v = np.zeros(src.span, np.float32)
        want_a = np.zeros(src.span, np.float32)
        for want, x, a in ((want_v, v_track, av), (want_a, a_track, aa)):
            lo = a - half
            s, e = max(lo, 0), min(lo + src.span, len(x))
            want[s - lo : e - lo] = x[s:e]
        gain = np.float32(10 ** (g / 20))
        np.testing.assert_array_equal(voc[b, 0], want_v * gain)
        np.testing.assert_array_equal(acc[b, 0], want_a)
        pairs.add(i != j)
        gains.append(g)
        assert abs(g) <= 6.0
    assert pairs == {True, False} or pairs == {True}  # other tracks' accompaniment is used
    assert max(gains) - min(gains) > 3.0
    assert any(d[2] % src.config.hop_length for d in draws)  # offsets off the frame grid
    mags = src.magnitudes(voc, acc, norm)
    peaks = mags["mixture"].reshape(len(voc), -1).max(axis=1).astype(np.float32)
    np.testing.assert_allclose(peaks, 1.0, rtol=1e-3)


def test_a_pitch_change_plays_each_stem_at_its_own_drawn_speed(datadir):
    """With ``pitch`` each remixed stem is resampled to the speed ``2 ** (u / 12)`` (on the grid
    of 1/32) of its own draw ``u`` within +-pitch semitones: tones of 440 Hz (vocals) and 250 Hz
    (accompaniment) come out at 440 and 250 Hz times their speeds; aligned originals are never
    changed, and ``pitch=0`` draws what it always drew."""
    src = _source(datadir, aligned=0.0, batch_size=24, pitch=3.0)
    sr = src.config.sample_rate
    for stems, f in ((src.vocals, 440.0), (src.accompaniment, 250.0)):
        for k, x in enumerate(stems):
            stems[k] = (0.1 * np.sin(2 * np.pi * f * np.arange(x.shape[-1]) / sr))[None].astype(np.float32)
    voc, acc, _ = src.draw(9)
    draws = _replay(src, 9)
    window = np.hanning(src.span)
    freqs = np.fft.rfftfreq(src.span, 1 / sr)
    speeds = []
    for b, (kind, i, av, j, aa, g, u_v, u_a) in enumerate(draws):
        assert kind == "remix"
        for y, f, u in ((voc[b, 0], 440.0, u_v), (acc[b, 0], 250.0, u_a)):
            assert abs(u) <= 3.0
            speed = round(32 * 2 ** (u / 12)) / 32
            peak = freqs[np.argmax(np.abs(np.fft.rfft(y * window)))]
            assert abs(peak - f * speed) < 1.0, (b, peak, f * speed)
            speeds.append(speed)
    assert min(speeds) < 0.9 and max(speeds) > 1.1  # the draws span the range
    # aligned originals are the same with or without a pitch change
    plain = _source(datadir, aligned=1.0, batch_size=8).draw(3)
    pitched = _source(datadir, aligned=1.0, batch_size=8, pitch=3.0).draw(3)
    assert all(np.array_equal(x, y) for x, y in zip(plain[:2], pitched[:2]))
    # open_batches (what `train --remix-pitch` reaches) hands the range to the source and says it
    sampler = PatchSampler.from_datadir(datadir, patch_frames=128)
    source = open_batches(datadir, sampler, "vocals", torch.device("cpu"), range(9, 10), batch_size=24, seed=3,
                          remix="fresh", remix_aligned=0.1, remix_gain_db=3.0, remix_pitch=3.0)
    try:
        assert "pitch and tempo within +-3 semitones" in source.message
        mixture, _ = next(iter(source))
        assert torch.equal(mixture, _source(datadir, batch_size=24, pitch=3.0).batch(9)[0])
        assert not torch.equal(mixture, _source(datadir, batch_size=24).batch(9)[0])
    finally:
        source.close()


def test_batches_are_a_function_of_seed_and_step_only(datadir):
    """The same (seed, step) gives the same batch from a new source (a resumed run) whatever the
    global random state; another step or seed gives another batch. open_batches takes the remix
    branch with remix='fresh'."""
    a = _source(datadir).batch(5)
    np.random.seed(123)
    torch.manual_seed(123)
    b = _source(datadir).batch(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (16, 1, 512, 128) and a[0].dtype == torch.float32
    assert not torch.equal(_source(datadir).batch(6)[0], a[0])
    assert not torch.equal(_source(datadir, seed=4).batch(5)[0], a[0])
    sampler = PatchSampler.from_datadir(datadir, patch_frames=128)
    source = open_batches(datadir, sampler, "vocals", torch.device("cpu"), range(5, 7), batch_size=16, seed=3,
                          remix="fresh", remix_aligned=0.1, remix_gain_db=3.0)
    try:
        assert source.mode == "remix" and "fresh remixes" in source.message
        first = next(iter(source))
        assert all(torch.equal(x, y) for x, y in zip(first, a))
    finally:
        source.close()


def test_accompaniment_target_and_plain_magnitudes(datadir):
    """The target is the asked stem; ``plain`` gives the un-normalized |STFT| (an aligned crop
    then equals the stored one times the track's norm)."""
    src = _source(datadir, aligned=1.0, batch_size=4)
    mix, tgt = _source(datadir, aligned=1.0, batch_size=4, target="accompaniment").batch(2)
    mags = src.magnitudes(*src.draw(2))
    np.testing.assert_array_equal(tgt.numpy()[:, 0], mags["accompaniment"][:, :, 1:].astype(np.float32).transpose(0, 2, 1))
    plain = _source(datadir, aligned=1.0, batch_size=4, plain=True)
    pm = plain.magnitudes(*plain.draw(2))
    i = _replay(src, 2)[0][1]
    # float16 rounding of each (the normalized values are subnormal below 6e-5: absolute steps of 2^-24)
    np.testing.assert_allclose(pm["vocals"][0].astype(np.float32), mags["vocals"][0].astype(np.float32) * src.norms[i],
                               rtol=2e-3, atol=float(src.norms[i]) * 2**-23)
    assert not np.allclose(pm["vocals"][0].astype(np.float32), mags["vocals"][0].astype(np.float32), rtol=0.1)


def test_a_run_with_fresh_remixes_and_ema_resumes_bit_exactly(datadir, tmp_path):
    """Train 4 steps with --remix fresh --ema; a run stopped at step 2 and resumed ends with the
    same weights, Adam state and moving average, torch.equal."""
    cfg = dict(batch_size=4, lr=1e-2, val_every=100, val_crops=4, checkpoint_every=2, log_every=2, tensorboard=False,
               deterministic=True, seed=7, remix="fresh", ema=0.9)
    unet = UNetConfig(width=0.125)
    whole = train(datadir, tmp_path / "whole", TrainConfig(steps=4, **cfg), unet, device="cpu")
    assert whole.data_mode == "remix"
    train(datadir, tmp_path / "part", TrainConfig(steps=2, **cfg), unet, device="cpu")
    resumed = train(datadir, tmp_path / "part", TrainConfig(steps=4, **cfg), unet, device="cpu", resume=True)
    a = torch.load(whole.last_checkpoint, weights_only=False)
    b = torch.load(resumed.last_checkpoint, weights_only=False)
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    ea, eb = a["extra"]["ema"], b["extra"]["ema"]
    assert ea["updates"] == eb["updates"] == 4
    for key in ea["weights"]:
        assert torch.equal(ea["weights"][key], eb["weights"][key]), key


def test_stereo_geometry_gives_both_channels(tmp_path):
    """At a stereo geometry an aligned example is still the stored crop, channel by channel."""
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import mir1k
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "MIR-1K", "mir1k", songs=3, seconds=5, seed=6, clip_seconds=5,
                 entries=[{"id": s} for s in ("abjones_1", "abjones_5", "annar_1")])
    cfg = SpectrogramConfig.preset("seed", channels=2)
    dd = DataDir.create(tmp_path / "data", config=cfg)
    assert not ingest(dd, mir1k.discover(tmp_path / "MIR-1K", split_rule="huang2014"), workers=1).failed
    dd = DataDir.open(tmp_path / "data")
    src = _source(dd, aligned=1.0, batch_size=3, patch_frames=64)
    mags = src.magnitudes(*src.draw(1))
    (_, i, f) = _replay(src, 1)[0]
    n = min(64, int(src.tracks.n_frames[i]) - f)
    stored = dd.reader().read_frames(src.tracks.shards[i], src.tracks.keys[i], f, f + n)["mixture"]
    assert mags["mixture"].shape == (3, 64, 2, cfg.n_bins)
    np.testing.assert_allclose(mags["mixture"][0, :n].astype(np.float32), stored.astype(np.float32), rtol=2**-10, atol=2**-24)
    mix, _ = src.batch(1)
    assert mix.shape == (3, 2, 512, 64)
