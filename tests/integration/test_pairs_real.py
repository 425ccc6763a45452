"""Karaoke pairs made from real music ($STEMFORGE_REAL_DATA, the MUSDB18 excerpts): the right pair
is aligned and its vocals derived, a wrong pair is rejected. Alignment and derivation on
synthetic songs: tests/unit/karaoke/test_pairs.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stemforge.core import audio
from stemforge.core.errors import AlignmentError
from stemforge.karaoke.align import Alignment, derive

from support.pairs import SR_KAR, make_karaoke, sdr


EXCERPTS = "musdb18-excerpts"


def _load_excerpt(folder: Path) -> dict:
    out = {}
    for role in ("mixture", "vocals", "accompaniment"):
        x, rate = audio.load(folder / f"{role}.mp3")
        out[role] = x
        out["rate"] = rate
    n = min(out[r].shape[1] for r in ("mixture", "vocals", "accompaniment"))
    for r in ("mixture", "vocals", "accompaniment"):
        out[r] = out[r][:, :n]
    return out


@pytest.fixture(scope="module")
def excerpts(real_data) -> list[dict]:
    folders = sorted(p for p in (real_data / EXCERPTS).iterdir() if p.is_dir()) if (real_data / EXCERPTS).is_dir() else []
    if len(folders) < 2:
        pytest.skip(f"{real_data / EXCERPTS} holds fewer than two excerpts")
    return [dict(_load_excerpt(f), name=f.name) for f in folders[:2]]


@pytest.mark.realdata
@pytest.mark.parametrize("index, offset_s, gain_db, tail_s", [(0, 3.217, 3.0, -2.0), (1, -2.9, -4.0, 3.0)])
def test_real_music_pair(excerpts, index, offset_s, gain_db, tail_s):
    ex = excerpts[index]
    rate = ex["rate"]
    karaoke = np.stack(
        [make_karaoke(np.random.default_rng(5), ex["accompaniment"][c], offset_s, gain_db, tail_s, rate, SR_KAR) for c in range(2)]
    )
    true_offset = round(offset_s * SR_KAR) / SR_KAR
    truth = audio.resample(audio.to_mono(ex["vocals"]), rate, 16000)
    aligned = derive(ex["mixture"], rate, ex["accompaniment"], rate, alignment=Alignment.known(0.0, 0.0, rate))

    d = derive(ex["mixture"], rate, karaoke, SR_KAR)

    a = d.alignment
    assert abs(a.offset_s - true_offset) < 1e-3, ex["name"]
    assert abs(a.gain_db - gain_db) < 0.2, ex["name"]
    s0, s1 = d.covered
    got = sdr(truth[s0:s1], d.vocals[s0:s1])
    ref = sdr(truth[s0:s1], aligned.vocals[s0:s1])
    assert abs(got - ref) < 0.5, (ex["name"], got, ref)


@pytest.mark.realdata
def test_real_music_wrong_pair_is_rejected(excerpts):
    a, b = excerpts[0], excerpts[1]
    with pytest.raises(AlignmentError):
        derive(a["mixture"], a["rate"], b["accompaniment"], b["rate"])

