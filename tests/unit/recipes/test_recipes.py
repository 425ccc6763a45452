"""Every recipe: one contract test over synthetic corpora in each real layout, then the rules
of each corpus (MedleyDB labels on the 330 real metadata files, MUSDB18 validation list, the
CSV manifest's derived stems and bad rows)."""

from __future__ import annotations

import csv
import inspect
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from stemforge.core import audio
from stemforge.cli.main import app
from stemforge.core.errors import DatasetLayoutError
from stemforge.ingest.reconcile import reconcile_datadir
from stemforge.ingest.engine import ingest
from stemforge.recipes import RECIPES, get_recipe
from stemforge.store import DataDir
from stemforge.store.check import validate

from conftest import ROOT

SECONDS = 3.0
MUSDB_SECONDS = 2.0
PAIRS_SECONDS = 5.0
REFERENCE = Path(os.environ.get("STEMFORGE_REFERENCE", ROOT.parent / "shared" / "reference"))


def _csv_corpus(out: Path) -> Path:
    """A CSV over a synthetic MUSDB18-HQ tree: rows giving mixture+vocals, vocals+accompaniment,
    mixture+accompaniment and all three."""
    from stemforge.synth.layouts import write_corpus

    recs = write_corpus(out / "audio", "musdb-hq", songs=4, seconds=SECONDS, seed=4)
    for r in recs:  # an accompaniment file per song (drums + bass + other)
        folder = r["paths"]["vocals"].parent
        acc = sum(audio.load(folder / f"{s}.wav")[0] for s in ("drums", "bass", "other"))
        audio.write(folder / "accompaniment.wav", acc, 44100, "FLOAT")
    roles = [("mixture", "vocals"), ("vocals", "accompaniment"), ("mixture", "accompaniment"), ("mixture", "vocals", "accompaniment")]
    with open(out / "list.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mixture", "vocals", "accompaniment", "artist", "title", "split"])
        w.writeheader()
        for r, given in zip(recs, roles):
            folder = r["paths"]["vocals"].parent.relative_to(out)
            row = {k: str(folder / f"{k}.wav") for k in given}
            w.writerow({**row, "artist": r["artist"], "title": r["title"], "split": "test" if r["index"] == 0 else ""})
    return out / "list.csv"


#: recipe -> (how to write a small synthetic corpus in its layout, the discover root, options)
def _write(name: str, out: Path) -> tuple[Path, dict]:
    from stemforge.synth.layouts import write_corpus

    if name == "dsd100":
        write_corpus(out, "dsd100", songs=4, seconds=SECONDS, seed=1)
    elif name == "medleydb":
        write_corpus(out, "medleydb", songs=3, seconds=SECONDS, seed=2)
    elif name == "ikala":
        write_corpus(out, "ikala", songs=4, seconds=SECONDS, seed=3)
    elif name == "mir1k":
        write_corpus(out, "mir1k", songs=3, seconds=SECONDS * 2, seed=5, singers=3, clip_seconds=SECONDS)
    elif name == "ccmixter":
        write_corpus(out, "ccmixter", songs=3, seconds=SECONDS, seed=6)
    elif name == "musdb":  # AAC encoding is the slow part of the synthetic corpus: shorter songs
        write_corpus(out, "musdb", songs=3, seconds=MUSDB_SECONDS, seed=7)
    elif name == "musdb-hq":
        write_corpus(out, "musdb-hq", songs=3, seconds=SECONDS, seed=8)
    elif name == "csv":
        return _csv_corpus(out), {}
    elif name == "pairs":  # two songs: with three or more, synth makes one pair wrong on purpose
        write_corpus(out, "pairs", songs=2, seconds=PAIRS_SECONDS, seed=9)  # alignment needs >= 2 s of karaoke
    else:  # a recipe without a corpus here fails the contract test on purpose
        raise AssertionError(f"no synthetic corpus for recipe {name!r}: add one to tests/unit/recipes/test_recipes.py")
    return out, {}


