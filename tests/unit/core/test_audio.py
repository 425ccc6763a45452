"""Audio I/O: decoding, errors naming the file and the reason, resampling, writing. Real files:
tests/integration/test_audio_real.py."""

from __future__ import annotations

import numpy as np
import pytest

from stemforge.core import audio
from stemforge.core.errors import AudioError


def _tone(seconds: float, rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    y = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([y * (1 - 0.2 * c) for c in range(channels)])


def test_roundtrip_wav_flac_and_mono_downmix(tmp_path):
    x = _tone(0.5, 44100)
    for suffix, tol in ((".wav", 1e-7), (".flac", 1e-4)):
        p = audio.write(tmp_path / f"a{suffix}", x, 44100, None if suffix == ".wav" else "PCM_24")
        y, sr = audio.load(p)
        assert sr == 44100 and y.shape == x.shape and y.dtype == np.float32
        assert np.abs(y - x).max() < tol
        mono, sr, ch = audio.load_mono(p)
        assert ch == 2 and np.abs(mono - x.mean(axis=0)).max() < tol
        right, _, _ = audio.load_mono(p, channel=1)
        assert np.abs(right - x[1]).max() < tol
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is text, not audio\n"), "not a readable audio file"),
        (lambda p: None, "file not found"),
    ],
)
def test_bad_files_raise_audio_error_naming_path_and_reason(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioError) as info:
        audio.load(p)
    assert str(p) in str(info.value) and reason in str(info.value)


def test_truncated_wav_is_refused(tmp_path):
    p = audio.write(tmp_path / "t.wav", _tone(1.0, 16000), 16000, "PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated"):
        audio.load(p)
    with pytest.raises(AudioError, match="truncated"):
        audio.load_mono(p)


def test_one_stream_file_refuses_other_streams(tmp_path):
    p = audio.write(tmp_path / "a.wav", _tone(0.2, 8000), 8000)
    with pytest.raises(AudioError, match="stream 3"):
        audio.load(p, stream=3)


def test_resample_is_soxr_hq_length(tmp_path):
    x = _tone(1.0, 44100, 1)[0]
    y = audio.resample(x, 44100, 16000)
    assert y.dtype == np.float32 and abs(y.size - 16000) <= 1
    import librosa

    ref = librosa.resample(x, orig_sr=44100, target_sr=16000, res_type="soxr_hq")
    assert np.abs(y[: ref.size] - ref[: y.size]).max() < 1e-6


@pytest.mark.parametrize("suffix, fmt, subtype", [(".wav", "WAV", "FLOAT"), (".flac", "FLAC", "PCM_24"), (".mp3", "MP3", None)])
@pytest.mark.parametrize("block", [1000, 4096, 1 << 18])
def test_blockwise_decoding_equals_whole_decoding(tmp_path, suffix, fmt, subtype, block):
    import soundfile as sf

    x = _tone(1.3, 44100)
    p = tmp_path / f"a{suffix}"
    sf.write(str(p), x.T, 44100, format=fmt, subtype=subtype)  # an mp3 written here is read by PyAV
    whole, sr = audio.load(p)
    blocks = list(audio.decode_blocks(p, block))
    assert all(b.dtype == np.float32 and b.shape[0] == 2 for b in blocks)
    assert all(b.shape[1] >= block for b in blocks[:-1])
    if suffix != ".mp3":  # soundfile gives exactly block samples; PyAV whole codec frames
        assert all(b.shape[1] == block for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)
    assert sr == audio.info(p).sample_rate == 44100


def test_blockwise_decoding_refuses_what_load_refuses(tmp_path):
    p = audio.write(tmp_path / "t.wav", _tone(1.0, 16000), 16000, "PCM_16")
    p.write_bytes(p.read_bytes()[:8000])
    with pytest.raises(AudioError, match="truncated"):
        list(audio.decode_blocks(p))
    with pytest.raises(AudioError, match="file not found"):
        list(audio.decode_blocks(tmp_path / "missing.flac"))
    with pytest.raises(AudioError, match="stream 1"):
        list(audio.decode_blocks(audio.write(tmp_path / "a.wav", _tone(0.1, 8000), 8000), stream=1))


@pytest.mark.parametrize("orig, target", [(44100, 16000), (48000, 44100), (16000, 44100), (22050, 22050)])
def test_streaming_resampler_equals_whole_resampling(orig, target):
    x = np.random.default_rng(orig).standard_normal((2, orig * 2 + 123)).astype(np.float32) * 0.1
    whole = audio.resample(x, orig, target)
    for block in (777, 1 << 16):
        rs = audio.StreamResampler(2, orig, target)
        parts = [rs.push(x[:, i : i + block]) for i in range(0, x.shape[1], block)]
        parts.append(rs.flush())
        streamed = np.concatenate(parts, axis=1)
        assert streamed.dtype == np.float32 and streamed.shape[0] == 2
        assert abs(streamed.shape[1] - whole.shape[1]) <= 1
        n = min(streamed.shape[1], whole.shape[1])
        assert np.abs(streamed[:, :n] - whole[:, :n]).max() < 1e-5


def test_audio_writer_streams_atomically(tmp_path):
    x = _tone(0.7, 22050)
    with audio.AudioWriter(tmp_path / "out" / "s.wav", 22050, 2) as w:
        for i in range(0, x.shape[1], 1000):
            w.write(x[:, i : i + 1000])
        assert not (tmp_path / "out" / "s.wav").exists()  # only the temporary file so far
    y, sr = audio.load(tmp_path / "out" / "s.wav")
    assert sr == 22050 and np.array_equal(y, x)
    with audio.AudioWriter(tmp_path / "loud.flac", 22050, 2) as w:  # integer subtypes clip
        w.write(3.0 * x)
    assert np.abs(audio.load(tmp_path / "loud.flac")[0]).max() <= 1.0
    with pytest.raises(RuntimeError):
        with audio.AudioWriter(tmp_path / "never.wav", 22050, 2) as w:
            w.write(x)
            raise RuntimeError("stop")
    assert not (tmp_path / "never.wav").exists()
    assert not list(tmp_path.rglob(".*.tmp"))
    with pytest.raises(AudioError, match="use .wav or .flac"):
        audio.AudioWriter(tmp_path / "s.mp3", 22050, 2)


