"""The multichannel Wiener filter (stemforge.separate.wiener) against norbert's ``wiener`` (the
reference implementation of the algorithm), on synthetic spectrograms; the Separator's Wiener
option (blocks of the global frame grid, independent of how the input is cut) and its mask power.
On a real MUSDB18 excerpt: tests/integration/test_wiener_real.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stemforge.core import audio
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError
from stemforge.separate.separator import DEFAULT_MASK_POWER, SINGLE_MASK_POWER, WIENER_MASK_POWER, Separator
from stemforge.separate.wiener import wiener_em

from support.wiener import blockwise_reference, norbert_wiener, rel, soft_start

pytest.importorskip("norbert")

PLAIN = dataclasses.replace(SpectrogramConfig.preset("fullband"), normalization="none")  # 44.1 kHz stereo 4096/1024


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
    assert DEFAULT_MASK_POWER == 1.5  # two nets' (tests/integration/test_post_filter_cli.py)
    assert Separator.from_mask_fn(mask, PLAIN).mask_power == SINGLE_MASK_POWER == 1.0  # one mask: as given
    assert Separator.from_mask_fn(mask, PLAIN, mask_power=2).post_filter == "the given mask at power 2"
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