CASES = sorted(RECIPES) + ["musdb-hq"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    made: dict[str, tuple[Path, dict]] = {}

    def get(name: str) -> tuple[Path, dict]:
        if name not in made:
            made[name] = _write(name, tmp_path_factory.mktemp(name))
        return made[name]

    return get


@pytest.mark.parametrize("case", CASES)
def test_contract_every_recipe_ingests_its_layout(case, corpora, tmp_path):
    name = "musdb" if case == "musdb-hq" else case
    recipe = get_recipe(name)
    # the same surface everywhere
    assert recipe.NAME == name
    assert "Layout" in (recipe.__doc__ or "") and recipe.LAYOUT == recipe.__doc__
    assert list(inspect.signature(recipe.discover).parameters)[0] == "root"

    root, options = corpora(case)
    sources = recipe.discover(root, **options)
    assert sources and all(s.dataset == name or name == "csv" for s in sources)
    assert len({s.uid for s in sources}) == len(sources)
    assert all(s.split in ("train", "valid", "test") for s in sources)
    assert not [s for s in sources if s.error or s.skip_reason]

    dd = DataDir.create(tmp_path / "d")
    report = ingest(dd, sources, workers=1, post_commit=reconcile_datadir)
    assert report.ok, report.failed
    df = dd.reload()
    assert len(df) == len(sources) == len(report.ingested)
    expected_split = {s.uid: s.split for s in sources}
    assert dict(zip(df["uid"], df["split"])) == expected_split  # one corpus: nothing to propagate
    assert df["duplicate_of"].isna().all()
    reader = dd.reader()
    for row in df.itertuples():
        frames = reader.read_frames(row.shard, row.key)
        for field in ("mixture", "vocals", "accompaniment"):
            assert frames[field].shape == (int(row.n_frames), 513)
        if case == "pairs":  # cut to the part of the original the karaoke covers
            assert 2.0 <= float(row.duration_s) <= PAIRS_SECONDS + 0.05
        else:
            assert abs(float(row.duration_s) - (MUSDB_SECONDS if case == "musdb" else SECONDS)) < 0.05
        assert 0.05 < float(row.vocal_activity) <= 1.0
    result = validate(dd)
    assert result.ok, result.problems


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_wrong_folder_names_the_expected_layout(name, tmp_path):
    recipe = get_recipe(name)
    wrong = tmp_path / "wrong"
    (wrong / "somewhere").mkdir(parents=True)
    (wrong / "notes.txt").write_text("not a corpus\n")
    with pytest.raises(DatasetLayoutError) as info:
        recipe.discover(wrong)
    msg = str(info.value)
    assert "expected" in msg and ("found" in msg or "folder" in msg), msg
    if name != "csv":
        assert "notes.txt" in msg or "somewhere" in msg, msg  # says what it found
    with pytest.raises(DatasetLayoutError):
        recipe.discover(tmp_path / "does-not-exist")


def test_cli_wrong_folder_exits_3(tmp_path):
    (tmp_path / "x").mkdir()
    result = CliRunner().invoke(app, ["ingest", "ikala", str(tmp_path / "x"), "--out", str(tmp_path / "d")])
    assert result.exit_code == 3 and "not an iKala root" in result.output


# -- channel corpora: which channel is the voice ------------------------------------------
@pytest.mark.parametrize("name", ["ikala", "mir1k"])
def test_channel_corpora_take_the_voice_from_the_right_channel(name, corpora, tmp_path):
    root, _ = corpora(name)
    src = get_recipe(name).discover(root)[0]
    dd = DataDir.create(tmp_path / "d")
    ingest(dd, [src], workers=1)
    row = dd.reload().iloc[0]
    stored = dd.reader().read_wave(row["shard"], row["key"], "vocals", 0, None)
    data, sr = audio.load(Path(root) / src.source_path)
    right = audio.resample(data[1], sr, 16000)[: stored.size]
    left = audio.resample(data[0], sr, 16000)[: stored.size]
    assert np.corrcoef(stored, right)[0, 1] > 0.999
    assert abs(np.corrcoef(stored, left)[0, 1]) < 0.5
    assert int(row["source_channels"]) == 2 and row["vocals_kind"] == "channel"


def test_ikala_song_level_split_keeps_chorus_and_verse_together():
    from stemforge.recipes import ikala
    from stemforge.recipes.reference import reference_manifest

    clips = list(reference_manifest("ikala_tracks")["clip_id"])
    splits = ikala.song_splits(clips, 0.1, 0.15)
    assert set(splits.values()) == {"train", "valid", "test"}
    n = {s: sum(1 for c in clips if splits[ikala.song_id(c)] == s) for s in ("train", "valid", "test")}
    assert abs(n["test"] / len(clips) - 0.15) < 0.03 and abs(n["valid"] / len(clips) - 0.1) < 0.03
    assert ikala.song_splits(clips[:20], 0.1, 0.15) == splits  # a partial copy: the same splits


def test_mir1k_split_is_by_singer_and_songs_unit(corpora):
    from stemforge.recipes import mir1k

    root, _ = corpora("mir1k")
    clips = mir1k.discover(root)
    by_singer: dict[str, set] = {}
    for s in clips:
        by_singer.setdefault(s.artist, set()).add(s.split)
    assert all(len(v) == 1 for v in by_singer.values())
    songs = mir1k.discover(root, unit="songs")
    assert {s.track_id for s in songs} == {"abjones_1", "amy_1", "annar_1"}
    assert all("UndividedWavfile" in s.source_path for s in songs)
    huang = mir1k.discover(root, split_rule="huang2014")
    assert {s.artist: s.split for s in huang} == {"abjones": "train", "amy": "train", "annar": "test"}


def test_ccmixter_mono_song_and_missing_source(corpora, tmp_path):
    from stemforge.recipes import ccmixter

    root = tmp_path / "c"
    shutil.copytree(corpora("ccmixter")[0], root)
    songs = sorted(p for p in root.iterdir() if p.is_dir())
    (songs[0] / "source-02.wav").unlink()
    sources = ccmixter.discover(root)
    assert "source-02.wav" in sources[0].error
    dd = DataDir.create(tmp_path / "d")
    report = ingest(dd, sources, workers=1)
    assert len(report.failed) == 1 and "source-02.wav" in report.failed[0][1]
    channels = set(dd.reload()["source_channels"])
    assert channels == {1, 2}  # the synthetic corpus has a mono song (index 2)


# -- MUSDB18 ------------------------------------------------------------------------------
def test_musdb_validation_list_and_formats(tmp_path):
    from stemforge.recipes import musdb
    from stemforge.synth.layouts import write_corpus

    entries = [
        {"subset": "train", "artist": "Actions", "title": "One Minute Smile"},  # official valid
        {"subset": "train", "artist": "Actions", "title": "Devil's Words"},
        {"subset": "test", "artist": "AM Contra", "title": "Heart Peripheral"},
    ]
    write_corpus(tmp_path / "hq", "musdb-hq", songs=3, seconds=1.0, seed=1, entries=entries)
    splits = {s.track_id: s.split for s in musdb.discover(tmp_path / "hq")}
    assert splits == {
        "Actions - One Minute Smile": "valid",
        "Actions - Devil's Words": "train",
        "AM Contra - Heart Peripheral": "test",
    }
    from stemforge.recipes.reference import reference_manifest

    ref = reference_manifest("musdb18_tracks")
    assert (ref["split"] == "valid").sum() == 14 and (ref["split"] == "test").sum() == 50
    # stems: five streams in MUSDB18 order, a tolerance for AAC padding
    write_corpus(tmp_path / "st", "musdb", songs=1, seconds=1.0, seed=1)
    (src,) = musdb.discover(tmp_path / "st")
    assert [r.stream for r in src.mixture] == [0] and [r.stream for r in src.vocals] == [4]
    assert sorted(r.stream for r in src.accompaniment) == [1, 2, 3]
    assert src.length_tolerance >= 1024
    # a root holding both: HQ first (lossless), unless asked
    for p in (tmp_path / "st" / "train").glob("*.stem.mp4"):
        shutil.copy(p, tmp_path / "hq" / "train" / p.name)
    assert {dict(s.extra)["musdb_format"] for s in musdb.discover(tmp_path / "hq")} == {"hq"}
    assert {dict(s.extra)["musdb_format"] for s in musdb.discover(tmp_path / "hq", fmt="stems")} == {"stems"}


def test_stem_mp4_one_pass_loader_equals_the_general_loader(corpora):
    import dataclasses

    from stemforge.core.config import SpectrogramConfig
    from stemforge.recipes import musdb
    from stemforge.recipes.loading import load_stems

    root, _ = corpora("musdb")
    src = musdb.discover(root)[0]
    assert src.loader == musdb.STEM_LOADER
    config = SpectrogramConfig()
    fast = musdb.load_stem_mp4(src, config)
    general = load_stems(dataclasses.replace(src, loader="stems"), config)
    for role in ("vocals", "accompaniment", "mixture"):
        np.testing.assert_array_equal(getattr(fast, role), getattr(general, role))
    assert (fast.source_sample_rate, fast.source_channels) == (general.source_sample_rate, general.source_channels)
    with pytest.raises(Exception, match="stream 7 requested"):
        audio.load_streams_mono(Path(root) / src.source_path, {0, 7})


def test_musdb_hq_folder_missing_a_stem_is_an_error(tmp_path):
    from stemforge.recipes import musdb
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "hq", "musdb-hq", songs=2, seconds=1.0, seed=1)
    victim = sorted((tmp_path / "hq").glob("*/*/bass.wav"))[0]
    victim.unlink()
    errors = [s.error for s in musdb.discover(tmp_path / "hq") if s.error]
    assert len(errors) == 1 and "bass.wav" in errors[0]


