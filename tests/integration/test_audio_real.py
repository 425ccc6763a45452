"""Audio decoding of real files ($STEMFORGE_REAL_DATA): MUSDB18 MP3 excerpts and .stem.mp4 tracks,
every stream of a stem.mp4 in one pass. The decoders on files made at test time:
tests/unit/core/test_audio.py."""

from __future__ import annotations

import numpy as np
import pytest

from stemforge.core import audio
from stemforge.core.errors import AudioError


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


def test_every_stream_of_a_stem_mp4_in_one_pass(real_data):
    stem = next((real_data / "musdb18-sample").rglob("*.stem.mp4"))
    mono, rate, channels = audio.load_streams_mono(stem, {0, 4})
    assert (rate, channels) == (44100, 2)
    for k in (0, 4):
        ref, _ = audio.load(stem, stream=k)
        np.testing.assert_allclose(mono[k], audio.to_mono(ref), atol=1e-6)
    with pytest.raises(AudioError, match="stream 5 requested"):
        audio.load_streams_mono(stem, {0, 5})

