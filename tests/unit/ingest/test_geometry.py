"""Geometries (issue 12): presets, stereo DataDirs, the seed geometry bit for bit, augment and info.

The seed geometry's stored arrays are compared with a record of what the code before other
geometries existed stored for the same synthetic corpus (tests/data/geometry/seed_golden.json,
written by :func:`_record` running commit 2ee4a12 with the core/dsp.py of b9edc4b, whose numpy FFT
is what stemforge 0.1.0 stored with; tests/unit/ingest/test_seed_geometry_frozen.py pins 0.1.0's
arrays themselves); the paper and fullband presets are compared with an independent librosa
reference. The augment command on a stereo DataDir: tests/integration/test_geometry_commands.py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core.config import PRESETS, SpectrogramConfig, patch_frames
from stemforge.core.errors import ConfigMismatchError, StemforgeError
from stemforge.ingest.engine import ingest
from stemforge.recipes import dsd100
from stemforge.store import DataDir
from stemforge.store.check import geometry_bytes_per_hour, summary, validate
from stemforge.store.crops import CropReader, TrackList
from stemforge.store.shards import ARRAY_NAMES, MAG_FIELDS, checksum, chunk_frames

from conftest import TEST_DATA

GOLDEN = TEST_DATA / "geometry" / "seed_golden.json"
#: The corpus the golden record was made from.
GOLDEN_CORPUS = {"songs": 3, "seconds": 5.0, "seed": 11}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("geometry") / "dsd100"
    write_corpus(root, "dsd100", **GOLDEN_CORPUS)
    return root


@pytest.fixture(scope="module")
def stored(corpus, tmp_path_factory) -> dict[str, DataDir]:
    """The corpus ingested at the paper and fullband presets (one worker)."""
    out = {}
    for name in ("paper", "fullband"):
        dd = DataDir.create(tmp_path_factory.mktemp(name) / "data", SpectrogramConfig.preset(name))
        report = ingest(dd, dsd100.discover(corpus), workers=1)
        assert report.ok and len(report.ingested) == GOLDEN_CORPUS["songs"], report.failed
        out[name] = dd
    return out


def _record(dd: DataDir) -> dict:
    """What a DataDir stores, as the golden file holds it: per track every array's shape,
    dtype, chunks and CRC-32, the group attributes and the manifest figures."""
    out: dict = {"config_hash": dd.config.hash, "tracks": {}}
    for row in dd.reload().sort_values("uid").itertuples():
        with h5py.File(dd.path / row.shard, "r") as f:
            out["shard_config"] = f.attrs["config"]
            g = f["tracks"][row.key]
            t: dict = {
                "attrs": {k: (float(v) if k == "norm" else int(v)) for k, v in g.attrs.items() if k in ("norm", "n_frames", "n_samples", "sample_rate")}
            }
            for name in ARRAY_NAMES:
                ds = g[name]
                assert checksum(ds[()]) == int(ds.attrs["crc32"])
                t[name] = {
                    "shape": list(ds.shape),
                    "dtype": str(ds.dtype),
                    "crc32": int(ds.attrs["crc32"]),
                    "chunks": list(ds.chunks) if ds.chunks else None,
                }
            t["manifest"] = {c: float(getattr(row, c)) for c in ("n_frames", "norm", "vocal_activity", "duration_s", "mix_residual_db")}
        out["tracks"][row.uid] = t
    return out


# -- presets and validation ------------------------------------------------------------------


def test_presets_are_the_issues_geometries_and_seed_keeps_its_hash():
    seed, paper, full = (PRESETS[n].spectrogram for n in ("seed", "paper", "fullband"))
    assert seed == SpectrogramConfig() and seed.hash == "937ca236a043"
    assert (paper.sample_rate, paper.n_fft, paper.hop_length, paper.channels) == (8192, 1024, 768, 1)
    assert (full.sample_rate, full.n_fft, full.hop_length, full.channels, full.n_bins) == (44100, 4096, 1024, 2, 2049)
    assert len({seed.hash, paper.hash, full.hash}) == 3
    assert SpectrogramConfig.preset("fullband", channels=1).channels == 1
    assert SpectrogramConfig.preset("fullband").preset_name == "fullband"
    assert SpectrogramConfig.preset("seed", hop_length=256).preset_name is None
    # a training crop touches at most two chunks: chunks are one crop long
    assert [chunk_frames(c) for c in (seed, paper, full)] == [128, 128, 512]
    assert patch_frames(SpectrogramConfig(sample_rate=22050, n_fft=2048, hop_length=512)) == 128


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"hop_length": 2048}, "hop_length 2048 is larger than n_fft 1024"),
        ({"channels": 3}, "channels must be 1 or 2"),
        ({"n_fft": 0}, "n_fft must be positive"),
        ({"sample_rate": 16000.5}, "sample_rate must be an integer"),
    ],
)
def test_the_library_refuses_bad_geometries(kwargs, words):
    with pytest.raises(StemforgeError, match=words):
        SpectrogramConfig(**kwargs)


def test_unknown_preset_names_the_presets():
    with pytest.raises(StemforgeError, match="unknown geometry preset 'cd'; presets: seed, paper, fullband"):
        SpectrogramConfig.preset("cd")


@pytest.mark.parametrize(
    "options, option",
    [(["--preset", "cd"], "--preset"), (["--hop-length", "2048"], "--hop-length"), (["--channels", "3"], "--channels")],
)
def test_bad_geometry_options_are_one_line_usage_errors(tmp_path, monkeypatch, corpus, options, option):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["ingest", "dsd100", str(corpus), "--out", "data", *options])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}: "), r.output
    assert not any(tmp_path.iterdir()), "a usage error wrote something"


# -- the seed geometry, bit for bit ------------------------------------------------------------


def test_seed_geometry_stores_what_the_code_before_presets_stored(corpus, tmp_path, monkeypatch):
    """Same config hash, same arrays (CRC-32 of every array's bytes), shapes, chunks, attributes
    and manifest figures as commit 2ee4a12 stored, through ``stemforge ingest --preset seed``."""
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["ingest", "dsd100", str(corpus), "--out", "data", "--preset", "seed", "-j", "1"])
    assert r.exit_code == 0, r.output
    got = _record(DataDir.open(tmp_path / "data"))
    want = json.loads(GOLDEN.read_text())
    assert got["config_hash"] == want["config_hash"] == "937ca236a043"
    assert got["shard_config"] == want["shard_config"]
    assert sorted(got["tracks"]) == sorted(want["tracks"])
    for uid, t in want["tracks"].items():
        g = got["tracks"][uid]
        for name in ARRAY_NAMES:
            assert g[name] == t[name], (uid, name)
        assert g["attrs"] == t["attrs"], uid
        for col, v in t["manifest"].items():
            assert g["manifest"][col] == pytest.approx(v, rel=1e-6, abs=1e-3 if col == "mix_residual_db" else 1e-9), (uid, col)
    # and a later ingest without geometry options keeps the DataDir's geometry (nothing redone)
    r = CliRunner().invoke(app, ["ingest", "dsd100", str(corpus), "--out", "data", "-j", "1"])
    assert r.exit_code == 0 and "unchanged 3" in r.output, r.output


# -- paper and fullband against librosa ----------------------------------------------------------


def _librosa_magnitudes(corpus: Path, source, config: SpectrogramConfig) -> dict[str, np.ndarray]:
    """The independent reference: librosa.load (soxr_hq, mono as asked), librosa.stft, abs,
    time-major, divided by the mixture's maximum over all channels."""
    import librosa

    def load(ref) -> np.ndarray:
        y, _ = librosa.load(corpus / ref.path, sr=config.sample_rate, mono=config.channels == 1, res_type="soxr_hq")
        return y

    def mag(y: np.ndarray) -> np.ndarray:
        s = np.abs(librosa.stft(y, n_fft=config.n_fft, hop_length=config.hop_length))  # [channels?, n_bins, n_frames]
        return np.moveaxis(s, -1, 0) if s.ndim == 2 else np.ascontiguousarray(s.transpose(2, 0, 1))

    waves = {
        "mixture": load(source.mixture[0]),
        "vocals": sum(load(r) for r in source.vocals),
        "accompaniment": sum(load(r) for r in source.accompaniment),
    }
    mags = {k: mag(v) for k, v in waves.items()}
    norm = mags["mixture"].max()
    return {k: v / norm for k, v in mags.items()} | {"wave_vocals": waves["vocals"], "norm": norm}


@pytest.mark.parametrize("preset", ["paper", "fullband"])
def test_stored_magnitudes_equal_librosa_within_float16_rounding(corpus, stored, preset):
    import soundfile as sf

    dd = stored[preset]
    cfg = dd.config
    sources = {s.uid: s for s in dsd100.discover(corpus)}
    info = sf.info(str(corpus / next(iter(sources.values())).mixture[0].path))
    assert (info.samplerate, info.channels) == (44100, 2)  # the synthetic DSD100 is 44.1 kHz stereo
    reader = dd.reader()
    for row in dd.manifest.itertuples():
        ref = _librosa_magnitudes(corpus, sources[row.uid], cfg)
        got = reader.read_frames(row.shard, row.key)
        for name in MAG_FIELDS:
            a, b = got[name].astype(np.float32), ref[name].astype(np.float32)
            expected_shape = (row.n_frames, cfg.n_bins) if cfg.channels == 1 else (row.n_frames, 2, cfg.n_bins)
            assert got[name].dtype == np.float16 and a.shape == b.shape == expected_shape, (name, a.shape, b.shape)
            ulp = np.spacing(np.abs(b).astype(np.float16)).astype(np.float32)
            assert (np.abs(a - b) <= ulp + 1e-6).all(), (preset, name, float(np.abs(a - b).max()))
        assert float(got["mixture"].max()) == 1.0 and row.norm == pytest.approx(float(ref["norm"]), rel=1e-5)
        wave = reader.read_wave(row.shard, row.key, "vocals")
        assert wave.shape == ref["wave_vocals"].shape  # [n] mono, [2, n] stereo
        assert np.abs(wave - ref["wave_vocals"]).max() < 1e-5
        if cfg.channels == 2:  # the two channels are really two (the test would not see a swap otherwise)
            assert np.abs(got["mixture"][:, 0].astype(np.float32) - got["mixture"][:, 1]).max() > 0.01
    reader.close()


def test_source_rate_is_not_resampled(corpus, tmp_path):
    """At the corpus's own rate (44.1 kHz) the stored waveforms are the files' samples."""
    import soundfile as sf

    dd = DataDir.create(tmp_path / "data", SpectrogramConfig.preset("fullband"))
    src = dsd100.discover(corpus)[0]
    assert ingest(dd, [src], workers=1).ok
    row = dd.reload().iloc[0]
    stored_vocals = dd.reader().read_wave(row["shard"], row["key"], "vocals")
    file_vocals, rate = sf.read(str(corpus / src.vocals[0].path), dtype="float32", always_2d=True)
    assert rate == 44100 and np.array_equal(stored_vocals, file_vocals.T)


# -- the stereo layout in the store ----------------------------------------------------------------


def test_stereo_layout_chunks_crops_energy_and_checksums(stored):
    dd = stored["fullband"]
    cfg = dd.config
    rows = dd.manifest
    reader = dd.reader()
    row = rows.iloc[0]
    g = reader.group(row["shard"], row["key"])
    n = int(row["n_frames"])
    assert g["mixture"].shape == (n, 2, 2049) and g["mixture"].chunks == (min(512, n), 2, 2049)
    assert g["wave_vocals"].shape == (int(g.attrs["n_samples"]), 2)  # time-major on disk
    assert cfg.n_frames(int(g.attrs["n_samples"])) == n
    # vocal energy: over every bin and channel of a frame
    voc = g["vocals"][()].astype(np.float32)
    np.testing.assert_allclose(g["vocal_energy"][()], (voc**2).sum(axis=(1, 2)), rtol=2e-3, atol=1e-6)
    assert 0 < row["vocal_activity"] <= 1
    # the crop reader: one contiguous read per chunk, the same frames as h5py gives
    tracks = TrackList.from_rows(rows)
    crops = CropReader(reader, tracks)
    start, length = 7, 150
    out = {name: np.empty((length, 2, 2049), np.float16) for name in MAG_FIELDS}
    crops.read_into(0, start, out)
    whole = reader.read_frames(row["shard"], row["key"])
    for name in MAG_FIELDS:
        assert np.array_equal(out[name], whole[name][start : start + length])
    assert crops.fast_reads == 3 and crops.slow_reads == 0
    assert validate(dd).ok
    crops.close()
    reader.close()


def test_damaged_stereo_array_fails_its_checksum(stored, tmp_path):
    import shutil

    dd = DataDir.open(shutil.copytree(stored["fullband"].path, tmp_path / "data"))
    row = dd.manifest.iloc[0]
    with h5py.File(dd.path / row["shard"], "r+") as f:
        ds = f["tracks"][row["key"]]["accompaniment"]
        ds[3, 1, 100] = np.float16(0.5) if ds[3, 1, 100] != np.float16(0.5) else np.float16(0.25)
    res = validate(dd)
    assert not res.ok and any("accompaniment" in p and "checksum" in p for p in res.problems), res.problems


def test_a_second_ingest_with_another_geometry_is_refused(stored, corpus, tmp_path, monkeypatch):
    dd = stored["fullband"]
    with pytest.raises(ConfigMismatchError) as info:
        DataDir.create(dd.path, SpectrogramConfig.preset("paper"))
    assert PRESETS["paper"].spectrogram.hash in str(info.value) and dd.config.hash in str(info.value)
    before = {p.name: p.stat().st_mtime_ns for p in dd.path.rglob("*") if p.is_file() and p.name != ".stemforge.lock"}
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["ingest", "dsd100", str(corpus), "--out", str(dd.path), "--preset", "seed", "-j", "1"])
    assert r.exit_code == 3 and "configuration mismatch" in r.output, r.output
    assert "937ca236a043" in r.output and dd.config.hash in r.output
    after = {p.name: p.stat().st_mtime_ns for p in dd.path.rglob("*") if p.is_file() and p.name != ".stemforge.lock"}
    assert after == before, "a refused ingest wrote something"