# -- CSV ----------------------------------------------------------------------------------
def test_csv_derives_the_missing_role(corpora, tmp_path):
    from stemforge.recipes import csv as csv_recipe

    listing, _ = corpora("csv")
    sources = csv_recipe.discover(listing)
    assert [dict(s.extra)["derived_role"] for s in sources] == ["accompaniment", "mixture", "vocals", "none"]
    assert sources[0].split == "test"  # explicit split kept
    assert [s.vocals_kind for s in sources] == ["stem", "stem", "derived", "stem"]
    dd = DataDir.create(tmp_path / "d")
    assert ingest(dd, sources, workers=1).ok
    df = dd.reload().set_index("uid")
    reader = dd.reader()
    for s in sources:
        row = df.loc[s.uid]
        folder = listing.parent / Path(s.source_path).parent
        acc_true = audio.resample(audio.to_mono(audio.load(folder / "accompaniment.wav")[0]), 44100, 16000)
        voc_true = audio.resample(audio.to_mono(audio.load(folder / "vocals.wav")[0]), 44100, 16000)
        acc = reader.read_wave(row["shard"], row["key"], "accompaniment", 0, None)
        voc = reader.read_wave(row["shard"], row["key"], "vocals", 0, None)
        np.testing.assert_allclose(acc, acc_true[: acc.size], atol=2e-4)
        np.testing.assert_allclose(voc, voc_true[: voc.size], atol=2e-4)
    assert float(df.loc[sources[3].uid, "mix_residual_db"]) < -60  # all three given: the file is checked


