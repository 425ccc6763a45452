"""The MUSDB18 protocol: BSS Eval v4 on stereo images (equal to museval), MUSDB18 discovery and
subsets, scoring estimates on disk with one-line refusals, and the report files. On real MUSDB18
tracks: tests/integration/test_musdb18_protocol_real.py. Whole protocol runs on a synthetic tree:
tests/integration/test_musdb18_protocol_runs.py."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import import_museval
from stemforge.core.errors import StemforgeError
from stemforge.evaluate import musdb18
from stemforge.evaluate.bss import BssEvalV4, bss_eval_v4

from support.musdb18_protocol import SR, _hq_corpus, _song


def test_stereo_v4_equals_museval():
    museval = import_museval()
    rng = np.random.default_rng(1)
    s = _song(rng, 6.0)
    refs = np.stack([s["vocals"], s["drums"] + s["bass"] + s["other"]])
    est_v = 0.8 * refs[0] + 0.1 * refs[1] + 0.01 * rng.standard_normal(refs[0].shape)
    est_v[:, 1] = np.convolve(est_v[:, 0], [0.6, 0.3], mode="same")  # a spatial distortion
    est = np.stack([est_v, refs.sum(axis=0) - est_v + 0.01 * rng.standard_normal(refs[0].shape)])
    mine = bss_eval_v4(refs, est, window=SR, hop=SR)
    theirs = dict(zip(("sdr", "isr", "sir", "sar"), museval.evaluate(refs, est, win=SR, hop=SR)))
    np.testing.assert_array_equal(np.isnan(mine["sdr"]), np.isnan(theirs["sdr"]))
    assert np.isnan(mine["sdr"]).any()  # the silent second is left out
    for k in theirs:
        ok = ~np.isnan(theirs[k])
        assert np.max(np.abs(mine[k][ok] - theirs[k][ok])) < 1e-6, k


def test_mono_images_are_the_single_channel_case():
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((2, 3 * SR))
    est = refs + 0.2 * refs[::-1] + 0.05 * rng.standard_normal(refs.shape)
    a = bss_eval_v4(refs, est, SR, SR)
    b = bss_eval_v4(refs[..., None], est[..., None], SR, SR)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-9)
    with pytest.raises(StemforgeError, match="differ in shape"):
        BssEvalV4(refs[..., None]).evaluate(np.repeat(est[..., None], 2, axis=2), SR, SR)


def test_tracks_subsets_and_the_validation_list(tmp_path):
    valid_name = "Actions - One Minute Smile"  # on MUSDB18's official validation list
    _hq_corpus(tmp_path, {"train": [valid_name, "Zed - Train Song"], "test": ["Alpha - Test Song", "Beta - Other Song"]}, 1.0)
    test = musdb18.find_tracks(tmp_path, "test")
    assert [t.name for t in test] == ["Alpha - Test Song", "Beta - Other Song"] and {t.split for t in test} == {"test"}
    train = {t.name: t.split for t in musdb18.find_tracks(tmp_path, "train")}
    assert train == {valid_name: "valid", "Zed - Train Song": "train"}
    assert len(musdb18.find_tracks(tmp_path, "test", limit=1)) == 1
    with pytest.raises(StemforgeError, match="subset"):
        musdb18.find_tracks(tmp_path, "valid")