# -- augment and info at fullband ------------------------------------------------------------------


def test_info_shows_the_geometry_and_bytes_per_hour(stored):
    seed_layout = geometry_bytes_per_hour(SpectrogramConfig())
    full_layout = geometry_bytes_per_hour(SpectrogramConfig.preset("fullband"))
    assert seed_layout["total"] == 807_525_000 and full_layout["magnitudes"] / seed_layout["magnitudes"] == pytest.approx(11.0, rel=0.01)
    s = summary(stored["fullband"])
    assert s["preset"] == "fullband" and s["geometry_bytes_per_hour"] == full_layout
    assert s["bytes_per_hour"] == pytest.approx(full_layout["total"], rel=0.15)  # HDF5's own records aside
    r = CliRunner().invoke(app, ["info", str(stored["fullband"].path)])
    assert r.exit_code == 0, r.output
    assert "geometry: 44100 Hz stereo, n_fft 4096, hop 1024 (23.2 ms), 2049 bins (preset fullband)" in r.output
    assert "bytes per hour of audio:" in r.output and "6.35 GB by the layout" in r.output
    r = CliRunner().invoke(app, ["info", str(stored["paper"].path), "--json"])
    assert r.exit_code == 0 and '"preset": "paper"' in r.output


@pytest.mark.parametrize("layout", ["dsd100", "musdb", "musdb-hq", "medleydb", "ikala", "mir1k", "ccmixter", "pairs"])
def test_every_recipe_ingests_at_the_stereo_geometry(tmp_path, layout):
    """Every corpus (the karaoke pairs too: each channel derived with the downmix's alignment)
    gives valid stereo arrays at fullband."""
    from stemforge.recipes import get_recipe
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "c", layout, songs=2, seconds=3.0, seed=1)
    recipe = {"musdb-hq": "musdb"}.get(layout, layout)
    dd = DataDir.create(tmp_path / "data", SpectrogramConfig.preset("fullband"))
    report = ingest(dd, get_recipe(recipe).discover(tmp_path / "c"), workers=1)
    assert report.ok and len(report.ingested) == 2, report.failed
    reader = dd.reader()
    for row in dd.reload().itertuples():
        assert reader.read_frames(row.shard, row.key)["vocals"].shape == (row.n_frames, 2, 2049)
        assert reader.read_wave(row.shard, row.key, "accompaniment").shape[0] == 2
    reader.close()
    assert validate(dd).ok


