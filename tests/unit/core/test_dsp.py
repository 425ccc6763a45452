"""The one STFT (dsp): equal to librosa's for any geometry, blockwise equal to whole, exact
inverse; windows, overlap-add; the signal helpers of ingest."""

import subprocess
import sys

import numpy as np
import pytest

from stemforge.core import dsp
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError

#: (sample_rate, n_fft, hop_length): the seed's, the paper's, Spleeter's, and odd sizes.
GEOMETRIES = [(16000, 1024, 512), (8192, 1024, 768), (44100, 4096, 1024), (22050, 2048, 512), (16000, 1000, 300)]


def _signal(n: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    shape = (n,) if channels is None else (channels, n)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("n_samples", [100, 1024, 16000 * 3 + 17])
def test_stft_equals_librosa(n_samples):
    import librosa

    cfg = SpectrogramConfig()
    y = _signal(n_samples, n_samples)
    ours = dsp.stft(y, cfg)
    ref = librosa.stft(y, n_fft=1024, hop_length=512).T
    assert ours.shape == ref.shape == (cfg.n_frames(n_samples), 513)
    assert ours.dtype == np.complex64
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("sample_rate, n_fft, hop", GEOMETRIES)
@pytest.mark.parametrize("center", [True, False])
def test_stft_and_istft_equal_librosa_for_every_geometry(sample_rate, n_fft, hop, center):
    import librosa

    cfg = SpectrogramConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, center=center)
    y = _signal(int(2.3 * sample_rate), n_fft + hop)
    ours = dsp.stft(y, cfg)
    ref = librosa.stft(y, n_fft=n_fft, hop_length=hop, center=center, pad_mode="constant").T
    assert ours.shape == ref.shape == (cfg.n_frames(y.size), n_fft // 2 + 1)
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()
    back = dsp.istft(ours, cfg, length=y.size)
    ref_back = librosa.istft(ours.T, n_fft=n_fft, hop_length=hop, center=center, length=y.size)
    assert back.shape == (y.size,) and back.dtype == np.float32
    assert np.abs(back - ref_back).max() < 1e-5
    if center:  # centred frames cover every sample: the inverse is exact
        assert np.abs(back - y).max() < 1e-5


def test_istft_inverts_and_equals_librosa():
    import librosa

    cfg = SpectrogramConfig()
    y = _signal(16000 * 2 + 5)
    spec = dsp.stft(y, cfg)
    back = dsp.istft(spec, cfg, length=y.size)
    assert np.abs(back - y).max() < 1e-5
    ref = librosa.istft(spec.T, n_fft=1024, hop_length=512, length=y.size)
    assert np.abs(back - ref).max() < 1e-5
    # without a length: librosa's default length; a longer length is zero padded
    assert np.abs(dsp.istft(spec, cfg) - librosa.istft(spec.T, n_fft=1024, hop_length=512)).max() < 1e-5
    longer = dsp.istft(spec, cfg, length=y.size + 3000)
    assert longer.shape == (y.size + 3000,) and not longer[-1000:].any()


@pytest.mark.parametrize("sample_rate, n_fft, hop", GEOMETRIES[:3])
def test_blockwise_frames_equal_the_whole_stft(sample_rate, n_fft, hop):
    cfg = SpectrogramConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop)
    y = _signal(3 * sample_rate + 11, 7)
    whole = dsp.stft(y, cfg)
    n = whole.shape[0]
    for start, stop in [(0, 1), (0, 5), (3, 17), (n - 4, n), (n // 2, n), (0, n)]:
        part = dsp.stft_frames(y, start, stop, n_fft, hop, "hann")
        assert part.shape == (stop - start, n_fft // 2 + 1)
        np.testing.assert_array_equal(part, whole[start:stop])
    # frames past the end read zeros; an empty range is empty
    beyond = dsp.stft_frames(y, n + 10, n + 12, n_fft, hop)
    assert beyond.shape == (2, n_fft // 2 + 1) and not beyond.any()
    assert dsp.stft_frames(y, 5, 5, n_fft, hop).shape == (0, n_fft // 2 + 1)


def test_channel_axis_is_carried_through():
    cfg = SpectrogramConfig(sample_rate=44100, n_fft=4096, hop_length=1024)
    y = _signal(44100, 3, channels=2)
    spec = dsp.stft(y, cfg)
    assert spec.shape == (2, cfg.n_frames(44100), 2049)
    for c in range(2):
        np.testing.assert_array_equal(spec[c], dsp.stft(y[c], cfg))
    back = dsp.istft(spec, cfg, length=44100)
    assert back.shape == (2, 44100) and np.abs(back - y).max() < 1e-5
    np.testing.assert_array_equal(dsp.stft_frames(y, 2, 9, 4096, 1024)[1], dsp.stft_frames(y[1], 2, 9, 4096, 1024))


@pytest.mark.parametrize("n_fft", [16, 1000, 1024, 4096, 2047])
def test_windows_are_scipys_periodic_windows_bit_for_bit(n_fft):
    from scipy.signal import get_window

    w = dsp.get_window("hann", n_fft)
    assert w.dtype == np.float32 and w.shape == (n_fft,) and not w.flags.writeable
    np.testing.assert_array_equal(w, get_window("hann", n_fft, fftbins=True).astype(np.float32))
    np.testing.assert_array_equal(dsp.get_window("ones", n_fft), np.ones(n_fft, np.float32))
    with pytest.raises(StemforgeError, match="unsupported window"):
        dsp.get_window("kaiser", n_fft)
    with pytest.raises(StemforgeError, match="positive"):
        dsp.get_window("hann", 0)


@pytest.mark.parametrize("n_fft, hop", [(16, 4), (16, 5), (12, 12)])
def test_overlap_add_and_window_envelope_equal_a_plain_loop(n_fft, hop):
    frames = _signal(7 * n_fft, 1).reshape(7, n_fft)
    expected = np.zeros(6 * hop + n_fft, np.float32)
    env = np.zeros_like(expected)
    w2 = dsp.get_window("hann", n_fft) ** 2
    for i, f in enumerate(frames):
        expected[i * hop : i * hop + n_fft] += f
        env[i * hop : i * hop + n_fft] += w2
    np.testing.assert_allclose(dsp.overlap_add(frames, hop), expected, atol=1e-6)
    np.testing.assert_allclose(dsp.overlap_add(np.stack([frames, 2 * frames]), hop)[1], 2 * expected, atol=1e-5)
    np.testing.assert_allclose(dsp.window_envelope(w2, 7, hop), env, atol=1e-6)


def test_bad_arguments_are_refused():
    cfg = SpectrogramConfig()
    with pytest.raises(StemforgeError, match="pad_mode"):
        dsp.stft(_signal(2000), SpectrogramConfig(pad_mode="reflect"))
    with pytest.raises(StemforgeError, match="window has shape"):
        dsp.stft_frames(_signal(2000), 0, 2, 1024, 512, np.ones(10))
    with pytest.raises(StemforgeError, match="n_frames"):
        dsp.istft(np.zeros((4, 100), np.complex64), cfg)


def test_the_stft_does_not_import_scipy_signal():
    code = (
        "import sys, numpy as np\n"
        "from stemforge.core import dsp\n"
        "from stemforge.core.config import SpectrogramConfig\n"
        "dsp.istft(dsp.stft(np.ones(5000, np.float32), SpectrogramConfig()), SpectrogramConfig())\n"
        "print(sorted(m for m in ('scipy.signal', 'librosa', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_vocal_activity_is_relative_to_the_loudest_frame():
    e = np.array([0.0, 1e-6, 1e-3, 1.0, 0.5])
    assert dsp.vocal_activity(e, -40.0).tolist() == [False, False, True, True, True]
    assert not dsp.vocal_activity(np.zeros(4)).any()


def test_the_two_fft_back_ends_agree_to_float32_rounding():
    """One worker: numpy's FFT (what every stored array was computed with); several: scipy's
    threaded pocketfft (the Separator's full-band STFT). Same transform to rounding."""
    from stemforge.core import dsp

    x = np.random.default_rng(5).standard_normal((2, 44100 * 3)).astype(np.float32)
    one = dsp.stft_frames(x, 0, 120, 4096, 1024, "hann", True, workers=1)
    two = dsp.stft_frames(x, 0, 120, 4096, 1024, "hann", True, workers=2)
    scale = np.abs(one).max()
    assert np.max(np.abs(one - two)) < 1e-5 * scale