def test_csv_bad_rows_are_reported_not_fatal(corpora, tmp_path):
    listing, _ = corpora("csv")
    rows = list(csv.DictReader(open(listing)))
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["mixture", "vocals", "accompaniment", "artist", "title", "split"])
        w.writeheader()
        fix = lambda p: str(listing.parent / p) if p else ""  # noqa: E731  (absolute paths are accepted)
        good = {k: fix(v) if k in ("mixture", "vocals", "accompaniment") else v for k, v in rows[1].items()}
        w.writerow(good)
        w.writerow({**good, "vocals": "", "accompaniment": "", "title": "only one role"})
        w.writerow({**good, "vocals": "nowhere/vocals.wav", "title": "missing file"})
        w.writerow({**good, "split": "holdout", "title": "bad split"})
    result = CliRunner().invoke(app, ["ingest", "csv", str(bad), "--out", str(tmp_path / "d"), "--workers", "1", "--name", "mine"])
    assert result.exit_code == 1, result.output
    assert "needs two of mixture, vocals, accompaniment" in result.output
    assert "nowhere/vocals.wav: file not found" in result.output
    assert "'holdout' is not one of train, valid, test" in result.output
    df = DataDir.open(tmp_path / "d").manifest
    assert len(df) == 1 and df["uid"].iloc[0].startswith("mine:")


