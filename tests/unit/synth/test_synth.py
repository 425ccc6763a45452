"""The procedural corpus: deterministic voice-like songs written in every real corpus layout."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from stemforge.core import audio
from stemforge.core.errors import StemforgeError
from stemforge.synth import LAYOUTS
from stemforge.synth.layouts import write_corpus
from stemforge.synth.songs import stem_kind, synthesize_song

REFERENCE = Path("/work/shared/reference")
MEDLEYDB_METADATA = REFERENCE / "medleydb-metadata"


def _ints(path: Path) -> np.ndarray:
    """PCM samples as written, [channels, samples] int32."""
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return data.T.astype(np.int32)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :n].ravel().astype(np.float64), b[..., :n].ravel().astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _frames(x: np.ndarray, frame: int = 2048, hop: int = 1024) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]


# --------------------------------------------------------------------------- songs


def test_same_rng_state_gives_identical_songs_and_other_seeds_differ():
    a = synthesize_song(np.random.default_rng(5), 3.0)
    b = synthesize_song(np.random.default_rng(5), 3.0)
    c = synthesize_song(np.random.default_rng(6), 3.0)
    for name in ("vocals", "drums", "bass", "other"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert not np.array_equal(getattr(a, name), getattr(c, name)), name
    assert (a.artist, a.title, a.tempo_bpm) == (b.artist, b.title, b.tempo_bpm)
    assert (a.artist, a.title) != (c.artist, c.title)


def test_shapes_dtypes_and_levels():
    song = synthesize_song(np.random.default_rng(1), 8.0, sample_rate=22050)
    n = int(round(8.0 * 22050))
    for stem in song.stems().values():
        assert stem.shape == (2, n) and stem.dtype == np.float32
    mix = song.mixture
    assert 0.2 < np.abs(mix).max() < 1.0
    # vocals roughly at the level of the accompaniment (RMS over sung samples vs whole song)
    sung = np.zeros(n, dtype=bool)
    for onset, end, _f0 in song.vocal_notes:
        sung[int(onset * 22050) : int(end * 22050)] = True
    voc_db = 10 * np.log10(np.mean(song.vocals[:, sung] ** 2))
    acc_db = 10 * np.log10(np.mean(song.accompaniment**2))
    assert abs(voc_db - acc_db) < 6.0
    mono = synthesize_song(np.random.default_rng(1), 2.0, sample_rate=16000, stereo=False)
    assert all(s.shape == (1, 32000) for s in mono.stems().values())


def test_vocals_have_rests_and_harmonic_voiced_frames():
    sr = 44100
    song = synthesize_song(np.random.default_rng(3), 24.0, sample_rate=sr)
    v = audio.to_mono(song.vocals)
    frames = _frames(v)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    silent = energy < energy.max() * 10 ** (-40 / 20)
    assert 0.2 <= silent.mean() <= 0.6, silent.mean()
    voiced = energy > energy.max() * 10 ** (-15 / 20)
    assert voiced.sum() > 50
    spec = np.abs(np.fft.rfft(frames[voiced] * np.hanning(2048), axis=1)) ** 2 + 1e-12
    flatness = np.exp(np.mean(np.log(spec), axis=1)) / np.mean(spec, axis=1)
    assert np.median(flatness) < 0.02
    # a clear f0 by autocorrelation, matching the sung note
    lo, hi = sr // 1000, sr // 60
    agree = []
    for idx in np.flatnonzero(voiced)[::4][:40]:
        x = frames[idx] - frames[idx].mean()
        r = np.fft.irfft(np.abs(np.fft.rfft(x, 4096)) ** 2)[:2048]
        r /= r[0]
        lag = lo + int(np.argmax(r[lo:hi]))
        t = (idx * 1024 + 1024) / sr
        notes = [f0 for onset, end, f0 in song.vocal_notes if onset <= t < end]
        if notes:
            agree.append(r[lag] > 0.6 and abs(sr / lag / notes[0] - 1) < 0.05)
    assert len(agree) >= 10 and np.mean(agree) > 0.8


def test_stem_kind_follows_medleydb_labels():
    assert stem_kind("female singer") == "voice"
    assert stem_kind(["male rapper", "drum set"]) == "voice"  # list: the first label decides
    assert stem_kind(["drum set", "male singer"]) == "drums"
    assert stem_kind("electric bass") == "bass" and stem_kind("bass drum") == "drums"
    assert stem_kind("piano") == "other" and stem_kind(None) == "other"


# --------------------------------------------------------------------------- layouts


def test_dsd100_layout_and_exact_mixture(tmp_path):
    recs = write_corpus(tmp_path, "dsd100", songs=3, seconds=2.0, seed=4)
    assert {r["subset"] for r in recs} == {"Dev", "Test"}
    ids = [r["dsd_id"] for r in recs]
    assert len(set(ids)) == 3
    for r in recs:
        assert (1 <= r["dsd_id"] <= 50) == (r["subset"] == "Test")
        folder = f"{r['dsd_id']:03d} - {r['artist']} - {r['title']}"
        mix = tmp_path / "Mixtures" / r["subset"] / folder / "mixture.wav"
        srcs = [tmp_path / "Sources" / r["subset"] / folder / f"{s}.wav" for s in ("bass", "drums", "other", "vocals")]
        for p in [mix, *srcs]:
            i = sf.info(str(p))
            assert (i.samplerate, i.channels, i.subtype) == (44100, 2, "PCM_16")
        total = sum(_ints(p) for p in srcs)
        assert np.array_equal(_ints(mix), total)  # residual is zero: stems are on the PCM grid


def test_dsd100_entries_reproduce_real_folder_names(tmp_path):
    entries = [{"id": 53, "subset": "Dev", "artist": "Actions", "title": "Devil's Words"}, {"id": 3, "artist": "A", "title": "B"}]
    recs = write_corpus(tmp_path, "dsd100", songs=0, seconds=1.0, seed=1, entries=entries)
    assert (tmp_path / "Mixtures/Dev/053 - Actions - Devil's Words/mixture.wav").is_file()
    assert (tmp_path / "Sources/Test/003 - A - B/vocals.wav").is_file()
    assert [r["track_id"] for r in recs] == ["053", "003"]


def test_adding_songs_does_not_change_earlier_ones(tmp_path):
    one = write_corpus(tmp_path / "one", "ccmixter", songs=1, seconds=1.5, seed=8)
    three = write_corpus(tmp_path / "three", "ccmixter", songs=3, seconds=1.5, seed=8)
    assert one[0]["track_id"] == three[0]["track_id"]
    assert np.array_equal(_ints(one[0]["paths"]["vocals"]), _ints(three[0]["paths"]["vocals"]))


def test_musdb_hq_layout(tmp_path):
    recs = write_corpus(tmp_path, "musdb-hq", songs=2, seconds=1.5, seed=2, names=[("Some Artist", "Some Song")])
    assert recs[0]["folder"] == "train/Some Artist - Some Song" and recs[1]["subset"] == "test"
    for r in recs:
        folder = tmp_path / r["subset"] / r["track_id"]
        assert sorted(p.name for p in folder.iterdir()) == ["bass.wav", "drums.wav", "mixture.wav", "other.wav", "vocals.wav"]
        assert sf.info(str(folder / "mixture.wav")).samplerate == 44100


def test_musdb_stem_mp4_streams_decode_to_their_stems(tmp_path):
    seed, seconds = 3, 1.0
    recs = write_corpus(tmp_path, "musdb", songs=2, seconds=seconds, seed=seed)
    assert [r["subset"] for r in recs] == ["train", "test"]
    for r in recs:
        path = r["paths"]["stem_mp4"]
        assert path == tmp_path / r["subset"] / f"{r['artist']} - {r['title']}.stem.mp4"
        assert audio.n_streams(path) == 5
        song = synthesize_song(np.random.default_rng([seed, r["index"]]), seconds)
        refs = [song.mixture, song.drums, song.bass, song.other, song.vocals]
        for k, ref in enumerate(refs):
            x, rate = audio.load(path, stream=k)
            assert rate == 44100 and x.shape[0] == 2 and x.shape[1] >= ref.shape[1]
            assert _corr(x, ref) > 0.9, (k, _corr(x, ref))
        # a stream correlates with its own stem far better than with another
        x, _ = audio.load(path, stream=4)
        assert _corr(x, song.vocals) > _corr(x, song.drums) + 0.5


def _check_medleydb_tree(root: Path, recs: list[dict]) -> None:
    coefs = yaml.safe_load((root / "mixing_coefficients.yaml").read_text())
    for r in recs:
        tid = r["track_id"]
        meta = yaml.safe_load((root / "Audio" / tid / f"{tid}_METADATA.yaml").read_text())
        mix = root / "Audio" / tid / meta["mix_filename"]
        assert sf.info(str(mix)).samplerate == 44100
        weights = coefs[tid]["manual"]
        total = 0.0
        for key, stem in meta["stems"].items():
            path = root / "Audio" / tid / meta["stem_dir"] / stem["filename"]
            x, rate = audio.load(path)
            assert rate == 44100 and x.shape[0] == 2
            assert np.abs(x).max() > 0.01, f"{path} is silent"
            w = weights[int(key[1:])]
            assert 0.5 <= w <= 1.0
            total = total + w * x
        m, _ = audio.load(mix)
        assert np.abs(m - total).max() <= 2.0 / 32768  # weighted sum, up to PCM rounding
        assert coefs[tid]["audio"] == weights == coefs[tid]["stft"]


def test_medleydb_synthetic_metadata(tmp_path):
    recs = write_corpus(tmp_path, "medleydb", songs=2, seconds=1.5, seed=5)
    _check_medleydb_tree(tmp_path, recs)
    for r in recs:
        assert re.fullmatch(r"[A-Za-z0-9]+_[A-Za-z0-9]+", r["track_id"])
        meta = yaml.safe_load(r["paths"]["metadata"].read_text())
        assert {"artist", "title", "mix_filename", "stem_dir", "stems", "instrumental", "has_bleed", "version"} <= set(meta)
        labels = [s["instrument"] for s in meta["stems"].values()]
        assert sum(stem_kind(x) == "voice" for x in labels) >= 2
        assert sum(stem_kind(x) != "voice" for x in labels) >= 3
        for s in meta["stems"].values():
            assert set(s) == {"component", "filename", "instrument", "raw"}


@pytest.mark.skipif(not MEDLEYDB_METADATA.is_dir(), reason="real MedleyDB metadata not available")
def test_medleydb_tree_from_real_metadata(tmp_path):
    ids = ["AHa_TakeOnMe", "AClassicEducation_NightOwl"]  # list-valued labels; several voice stems
    recs = write_corpus(tmp_path, "medleydb", songs=0, seconds=1.0, seed=2, metadata_dir=MEDLEYDB_METADATA, track_ids=ids)
    assert [r["track_id"] for r in recs] == ids
    _check_medleydb_tree(tmp_path, recs)
    for r in recs:
        src = MEDLEYDB_METADATA / f"{r['track_id']}_METADATA.yaml"
        assert r["paths"]["metadata"].read_bytes() == src.read_bytes()
        meta = yaml.safe_load(src.read_text())
        assert set(r["paths"]["stems"]) == set(meta["stems"])
        assert r["stem_kinds"] == {k: stem_kind(s["instrument"]) for k, s in meta["stems"].items()}
    # songs limits how many files, in sorted order
    few = write_corpus(tmp_path / "few", "medleydb", songs=1, seconds=0.5, seed=2, metadata_dir=MEDLEYDB_METADATA)
    assert len(few) == 1 and few[0]["track_id"] == sorted(p.name for p in MEDLEYDB_METADATA.glob("*.yaml"))[0][: -len("_METADATA.yaml")]


def test_ikala_right_channel_is_the_voice(tmp_path):
    recs = write_corpus(tmp_path, "ikala", songs=3, seconds=2.0, seed=6)
    assert [r["track_id"] for r in recs] == ["10100_chorus", "10100_verse", "10101_chorus"]
    for r in recs:
        assert re.fullmatch(r"\d{5}_(chorus|verse)", r["track_id"])
        x, rate = audio.load(tmp_path / "Wavfile" / f"{r['track_id']}.wav")
        assert rate == 44100 and x.shape[0] == 2
        song = synthesize_song(np.random.default_rng([6, r["index"]]), 2.0, 44100, stereo=False)
        assert _corr(x[1], song.vocals[0]) > 0.999 and _corr(x[0], song.accompaniment[0]) > 0.999


def test_mir1k_clips_singers_and_channels(tmp_path):
    recs = write_corpus(tmp_path, "mir1k", songs=4, seconds=4.0, seed=9, clip_seconds=2.0)
    assert len({r["singer"] for r in recs}) == 3
    assert {r["song"] for r in recs} == {"abjones_1", "amy_1", "annar_1", "abjones_2"}
    for song_name in {r["song"] for r in recs}:
        clips = sorted((tmp_path / "Wavfile").glob(f"{song_name}_*.wav"))
        assert [p.name for p in clips] == [f"{song_name}_01.wav", f"{song_name}_02.wav"]
        whole = _ints(tmp_path / "UndividedWavfile" / f"{song_name}.wav")
        assert np.array_equal(np.concatenate([_ints(p) for p in clips], axis=1), whole)
        i = sf.info(str(clips[0]))
        assert (i.samplerate, i.channels) == (16000, 2)
    first = synthesize_song(np.random.default_rng([9, 0]), 4.0, 16000, stereo=False)
    x, _ = audio.load(tmp_path / "UndividedWavfile" / "abjones_1.wav")
    assert _corr(x[1], first.vocals[0]) > 0.999


def test_ccmixter_sources_and_some_mono(tmp_path):
    recs = write_corpus(tmp_path, "ccmixter", songs=3, seconds=1.5, seed=1)
    assert [r["channels"] for r in recs] == [2, 2, 1]
    for r in recs:
        folder = tmp_path / r["folder"]
        mix, acc, voc = (_ints(folder / f) for f in ("mix.wav", "source-01.wav", "source-02.wav"))
        assert mix.shape[0] == r["channels"] and np.array_equal(mix, acc + voc)
        song = synthesize_song(np.random.default_rng([1, r["index"]]), 1.5, stereo=r["channels"] == 2)
        assert _corr(voc, song.vocals) > 0.999


def _lag(reference: np.ndarray, delayed: np.ndarray) -> int:
    """Lag (samples) that best aligns ``delayed`` to ``reference``: delayed[n] ~ reference[n - lag]."""
    n = 1 << int(np.ceil(np.log2(len(reference) + len(delayed))))
    xc = np.fft.irfft(np.fft.rfft(delayed, n) * np.conj(np.fft.rfft(reference, n)), n)
    k = int(np.argmax(xc))
    return k if k < n // 2 else k - n


def test_pairs_truth_is_consistent(tmp_path):
    recs = write_corpus(tmp_path, "pairs", songs=3, seconds=6.0, seed=2)
    with open(tmp_path / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["original", "karaoke", "artist", "title"] and len(rows) == 3
    truth = json.loads((tmp_path / "truth.json").read_text())
    pairs = truth["pairs"]
    assert sum(p["wrong"] for p in pairs) == 1
    assert any(p["offset_s"] > 0 for p in pairs) and any(p["offset_s"] < 0 for p in pairs)
    for row, p in zip(rows, pairs):
        assert sf.info(str(tmp_path / row["original"])).samplerate == 44100
        assert sf.info(str(tmp_path / row["karaoke"])).samplerate == 48000
        assert abs(p["gain_db"]) <= 4.0 and abs(p["offset_s"]) <= 1.5
        assert (tmp_path / p["vocals"]).is_file()
        orig, voc, acc = (_ints(tmp_path / p[k]) for k in ("original", "vocals", "accompaniment"))
        assert np.array_equal(orig, voc + acc)
    for p in pairs:
        kar, rate = audio.load(tmp_path / p["karaoke"])
        kar = audio.resample(kar, rate, 44100)
        acc, _ = audio.load(tmp_path / p["accompaniment"])
        lag = _lag(audio.to_mono(acc), audio.to_mono(kar))
        if p["wrong"]:
            continue
        assert abs(lag - p["offset_samples"]) <= 2, (lag, p["offset_samples"])
        # gain: karaoke vs the shifted accompaniment over their overlap
        o = p["offset_samples"]
        a0, k0 = (0, o) if o >= 0 else (-o, 0)
        n = min(acc.shape[1] - a0, kar.shape[1] - k0)
        ratio = np.linalg.norm(kar[:, k0 : k0 + n]) / np.linalg.norm(acc[:, a0 : a0 + n])
        assert abs(20 * np.log10(ratio) - p["gain_db"]) < 0.2
    wrong = next(p for p in pairs if p["wrong"])
    kar, rate = audio.load(tmp_path / wrong["karaoke"])
    acc, _ = audio.load(tmp_path / wrong["accompaniment"])
    kar = audio.to_mono(audio.resample(kar, rate, 44100))
    o = wrong["offset_samples"]
    a0, k0 = (0, o) if o >= 0 else (-o, 0)
    n = min(acc.shape[1] - a0, kar.shape[0] - k0)
    assert _corr(kar[k0 : k0 + n], audio.to_mono(acc)[a0 : a0 + n]) < 0.5


def test_every_layout_is_covered():
    assert set(LAYOUTS) == {"dsd100", "musdb", "musdb-hq", "medleydb", "ikala", "mir1k", "ccmixter", "pairs"}


def test_one_registry_of_layouts_keyed_by_the_recipes():
    """Each layout names the recipe that reads it and a writer that exists; every recipe that
    reads a corpus folder has a layout; the CLI offers exactly the registry's layouts."""
    import inspect

    from stemforge.cli import synth as cli_synth
    from stemforge.recipes import RECIPES
    from stemforge.synth import layouts

    assert {layout.recipe for layout in LAYOUTS.values()} == set(RECIPES) - {"csv"}
    for name, layout in LAYOUTS.items():
        assert name == layout.recipe or name.startswith(f"{layout.recipe}-"), name
        writer = getattr(layouts, layout.writer)
        params = set(inspect.signature(writer).parameters)
        assert set(layout.options) - {"entries"} <= params, (name, layout.options)
    assert cli_synth.LAYOUT_NAMES == tuple(LAYOUTS)


