"""The loader tail (stemforge.recipes.loading): one place that checks, trims, derives and
resamples the roles of a track, for the general loader and every recipe's own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemforge.core import audio
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, StemforgeError
from stemforge.recipes.base import StemRef, TrackSource
from stemforge.recipes.loading import DecodeCache, RoleAudio, load_roles, load_stems, loader, track_audio

RATE = 22050


def _role(samples, name, rate=RATE, channels=1) -> RoleAudio:
    return RoleAudio(np.asarray(samples, np.float32), rate, channels, Path("/corpus") / name)


def _noise(seed: int, n: int, shape=()) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, size=(*shape, n)).astype(np.float32)


def test_the_tail_resamples_every_role_to_the_config_rate():
    v, a, m = _noise(1, RATE), _noise(2, RATE), _noise(3, RATE)
    for config in (SpectrogramConfig(), SpectrogramConfig(sample_rate=8192, n_fft=1024, hop_length=768)):
        t = track_audio({"vocals": _role(v, "v.wav"), "accompaniment": _role(a, "a.wav"), "mixture": _role(m, "m.wav")}, config)
        want = audio.resample(v, RATE, config.sample_rate, config.resample_quality)
        np.testing.assert_array_equal(t.vocals, want)
        assert t.vocals.shape == t.accompaniment.shape == t.mixture.shape == (int(np.ceil(RATE * config.sample_rate / RATE)),)
        assert t.source_sample_rate == RATE


def test_the_tail_derives_a_missing_stem_from_the_mixture_at_the_source_rate():
    config = SpectrogramConfig()
    m, a = _noise(4, 3000), _noise(5, 3000)
    t = track_audio({"mixture": _role(m, "m.wav"), "accompaniment": _role(a, "a.wav")}, config)
    assert t.mixture is None  # vocals + accompaniment is the mixture
    np.testing.assert_array_equal(t.vocals, audio.resample(m - a, RATE, config.sample_rate))
    t = track_audio({"mixture": _role(m, "m.wav"), "vocals": _role(a, "v.wav")}, config)
    np.testing.assert_array_equal(t.accompaniment, audio.resample(m - a, RATE, config.sample_rate))
    t = track_audio({"vocals": _role(m, "v.wav"), "accompaniment": _role(a, "a.wav")}, config)
    assert t.mixture is None


def test_the_tail_refuses_roles_that_do_not_agree_naming_the_file():
    config = SpectrogramConfig()
    m = _role(_noise(6, 1000), "song/mixture.wav")
    with pytest.raises(AudioError, match=r"song/vocals\.wav.*sample rate 44100 Hz differs from mixture\.wav \(22050 Hz\)"):
        track_audio({"mixture": m, "vocals": _role(_noise(7, 1000), "song/vocals.wav", rate=44100), "accompaniment": m}, config)
    with pytest.raises(AudioError, match=r"song/acc\.wav.*length 990 samples differs from mixture\.wav \(1000 samples\)"):
        track_audio({"mixture": m, "vocals": m, "accompaniment": _role(_noise(8, 990), "song/acc.wav")}, config)
    with pytest.raises(StemforgeError, match="needs vocals and accompaniment"):
        track_audio({"mixture": m}, config)
    with pytest.raises(StemforgeError, match="unknown role"):
        track_audio({"vocals": m, "drums": m}, config)


def test_the_tail_trims_to_the_shortest_within_the_tolerance_and_takes_the_most_channels():
    config = SpectrogramConfig(sample_rate=RATE)  # no resampling: the trim is visible as is
    v, a = _noise(9, 1000), _noise(10, 1004)
    t = track_audio({"vocals": _role(v, "v.wav", channels=1), "accompaniment": _role(a, "a.wav", channels=2)}, config, tolerance=4)
    np.testing.assert_array_equal(t.vocals, v)
    np.testing.assert_array_equal(t.accompaniment, a[:1000])
    assert t.source_channels == 2


def test_the_tail_keeps_a_channel_axis_it_is_given():
    """The checks, the trim and the resampling work on [..., n_samples] (stereo geometries)."""
    config = SpectrogramConfig()
    v, a = _noise(11, 2205, (2,)), _noise(12, 2210, (2,))
    t = track_audio({"vocals": _role(v, "v.wav", channels=2), "accompaniment": _role(a, "a.wav", channels=2)}, config, tolerance=5)
    n = int(np.ceil(2205 * 16000 / RATE))
    assert t.vocals.shape == t.accompaniment.shape == (2, n)
    np.testing.assert_array_equal(t.vocals, audio.resample(v, RATE, 16000))


def _track(tmp_path: Path) -> TrackSource:
    v, d, b = _noise(13, RATE, (2,)), _noise(14, RATE, (2,)), _noise(15, RATE)
    audio.write(tmp_path / "vocals.wav", v, RATE)
    audio.write(tmp_path / "drums.wav", d, RATE)
    audio.write(tmp_path / "bass.wav", b, RATE)
    return TrackSource(
        dataset="t",
        track_id="x",
        root=str(tmp_path),
        vocals=(StemRef("vocals.wav"),),
        accompaniment=(StemRef("drums.wav", gain=0.5), StemRef("bass.wav")),
    )


def test_load_stems_sums_each_role_with_its_gains(tmp_path):
    src = _track(tmp_path)
    config = SpectrogramConfig(sample_rate=RATE)
    t = load_stems(src, config)
    dv, _ = audio.load(tmp_path / "vocals.wav")
    dd, _ = audio.load(tmp_path / "drums.wav")
    db, _ = audio.load(tmp_path / "bass.wav")
    np.testing.assert_allclose(t.vocals, audio.to_mono(dv), atol=1e-6)
    np.testing.assert_allclose(t.accompaniment, 0.5 * audio.to_mono(dd) + db[0], atol=1e-6)
    assert t.mixture is None and (t.source_sample_rate, t.source_channels) == (RATE, 2)
    with pytest.raises(StemforgeError, match="recipe gave no accompaniment for t:x"):
        load_stems(TrackSource(dataset="t", track_id="x", root=str(tmp_path), vocals=src.vocals), config)


def test_load_roles_takes_any_decoder(tmp_path):
    """What a recipe's own loader supplies (MUSDB18's one-pass decode): only the decoding."""
    src = _track(tmp_path)
    config = SpectrogramConfig(sample_rate=RATE)
    seen = []

    def decode(ref: StemRef):
        seen.append(ref.path)
        return np.full(100, 0.25, np.float32), RATE, 1

    t = load_roles(src, config, decode=decode)
    assert seen == ["vocals.wav", "drums.wav", "bass.wav"]
    np.testing.assert_array_equal(t.accompaniment, np.full(100, 0.375, np.float32))


def test_a_file_named_by_two_refs_is_decoded_once(tmp_path, monkeypatch):
    audio.write(tmp_path / "clip.wav", _noise(16, 1000, (2,)), RATE)
    src = TrackSource(
        dataset="t", track_id="c", root=str(tmp_path), vocals=(StemRef("clip.wav", channel=1),), accompaniment=(StemRef("clip.wav", channel=0),)
    )
    calls = []
    real = audio.load
    monkeypatch.setattr(audio, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    t = load_stems(src, SpectrogramConfig(sample_rate=RATE))
    data, _ = real(tmp_path / "clip.wav")
    assert len(calls) == 1
    np.testing.assert_array_equal(t.vocals, data[1])
    np.testing.assert_array_equal(t.accompaniment, data[0])
    with pytest.raises(AudioError, match="has 2 channel"):
        DecodeCache(tmp_path, [StemRef("clip.wav", channel=3)] * 2).get(StemRef("clip.wav", channel=3))


def test_loader_resolves_the_names_a_track_source_gives():
    from stemforge.recipes import csv, musdb

    assert loader("stems") is load_stems
    assert loader(musdb.STEM_LOADER) is musdb.load_stem_mp4
    assert loader(csv.LOADER) is csv.load_csv_track
    for bad in ("nope", "stemforge.recipes.musdb:no_such_loader", "no.such.module:f"):
        with pytest.raises(StemforgeError, match="loader"):
            loader(bad)


def test_a_stereo_geometry_keeps_both_channels_and_doubles_a_mono_one(tmp_path):
    stereo, mono = _noise(17, 1000, (2,)), _noise(18, 1000, (1,))
    audio.write(tmp_path / "v.wav", stereo, RATE)
    audio.write(tmp_path / "a.wav", mono, RATE)
    audio.write(tmp_path / "c.wav", _noise(19, 1000, (3,)), RATE)
    src = TrackSource(dataset="t", track_id="s", root=str(tmp_path), vocals=(StemRef("v.wav"),), accompaniment=(StemRef("a.wav"),))
    config = SpectrogramConfig(sample_rate=RATE, channels=2)
    t = load_stems(src, config)
    dv, _ = audio.load(tmp_path / "v.wav")
    da, _ = audio.load(tmp_path / "a.wav")
    np.testing.assert_array_equal(t.vocals, dv)
    np.testing.assert_array_equal(t.accompaniment, np.repeat(da, 2, axis=0))
    picked = load_stems(TrackSource(dataset="t", track_id="p", root=str(tmp_path), vocals=(StemRef("v.wav", channel=1),), accompaniment=(StemRef("a.wav"),)), config)
    np.testing.assert_array_equal(picked.vocals, np.stack([dv[1], dv[1]]))
    with pytest.raises(AudioError, match=r"c\.wav.*has 3 channels"):
        load_stems(TrackSource(dataset="t", track_id="c", root=str(tmp_path), vocals=(StemRef("c.wav"),), accompaniment=(StemRef("a.wav"),)), config)