def test_csv_header_without_roles_is_a_layout_error(tmp_path):
    from stemforge.recipes import csv as csv_recipe

    p = tmp_path / "x.csv"
    p.write_text("path,label\na.wav,b\n")
    with pytest.raises(DatasetLayoutError, match="at least two of mixture,vocals,accompaniment"):
        csv_recipe.discover(p)


# -- MedleyDB -----------------------------------------------------------------------------
def _reference_dir() -> Path:
    if not (REFERENCE / "medleydb-metadata").is_dir():
        pytest.skip(f"MedleyDB reference metadata not found at {REFERENCE} (set STEMFORGE_REFERENCE)")
    return REFERENCE


@pytest.fixture(scope="module")
def medleydb_tree(tmp_path_factory) -> Path:
    """Audio/<id>/ for all 330 real metadata files, with every stem and MIX as a tiny file:
    discover() only looks at the folder, it never decodes."""
    ref = _reference_dir()
    root = tmp_path_factory.mktemp("medleydb330")
    for meta in sorted((ref / "medleydb-metadata").glob("*_METADATA.yaml")):
        tid = meta.name[: -len("_METADATA.yaml")]
        m = yaml.load(meta.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        d = root / "Audio" / tid
        (d / m["stem_dir"]).mkdir(parents=True)
        shutil.copyfile(meta, d / meta.name)
        (d / m["mix_filename"]).write_bytes(b"RIFF")
        for s in m["stems"].values():
            (d / m["stem_dir"] / s["filename"]).write_bytes(b"RIFF")
    return root


SINGING = {"male singer", "female singer", "vocalists", "choir", "male rapper", "female rapper"}


def _expected_medleydb(voices: str, exclude_bleed: bool) -> dict[str, tuple[str, list[str]]]:
    """From the reference track list alone: track id -> (rule outcome, vocal stem ids)."""
    ref = _reference_dir()
    family = set(yaml.safe_load((ref / "medleydb_taxonomy.yaml").read_text())["voices"])
    selected = SINGING if voices == "singing" else family
    out = {}
    with open(ref / "medleydb_tracks.csv", newline="") as f:
        for r in csv.DictReader(f):
            stems = {}
            for part in filter(None, (p.strip() for p in r["voice_stems"].split(";"))):
                sid, _, labels = part.partition(":")
                stems[sid] = set(labels.split("+"))
            mixed = [s for s, lab in stems.items() if lab & selected and lab - family]
            vocal = sorted(s for s, lab in stems.items() if lab & selected and not lab - family)
            if mixed:
                outcome = "mixed-label voice stem"
            elif not vocal:
                outcome = "instrumental"
            elif len(vocal) == int(r["n_stems"]):
                outcome = "a cappella"
            elif exclude_bleed and r["has_bleed"] == "yes":
                outcome = "bleed"
            else:
                outcome = "ingest"
            out[r["track_id"]] = (outcome, vocal, r["dataset_version"])
    return out


@pytest.mark.parametrize("voices,exclude_bleed,mixture", [("singing", False, "derived"), ("all", True, "file")])
def test_medleydb_rules_on_all_330_real_metadata_files(medleydb_tree, voices, exclude_bleed, mixture):
    from stemforge.recipes import medleydb

    sources = medleydb.discover(medleydb_tree, voices=voices, exclude_bleed=exclude_bleed, mixture=mixture)
    expected = _expected_medleydb(voices, exclude_bleed)
    assert len(sources) == 330 == len(expected)
    for s in sources:
        outcome, vocal, version = expected[s.track_id]
        got = "ingest" if s.skip_reason is None else s.skip_reason.split(":")[0]
        assert got == outcome, (s.track_id, s.skip_reason)
        assert s.error is None, s.error
        assert dict(s.extra)["medleydb_version"] == version
        if outcome == "ingest":
            assert dict(s.extra)["vocal_stems"].split(";") == vocal, s.track_id
            # every stem is used once: vocals + accompaniment = all stems
            files = [r.path for r in s.vocals + s.accompaniment]
            assert len(files) == len(set(files)) == len(list((medleydb_tree / "Audio" / s.track_id).glob("*_STEMS/*")))
            assert all(r.gain > 0 for r in s.vocals + s.accompaniment)
            if mixture == "file":  # every ingestible track has coefficients
                assert s.mixture and s.mixture[0].path.endswith("_MIX.wav")
            else:
                assert not s.mixture and dict(s.extra)["mix_source"] == "derived"
    ingest_by_version = {}
    for s in sources:
        if s.skip_reason is None:
            ingest_by_version[dict(s.extra)["medleydb_version"]] = ingest_by_version.get(dict(s.extra)["medleydb_version"], 0) + 1
    if voices == "singing" and not exclude_bleed:
        # the real metadata: V1 has 64 tracks with a voice stem, one of them a cappella
        # (LizNelson_ImComingHome, four female singers); V2 has 24; EXTRA 118 of which 12
        # carry a singing label next to an instrument label; BACH10 none
        reasons = [s.skip_reason.split(":")[0] for s in sources if s.skip_reason]
        assert ingest_by_version == {"V1": 63, "V2": 24, "EXTRA": 106}
        assert reasons.count("mixed-label voice stem") == 12 and reasons.count("a cappella") == 1
        assert reasons.count("instrumental") == 58 + 50 + 6 + 10
        flag_wrong = {s.track_id for s in sources if s.skip_reason is None and expected[s.track_id][2] in ("V1", "V2")}
        # decided by labels, not by the instrumental flag (wrong on these two)
        assert {"MatthewEntwistle_AnEveningWithOliver", "QuantumChromos_Circuits"} <= flag_wrong
        aero = next(s for s in sources if s.track_id == "Aerosmith_LoveInAnElevator")
        assert aero.skip_reason is None and dict(aero.extra)["vocal_stems"] == "S05"  # speaker+instruments stem -> accompaniment
    else:
        aero = next(s for s in sources if s.track_id == "Aerosmith_LoveInAnElevator")
        assert aero.skip_reason.startswith("mixed-label voice stem: S04")
        assert any(s.skip_reason and s.skip_reason.startswith("bleed") for s in sources)


def test_medleydb_versions_and_artist_conditional_split(medleydb_tree):
    from stemforge.recipes import medleydb
    from stemforge.recipes.reference import reference_manifest

    v1 = medleydb.discover(medleydb_tree, versions="V1")
    assert len(v1) == 122 and {dict(s.extra)["medleydb_version"] for s in v1} == {"V1"}
    assert len(medleydb.discover(medleydb_tree, versions="V2,BACH10")) == 84
    with pytest.raises(Exception, match="unknown MedleyDB version"):
        medleydb.discover(medleydb_tree, versions="V9")
    everything = medleydb.discover(medleydb_tree)
    # one artist never on both sides; deterministic; a partial copy gets the same splits
    by_artist: dict[str, set] = {}
    for s in everything:
        by_artist.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in by_artist.values())
    assert {s.track_id: s.split for s in v1} == {s.track_id: s.split for s in everything if s.track_id in {t.track_id for t in v1}}
    usable = [s for s in everything if s.skip_reason is None]
    frac = {k: sum(s.split == k for s in usable) / len(usable) for k in ("valid", "test")}
    assert 0.05 < frac["valid"] < 0.2 and 0.1 < frac["test"] < 0.22, frac
    # artists of MUSDB18's validation tracks are valid here too
    ref = reference_manifest("medleydb_tracks")
    valid_ids = set(ref.loc[ref["musdb18_split"] == "valid", "track_id"])
    assert len(valid_ids) == 3 and all(s.split == "valid" for s in everything if s.track_id in valid_ids)