def test_normalization_none_stores_the_plain_magnitudes(corpus, tmp_path):
    """A config with normalization "none" stores |STFT| as it is, with norm 1.0: stored x norm
    is the same plain magnitude as a max_mixture DataDir's stored x norm."""
    small = dict(sample_rate=8000, n_fft=256, hop_length=128)
    out = {}
    for normalization in ("max_mixture", "none"):
        dd = DataDir.create(tmp_path / normalization, SpectrogramConfig(normalization=normalization, **small))
        assert ingest(dd, dsd100.discover(corpus), workers=1).ok
        out[normalization] = dd.reload().sort_values("uid")
    scaled, plain = out["max_mixture"], out["none"]
    assert (plain["norm"] == 1.0).all() and (scaled["norm"] > 1.0).all()
    for a, b in zip(scaled.itertuples(), plain.itertuples()):
        with h5py.File(tmp_path / "max_mixture" / a.shard, "r") as fa, h5py.File(tmp_path / "none" / b.shard, "r") as fb:
            for name in MAG_FIELDS:
                x = fa["tracks"][a.key][name][()].astype(np.float32) * np.float32(a.norm)
                y = fb["tracks"][b.key][name][()].astype(np.float32)
                assert float(fa["tracks"][a.key]["mixture"][()].max()) == 1.0
                np.testing.assert_allclose(y, x, rtol=2e-3, atol=1e-6 * a.norm)
            assert float(fb["tracks"][b.key].attrs["norm"]) == 1.0
