"""The multichannel Wiener filter against norbert's ``wiener`` on a real MUSDB18 excerpt
($STEMFORGE_REAL_DATA). On synthetic spectrograms, and the Separator's options:
tests/unit/separate/test_wiener.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stemforge.core import audio, dsp
from stemforge.core.config import SpectrogramConfig
from stemforge.separate.separator import Separator
from stemforge.separate.wiener import wiener_em

from support.wiener import blockwise_reference, norbert_wiener, rel, soft_start

pytest.importorskip("norbert")

PLAIN = dataclasses.replace(SpectrogramConfig.preset("fullband"), normalization="none")  # 44.1 kHz stereo 4096/1024


@pytest.mark.realdata
def test_wiener_equals_norbert_on_a_real_musdb18_excerpt(real_data):
    """The first MUSDB18 excerpt of $STEMFORGE_REAL_DATA (10 s of mixture.mp3), the sources'
    spectrograms from its true vocals and accompaniment: our filter equals norbert.wiener to
    float32 precision (the 2x2 inversions are ill-conditioned in float32: relative L2 about
    1e-5), for 1 to 3 iterations, whole excerpt; and the Separator's blockwise filter equals
    norbert run on the same blocks."""
    root = real_data / "musdb18-excerpts"
    folders = sorted(p for p in root.iterdir() if (p / "mixture.mp3").is_file()) if root.is_dir() else []
    if not folders:
        pytest.skip(f"{root} holds no excerpt")
    d = folders[0]
    n = 44100 * 10
    mix, sr = audio.load(d / "mixture.mp3")
    voc, _ = audio.load(d / "vocals.mp3")
    acc, _ = audio.load(d / "accompaniment.mp3")
    assert sr == 44100
    mix, voc, acc = (np.ascontiguousarray(a[:, :n], dtype=np.float32) for a in (mix, voc, acc))
    X = dsp.stft(mix, PLAIN)
    V = np.stack([np.abs(dsp.stft(voc, PLAIN)), np.abs(dsp.stft(acc, PLAIN))]).astype(np.float32)
    for iterations in (1, 2, 3):
        ours = wiener_em(soft_start(V, X), X, iterations)
        theirs = norbert_wiener(V, X, iterations)
        assert rel(ours, theirs) < 1e-4, iterations
        assert rel(ours, soft_start(V, X)) > 1e-3
    mask = (V[0] / np.maximum(V.sum(0), 1e-20)).astype(np.float32)
    sep = Separator.from_mask_fn(lambda _x: mask, PLAIN, window_frames=None, wiener_iterations=1, wiener_block_frames=128)
    got = sep.separate(mix, 44100)["vocals"]
    assert rel(got, blockwise_reference(mix, mask, PLAIN, 1, 128)) < 1e-4