def test_medleydb_ingest_sums_the_labelled_stems_with_their_coefficients(tmp_path):
    """Synthetic audio under real metadata: the stored vocals are the weighted vocal stems."""
    from stemforge.recipes import medleydb
    from stemforge.synth.layouts import write_corpus

    ref = _reference_dir()
    ids = ["AClassicEducation_NightOwl", "MatthewEntwistle_AnEveningWithOliver", "Plasma_GoodShout", "ChrisBrown_Yeah"]
    write_corpus(tmp_path / "m", "medleydb", songs=0, seconds=1.0, seed=3, metadata_dir=ref / "medleydb-metadata", track_ids=ids)
    sources = medleydb.discover(tmp_path / "m", mixture="file")
    reasons = {s.track_id: (s.skip_reason or "").split(":")[0] for s in sources}
    assert reasons == {
        "AClassicEducation_NightOwl": "",
        "MatthewEntwistle_AnEveningWithOliver": "",  # flag says instrumental; a vocalists stem says otherwise
        "Plasma_GoodShout": "instrumental",  # flag says vocal; no stem is labelled as a voice
        "ChrisBrown_Yeah": "mixed-label voice stem",
    }
    dd = DataDir.create(tmp_path / "d")
    report = ingest(dd, sources, workers=1)
    assert report.ok and len(report.ingested) == 2 and len(report.excluded) == 2
    coeffs = yaml.safe_load((tmp_path / "m" / "mixing_coefficients.yaml").read_text())
    df = dd.reload().set_index("track_id")
    for tid in ("AClassicEducation_NightOwl", "MatthewEntwistle_AnEveningWithOliver"):
        row = df.loc[tid]
        assert float(row["mix_residual_db"]) < -60  # weighted stems sum to the MIX
        meta = yaml.safe_load((tmp_path / "m" / "Audio" / tid / f"{tid}_METADATA.yaml").read_text())
        expect = 0
        for sid in row["vocal_stems"].split(";"):
            y, sr = audio.load(tmp_path / "m" / "Audio" / tid / meta["stem_dir"] / meta["stems"][sid]["filename"])
            expect = expect + coeffs[tid]["manual"][int(sid[1:])] * audio.to_mono(y)
        expect = audio.resample(np.asarray(expect, np.float32), sr, 16000)
        got = dd.reader().read_wave(row["shard"], row["key"], "vocals", 0, None)
        np.testing.assert_allclose(got, expect[: got.size], atol=1e-4)
    # default: the mixture is derived (vocals + accompaniment); the targets are the same
    derived = DataDir.create(tmp_path / "d2")
    assert ingest(derived, medleydb.discover(tmp_path / "m"), workers=1).ok
    row2 = derived.reload().set_index("track_id").loc["AClassicEducation_NightOwl"]
    row1 = df.loc["AClassicEducation_NightOwl"]
    assert row2["mix_source"] == "derived" and row1["mix_source"] == "file" and pd.isna(row2["mix_residual_db"])
    a = dd.reader().read_frames(row1["shard"], row1["key"])
    b = derived.reader().read_frames(row2["shard"], row2["key"])
    np.testing.assert_allclose(a["mixture"].astype(np.float32), b["mixture"].astype(np.float32), atol=2e-3)


