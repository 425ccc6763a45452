"""Recipes on real excerpts ($STEMFORGE_REAL_DATA; skipped when unset): MUSDB18's stems format,
an iKala clip, and MUSDB18 MP3 excerpts listed in a user CSV. The audio is read where it lies,
never copied into the project."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stemforge.core import audio
from stemforge.ingest.reconcile import reconcile_datadir
from stemforge.ingest.engine import ingest
from stemforge.store import DataDir
from stemforge.store.check import validate

pytestmark = pytest.mark.realdata


def _snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(ref.size, est.size)
    ref, est = ref[:n], est[:n]
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - est) ** 2), 1e-20)))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def _mono16k(path: Path, stream: int = 0, channel: int | None = None) -> np.ndarray:
    data, sr = audio.load(path, stream=stream)
    if channel is not None:
        data = data[channel : channel + 1]
    return audio.resample(audio.to_mono(data), sr, 16000)


def test_musdb18_stem_mp4_streams_have_the_right_roles(real_data, tmp_path):
    from stemforge.recipes import musdb

    root = real_data / "musdb18-sample"
    path = root / "train" / "Music Delta - 80s Rock.stem.mp4"
    if not path.exists():
        pytest.skip(f"{path} not there")
    (src,) = musdb.discover(root)
    assert src.track_id == "Music Delta - 80s Rock" and src.split == "train"
    assert dict(src.extra)["medleydb_track_id"] == "MusicDelta_80sRock"
    dd = DataDir.create(tmp_path / "d")
    report = ingest(dd, [src], workers=1, post_commit=reconcile_datadir)
    assert report.ok, report.failed
    row = dd.reload().iloc[0]
    assert int(row["source_sample_rate"]) == 44100 and int(row["source_channels"]) == 2
    assert abs(float(row["duration_s"]) - 6.8) < 0.1
    # the stored mixture stream is close to, not equal to, the sum of the four (AAC coding)
    assert -40 < float(row["mix_residual_db"]) < -20

    reader = dd.reader()
    voc = reader.read_wave(row["shard"], row["key"], "vocals", 0, None)
    acc = reader.read_wave(row["shard"], row["key"], "accompaniment", 0, None)
    streams = {k: _mono16k(path, stream=k) for k in range(5)}
    mixture, others = streams[0], streams[1] + streams[2] + streams[3]
    # independent check of the stream roles: mixture - (drums + bass + other) is the vocals
    # stream (up to AAC), and not any other stream
    derived_vocals = mixture[: others.size] - others
    assert _snr_db(streams[4], derived_vocals) > 10
    for k in (1, 2, 3):
        assert _snr_db(streams[k], derived_vocals) < 0
    # what was stored is that vocals stream and that accompaniment
    assert _snr_db(streams[4], voc) > 40 and _snr_db(others, acc) > 40
    assert abs(_corr(voc, streams[1])) < 0.3  # not the drums
    frames = reader.read_frames(row["shard"], row["key"])
    assert frames["vocals"].shape == (int(row["n_frames"]), 513)
    assert validate(dd).ok


def test_ikala_clip_voice_is_the_right_channel(real_data, tmp_path):
    from stemforge.recipes import ikala

    root = real_data / "ikala-sample"
    wav = root / "Wavfile" / "10161_chorus.wav"
    if not wav.exists():
        pytest.skip(f"{wav} not there")
    (src,) = ikala.discover(root)
    assert src.track_id == "10161_chorus" and src.title == "iKala 10161"
    dd = DataDir.create(tmp_path / "d")
    assert ingest(dd, [src], workers=1).ok
    row = dd.reload().iloc[0]
    assert int(row["source_sample_rate"]) == 44100 and row["vocals_kind"] == "channel"
    reader = dd.reader()
    voc = reader.read_wave(row["shard"], row["key"], "vocals", 0, None)
    acc = reader.read_wave(row["shard"], row["key"], "accompaniment", 0, None)
    right, left = _mono16k(wav, channel=1), _mono16k(wav, channel=0)
    assert _snr_db(right, voc) > 60 and _snr_db(left, acc) > 60
    assert abs(_corr(voc, left)) < 0.5
    # the right channel is the voice: almost nothing below 120 Hz, where the band's bass and
    # kick drum put a good part of theirs (measured on the stored magnitudes, bins of 15.6 Hz)
    mags = reader.read_frames(row["shard"], row["key"])

    def low_share(m):
        power = m.astype(np.float32) ** 2
        return float(power[:, 1:8].sum() / power[:, 1:].sum())

    assert low_share(mags["vocals"]) < 0.2 * low_share(mags["accompaniment"])


def test_csv_of_real_mp3_excerpts_derives_the_accompaniment(real_data, tmp_path):
    from stemforge.recipes import csv as csv_recipe

    base = real_data / "musdb18-excerpts"
    songs = sorted(p for p in base.iterdir() if (p / "mixture.mp3").exists()) if base.is_dir() else []
    if not songs:
        pytest.skip(f"no excerpt under {base}")
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mixture", "vocals", "artist", "title", "split"])
        w.writeheader()
        for p in songs:
            artist, _, title = p.name.partition(" - ")
            w.writerow({"mixture": str(p / "mixture.mp3"), "vocals": str(p / "vocals.mp3"), "artist": artist, "title": title, "split": "test"})
    sources = csv_recipe.discover(listing, name="excerpts", length_tolerance=4096)
    dd = DataDir.create(tmp_path / "d")
    report = ingest(dd, sources, workers=1, post_commit=reconcile_datadir)
    assert report.ok, report.failed
    df = dd.reload().set_index("track_id")
    reader = dd.reader()
    for p in songs:
        row = df.loc[p.name]
        acc = reader.read_wave(row["shard"], row["key"], "accompaniment", 0, None)
        truth = _mono16k(p / "accompaniment.mp3")
        # mixture - vocals is the true accompaniment up to MP3 coding (about 20 dB)
        assert _snr_db(truth, acc) > 12, p.name
    assert validate(dd).ok
