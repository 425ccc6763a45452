"""The numpy STFT equals librosa's and inverts exactly."""

import numpy as np
import pytest

from stemforge.core import dsp
from stemforge.core.config import SpectrogramConfig


@pytest.mark.parametrize("n_samples", [100, 1024, 16000 * 3 + 17])
def test_stft_equals_librosa(n_samples):
    import librosa

    cfg = SpectrogramConfig()
    y = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    ours = dsp.stft(y, cfg)
    ref = librosa.stft(y, n_fft=1024, hop_length=512).T
    assert ours.shape == ref.shape == (cfg.n_frames(n_samples), 513)
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()


def test_istft_inverts_and_equals_librosa():
    import librosa

    cfg = SpectrogramConfig()
    y = np.random.default_rng(0).standard_normal(16000 * 2 + 5).astype(np.float32)
    spec = dsp.stft(y, cfg)
    back = dsp.istft(spec, cfg, length=y.size)
    assert np.abs(back - y).max() < 1e-5
    ref = librosa.istft(spec.T, n_fft=1024, hop_length=512, length=y.size)
    assert np.abs(back - ref).max() < 1e-5


def test_vocal_activity_is_relative_to_the_loudest_frame():
    e = np.array([0.0, 1e-6, 1e-3, 1.0, 0.5])
    assert dsp.vocal_activity(e, -40.0).tolist() == [False, False, True, True, True]
    assert not dsp.vocal_activity(np.zeros(4)).any()