def test_medleydb_stem_missing_is_an_error(tmp_path):
    from stemforge.recipes import medleydb
    from stemforge.synth.layouts import write_corpus

    write_corpus(tmp_path / "m", "medleydb", songs=2, seconds=1.0, seed=3)
    victim = sorted((tmp_path / "m" / "Audio").glob("*/*_STEMS/*_STEM_01.wav"))[0]
    victim.unlink()
    errors = [s.error for s in medleydb.discover(tmp_path / "m") if s.error]
    assert len(errors) == 1 and "missing stem (S01)" in errors[0]


def test_cli_ingest_medleydb_lists_exclusions_by_rule(tmp_path):
    from stemforge.synth.layouts import write_corpus

    ref = _reference_dir()
    ids = ["AClassicEducation_NightOwl", "AimeeNorwich_Flying", "ChrisBrown_Yeah"]
    write_corpus(tmp_path / "m", "medleydb", songs=0, seconds=1.0, seed=3, metadata_dir=ref / "medleydb-metadata", track_ids=ids)
    result = CliRunner().invoke(
        app, ["ingest", "medleydb", str(tmp_path / "m"), "--out", str(tmp_path / "d"), "--workers", "1", "--voices", "all"]
    )
    assert result.exit_code == 0, result.output
    assert "excluded by rule: " in result.output
    assert "instrumental 1" in result.output and "mixed-label voice stem 1" in result.output
    assert "medleydb:AimeeNorwich_Flying: instrumental" in result.output
