"""The multichannel Wiener filter (stemforge.separate.wiener) against norbert's ``wiener`` (the
reference implementation of the algorithm), on synthetic spectrograms and on a real MUSDB18
excerpt ($STEMFORGE_REAL_DATA); the Separator's Wiener option (blocks of the global frame grid,
independent of how the input is cut) and its mask power."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stemforge.core import audio, dsp
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError
from stemforge.separate.separator import DEFAULT_MASK_POWER, WIENER_MASK_POWER, Separator
from stemforge.separate.wiener import wiener_em

norbert = pytest.importorskip("norbert")

PLAIN = dataclasses.replace(SpectrogramConfig.preset("fullband"), normalization="none")  # 44.1 kHz stereo 4096/1024


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / np.linalg.norm(b.ravel()))


def soft_start(V: np.ndarray, X: np.ndarray) -> np.ndarray:
    """norbert's initial estimates: V_j / (eps + sum V) * X, ``V [S, C, T, K]``, ``X [C, T, K]``."""
    eps = np.finfo(np.real(X).dtype).eps
    return (V / (eps + V.sum(0, keepdims=True)) * X[None]).astype(X.dtype)


def norbert_wiener(V: np.ndarray, X: np.ndarray, iterations: int) -> np.ndarray:
    """norbert.wiener on stemforge's layout: V [S, C, T, K], X [C, T, K] -> [S, C, T, K]."""
    y = norbert.wiener(np.ascontiguousarray(V.transpose(2, 3, 1, 0)), np.ascontiguousarray(X.transpose(1, 2, 0)), iterations=iterations)
    return y.transpose(3, 2, 0, 1)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_wiener_em_equals_norbert_on_synthetic_spectrograms(channels, dtype):
    rng = np.random.default_rng(channels)
    shape = (channels, 60, 33)
    X = ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * 40).astype(dtype)  # max|X| > 10: the scaling acts
    V = (rng.random((2,) + shape) ** 3 * np.abs(X)).astype(np.real(X).dtype)
    tol = 1e-5 if dtype == np.complex64 else 1e-12
    for iterations in (0, 1, 2, 3):
        ours = wiener_em(soft_start(V, X), X, iterations)
        assert ours.dtype == dtype
        assert rel(ours, norbert_wiener(V, X, iterations)) < tol, iterations
    assert rel(wiener_em(soft_start(V, X), X, 1), soft_start(V, X)) > 1e-2  # an iteration does change the estimates


def test_wiener_em_refuses_bad_shapes():
    X = np.zeros((3, 4, 5), np.complex64)
    with pytest.raises(StemforgeError, match="1 or 2 channels"):
        wiener_em(np.zeros((2, 3, 4, 5), np.complex64), X, 1)
    with pytest.raises(StemforgeError, match="expected y"):
        wiener_em(np.zeros((2, 2, 4, 5), np.complex64), X[:2, :3], 1)


def blockwise_reference(x: np.ndarray, mask: np.ndarray, cfg: SpectrogramConfig, iterations: int, block: int) -> np.ndarray:
    """vocals = iSTFT of norbert.wiener run on consecutive blocks of ``block`` frames of the
    whole-signal STFT, from the sources ``mask |X|`` and ``(1 - mask) |X|``."""
    X = dsp.stft(x, cfg)
    V = np.stack([mask * np.abs(X), (1.0 - mask) * np.abs(X)]).astype(np.float32)
    Y = np.empty_like(X)
    for t0 in range(0, X.shape[1], block):
        Y[:, t0 : t0 + block] = norbert_wiener(V[:, :, t0 : t0 + block], X[:, t0 : t0 + block], iterations)[0]
    return dsp.istft(Y, cfg, length=x.shape[1])


def smooth_mask(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    m = rng.random(shape)
    for axis in (-1, -2):
        m = (m + np.roll(m, 1, axis) + np.roll(m, -1, axis)) / 3
    return np.clip(m, 0.02, 0.98).astype(np.float32)


@pytest.mark.parametrize("iterations", [1, 2])
def test_separator_wiener_is_norbert_on_blocks_of_the_grid_and_independent_of_the_input_blocks(tmp_path, iterations):
    rng = np.random.default_rng(5)
    n = 44100 * 3 + 777
    x = (rng.standard_normal((2, n)) * np.linspace(0.05, 0.5, n)).astype(np.float32)
    n_frames = PLAIN.n_frames(n)
    mask = smooth_mask(rng, (2, n_frames, PLAIN.n_bins))
    block = 50
    sep = Separator.from_mask_fn(lambda _x: mask, PLAIN, window_frames=None, wiener_iterations=iterations, wiener_block_frames=block)
    assert sep.mask_power == WIENER_MASK_POWER
    got = sep.separate(x, 44100)
    want = blockwise_reference(x, mask, PLAIN, iterations, block)
    assert rel(got["vocals"], want) < 1e-4
    np.testing.assert_allclose(got["vocals"] + got["accompaniment"], x, atol=1e-6)
    plain = Separator.from_mask_fn(lambda _x: mask, PLAIN, window_frames=None).separate(x, 44100)["vocals"]
    assert rel(plain, want) > 1e-2  # the filter is not the mask
    # from a file, decoded and masked in other blocks: the same samples
    src = audio.write(tmp_path / "x.wav", x, 44100, subtype="FLOAT")
    outs = {"vocals": tmp_path / "v.wav", "accompaniment": tmp_path / "a.wav"}
    sep.separate_file(src, outs, block_samples=12345)
    v, _ = audio.load(outs["vocals"])
    np.testing.assert_allclose(v, got["vocals"], atol=1e-6)


def test_separator_options_and_their_defaults():
    mask = lambda x: np.full((2, PLAIN.n_frames(x.shape[-1]), PLAIN.n_bins), 0.5, np.float32)  # noqa: E731
    assert Separator.from_mask_fn(mask, PLAIN).mask_power == DEFAULT_MASK_POWER == 1.5
    assert Separator.from_mask_fn(mask, PLAIN, wiener_iterations=1).mask_power == 1.0
    assert Separator.from_mask_fn(mask, PLAIN, wiener_iterations=1, mask_power=2).mask_power == 2.0
    with pytest.raises(StemforgeError, match="hard_mask or wiener_iterations"):
        Separator.from_mask_fn(mask, PLAIN, wiener_iterations=1, hard_mask=True)
    for bad in (0, -1.0, float("nan"), 100.0, True, "2"):
        with pytest.raises(StemforgeError, match="mask_power"):
            Separator.from_mask_fn(mask, PLAIN, mask_power=bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(StemforgeError, match="wiener_iterations"):
            Separator.from_mask_fn(mask, PLAIN, wiener_iterations=bad)


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
