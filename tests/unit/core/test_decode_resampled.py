"""``stemforge.core.audio.decode_resampled``: the one blockwise decode-and-resample, within
``DecodeLimits``, used by the Separator (its model-rate copy) and by the server (a job's decode).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stemforge.core import audio
from stemforge.core.errors import AudioError, DecodeLimitError


def tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    """``[samples, channels]`` float32, a different sine per channel (soundfile's layout)."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 300 * (1 + c) * t) for c in range(channels)], axis=1).astype(np.float32)


def write(path: Path, seconds: float, rate: int, channels: int = 2, subtype: str = "PCM_16") -> Path:
    sf.write(path, tone(seconds, rate, channels), rate, subtype=subtype)
    return path


def unknown_length(path: Path) -> Path:
    """A FLAC whose STREAMINFO says ``total_samples = 0`` (the length is unknown)."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"fLaC"
    raw[8 + 13] &= 0xF0
    raw[8 + 14 : 8 + 18] = b"\x00\x00\x00\x00"
    path.write_bytes(bytes(raw))
    assert audio.info(path).n_samples == 0
    return path


def test_at_the_files_rate_and_channels_it_equals_the_whole_decode(tmp_path):
    path = write(tmp_path / "s.flac", 1.3, 22050, 2)
    whole, rate = audio.load(path)
    got = audio.decode_resampled(path, block_samples=1000)
    assert got.sample_rate == rate == 22050 and got.audio.dtype == np.float32
    assert np.array_equal(got.audio, whole) and got.audio.flags.c_contiguous
    assert got.n_source_samples == whole.shape[1]
    assert (got.source.sample_rate, got.source.channels, got.source.n_samples) == (22050, 2, whole.shape[1])


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_resampled_block_by_block_equals_the_whole_signal_resampled(tmp_path, fmt):
    path = write(tmp_path / f"s.{fmt}", 2.0, 44100, 2, subtype="PCM_16" if fmt != "mp3" else "MPEG_LAYER_III")
    whole, rate = audio.load(path)
    ref = audio.resample(whole, rate, 16000)
    got = audio.decode_resampled(path, 16000, block_samples=7919)
    assert got.sample_rate == 16000 and got.n_source_samples == whole.shape[1]
    assert got.audio.shape == ref.shape
    assert np.abs(got.audio - ref).max() < 1e-4  # soxr's streaming and one-shot modes differ in rounding only


def test_channels_are_downmixed_or_repeated_as_asked(tmp_path):
    stereo = write(tmp_path / "st.wav", 0.5, 16000, 2)
    mono = write(tmp_path / "mo.wav", 0.5, 16000, 1)
    x, _ = audio.load(stereo)
    m, _ = audio.load(mono)
    assert np.array_equal(audio.decode_resampled(stereo, channels=1).audio, audio.to_mono(x)[None, :])
    assert np.array_equal(audio.decode_resampled(mono, channels=2).audio, np.repeat(m, 2, axis=0))
    assert np.array_equal(audio.decode_resampled(stereo, channels=2).audio, x)
    three = write(tmp_path / "three.wav", 0.5, 16000, 3)
    with pytest.raises(AudioError, match="has 3 channels; 2 cannot be made of them") as info:
        audio.decode_resampled(three, channels=2)
    assert str(three) in str(info.value)
    assert audio.decode_resampled(three, channels=1).audio.shape == (1, 8000)


def test_max_rate_lowers_only_the_rates_above_it(tmp_path):
    fast = write(tmp_path / "fast.flac", 0.5, 96000, 2)
    slow = write(tmp_path / "slow.flac", 0.5, 44100, 2)
    got = audio.decode_resampled(fast, max_rate=48000)
    assert got.sample_rate == 48000 and got.audio.shape == (2, 24000) and got.n_source_samples == 48000
    got = audio.decode_resampled(slow, max_rate=48000)
    assert got.sample_rate == 44100 and np.array_equal(got.audio, audio.load(slow)[0])
    assert audio.decode_resampled(slow, 22050, max_rate=16000).sample_rate == 16000


def test_limits_are_checked_from_the_header_before_any_block(tmp_path):
    path = write(tmp_path / "long.wav", 3.0, 8000, 2)
    seen: list[float] = []
    with pytest.raises(DecodeLimitError, match="lasts 3.0 s by its header") as info:
        audio.decode_resampled(path, 16000, limits=audio.DecodeLimits(max_seconds=2.0), progress=seen.append)
    assert info.value.bound == "seconds" and seen == []
    with pytest.raises(DecodeLimitError) as info:
        audio.decode_resampled(path, limits=audio.DecodeLimits(max_channels=1))
    assert info.value.bound == "channels"
    with pytest.raises(DecodeLimitError) as info:
        audio.decode_resampled(path, limits=audio.DecodeLimits(min_rate=16000))
    assert info.value.bound == "rate"


def test_a_stream_of_unknown_length_is_stopped_at_the_bound(tmp_path):
    path = unknown_length(write(tmp_path / "u.flac", 3.0, 16000, 1))
    got = audio.decode_resampled(path, 8000)
    assert got.audio.shape == (1, 24000) and got.n_source_samples == 48000
    seen: list[float] = []
    with pytest.raises(DecodeLimitError, match="more than 1 s") as info:
        audio.decode_resampled(path, 8000, limits=audio.DecodeLimits(max_seconds=1.0), block_samples=4000, progress=seen.append)
    assert info.value.bound == "seconds"
    assert 0 < len(seen) <= 5  # stopped within a block of the bound, not at the end of the stream


def test_progress_is_the_fraction_of_the_header_decoded(tmp_path):
    path = write(tmp_path / "s.wav", 1.0, 16000, 1)
    seen: list[float] = []
    audio.decode_resampled(path, 8000, block_samples=4000, progress=seen.append)
    assert seen == [0.25, 0.5, 0.75, 1.0]


def test_bad_files_fail_in_one_line_naming_them(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="holds no samples") as info:
        audio.decode_resampled(empty, 8000)
    assert str(empty) in str(info.value)
    text = tmp_path / "text.wav"
    text.write_bytes(b"no audio here " * 30)
    with pytest.raises(AudioError) as info:
        audio.decode_resampled(text)
    assert str(text) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AudioError):
        audio.decode_resampled(tmp_path / "missing.wav")


def test_nothing_at_the_files_rate_is_kept_beyond_a_block(tmp_path):
    """20 s at 384 kHz (30 MB as float32) to 8 kHz (0.6 MB): the heap peaks near the output and a
    block, not near the source."""
    path = write(tmp_path / "fast.flac", 20.0, 384_000, 1)
    tracemalloc.start()
    try:
        got = audio.decode_resampled(path, 8000, block_samples=1 << 15)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.audio.shape == (1, 160_000)
    assert peak < 6 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_the_separator_and_the_server_decode_through_it(tmp_path, monkeypatch):
    """One decode: Separator.separate_file's model-rate copy and a server job's decode both call
    decode_resampled (with the caller's limits and rates)."""
    from stemforge.core.config import SpectrogramConfig
    from stemforge.separate.separator import Separator
    from stemforge.serve.decode import decode_limited

    calls: list[tuple] = []
    real = audio.decode_resampled

    def spy(path, sample_rate=None, **kwargs):
        calls.append((Path(path).name, sample_rate, kwargs.get("max_rate"), kwargs.get("channels"), kwargs["limits"]))
        return real(path, sample_rate, **kwargs)

    monkeypatch.setattr(audio, "decode_resampled", spy)
    path = write(tmp_path / "song.wav", 1.0, 22050, 2)
    config = SpectrogramConfig()
    sep = Separator.from_mask_fn(lambda x: np.full((config.n_frames(x.shape[-1]), config.n_bins), 0.5, np.float32), config)
    limits = audio.DecodeLimits(max_seconds=10.0)
    sep.separate_file(path, {"vocals": tmp_path / "v.wav"}, limits=limits)
    assert calls == [("song.wav", config.sample_rate, None, 1, limits)]
    calls.clear()
    mixture, rate = decode_limited(path, 5.0, max_rate=16000)
    assert rate == 16000 and mixture.shape == (2, 16000)
    assert [(c[0], c[1], c[2], c[3], c[4].max_seconds) for c in calls] == [("song.wav", None, 16000, None, 5.0)]
