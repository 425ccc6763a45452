"""Audio I/O: decoding, errors naming the file and the reason, resampling, writing."""

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


def test_real_mp3_and_stem_mp4_decode(real_data):
    mp3 = next((real_data / "musdb18-excerpts").glob("*/vocals.mp3"))
    y, sr = audio.load(mp3)
    assert sr == 44100 and y.shape[0] == 2 and abs(y.shape[1] / sr - 30.0) < 0.1
    stem = next((real_data / "musdb18-sample").rglob("*.stem.mp4"))
    assert audio.n_streams(stem) == 5
    streams = [audio.load(stem, stream=k)[0] for k in range(5)]
    assert len({s.shape for s in streams}) == 1
    with pytest.raises(AudioError, match="5 audio streams"):
        audio.load(stem, stream=5)