def test_an_option_of_another_layout_is_refused_naming_what_the_layout_takes(tmp_path):
    with pytest.raises(StemforgeError, match=r"layout 'dsd100' does not take option\(s\) \['singers'\]; it takes: entries"):
        write_corpus(tmp_path, "dsd100", songs=1, seconds=1.0, seed=0, singers=2)


# --------------------------------------------------------------------------- errors and CLI


@pytest.mark.parametrize(
    "kwargs",
    [
        {"layout": "dsd99"},
        {"seconds": 0.0},
        {"songs": 0},
        {"layout": "ikala", "bit_rate": 1},
        {"layout": "dsd100", "entries": [{"id": 1, "colour": "red"}]},
    ],
)
def test_bad_arguments_raise_stemforge_error(tmp_path, kwargs):
    args = {"layout": "dsd100", "songs": 1, "seconds": 1.0, "seed": 0} | kwargs
    with pytest.raises(StemforgeError):
        write_corpus(tmp_path, **args)


def test_unknown_layout_message_lists_layouts(tmp_path):
    with pytest.raises(StemforgeError, match="ccmixter"):
        write_corpus(tmp_path, "nope", 1, 1.0, 0)


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from stemforge.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(tmp_path / "c"), "--layout", "ccmixter", "--songs", "2", "--seconds", "1", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "2 songs" in res.output and "ccmixter" in res.output
    assert len(list((tmp_path / "c").glob("*/mix.wav"))) == 2
    res = runner.invoke(app, ["synth", str(tmp_path / "x"), "--layout", "nope"])
    assert res.exit_code == 2 and "dsd100" in res.output  # a usage error, before anything is written
    res = runner.invoke(app, ["synth", str(tmp_path / "x"), "--songs", "0"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["synth", str(tmp_path / "x"), "--seconds", "0"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["synth", "--help"])
    assert "Example: stemforge synth" in res.output
