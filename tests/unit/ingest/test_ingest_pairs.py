"""``stemforge ingest pairs``: original/karaoke pairs of the synthetic ``pairs`` layout (offsets
of about +-2 s, gains of a few dB, 44.1 kHz originals against 48 kHz karaokes cut shorter or
longer, one wrong pair) through the real CLI, in the CSV and the folder form."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stemforge.core import audio
from stemforge.cli.main import app
from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AlignmentError, DatasetLayoutError, StemforgeError
from stemforge.recipes.splits import hash_split
from stemforge.recipes.identity import song_key
from stemforge.karaoke.align import MIN_SCORE
from stemforge.recipes import get_recipe
from stemforge.recipes import karaoke as recipe
from stemforge.store import DataDir
from stemforge.store.check import validate

SECONDS = 8.0
SEED = 3  # 4 songs: offsets +-1.6..2.0 s, karaokes 4.8-9.3 s long, the pair of index 0 is wrong
ALIGN_COLUMNS = ("align_offset_s", "align_offset_samples", "align_gain_db", "align_score", "align_coverage", "align_start_s", "align_end_s")


def _invoke(*args: str):
    return CliRunner().invoke(app, ["ingest", "pairs", *map(str, args)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("pairs-corpus")
    write_corpus(root, "pairs", songs=4, seconds=SECONDS, seed=SEED)
    truth = json.loads((root / "truth.json").read_text())
    assert sum(p["wrong"] for p in truth["pairs"]) == 1
    return root, truth


@pytest.fixture(scope="module")
def csv_run(corpus, tmp_path_factory):
    """``stemforge ingest pairs DIR/pairs.csv`` once; (result, DataDir path)."""
    root, _ = corpus
    data = tmp_path_factory.mktemp("pairs-data") / "d"
    result = _invoke(root / "pairs.csv", "--out", data, "-j", "1")
    return result, data


def _uid(p: dict) -> str:
    return f"pairs:{p['artist']} - {p['title']}"


def _sdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def test_csv_form_stores_the_right_pairs_with_their_alignment(corpus, csv_run):
    root, truth = corpus
    result, data = csv_run
    assert result.exit_code == 1, result.output  # documented: a refused pair makes the run partial
    wrong = next(p for p in truth["pairs"] if p["wrong"])
    right = [p for p in truth["pairs"] if not p["wrong"]]

    # the wrong pair: one line naming both of its files and the score, not stored
    lines = [ln for ln in result.stderr.splitlines() if Path(wrong["karaoke"]).name in ln]
    assert lines, result.stderr
    for ln in lines:
        assert str(root / wrong["original"]) in ln and str(root / wrong["karaoke"]) in ln
        assert "alignment score" in ln and f"minimum {MIN_SCORE:.3f}" in ln
    assert "ingested 3, unchanged 0, excluded 0, failed 1" in result.stdout

    dd = DataDir.open(data)
    df = dd.manifest.set_index("uid")
    assert sorted(df.index) == sorted(_uid(p) for p in right)
    assert _uid(wrong) not in df.index
    assert (df["vocals_kind"] == "derived").all() and (df["dataset"] == "pairs").all()
    reader = dd.reader()
    for p in right:
        row = df.loc[_uid(p)]
        fig = {c: float(row[c]) for c in ALIGN_COLUMNS}
        # the figures match truth.json (the truth's gain made the karaoke; the measured one undoes it)
        assert abs(fig["align_offset_s"] - p["offset_s"]) < 1e-3
        assert abs(int(fig["align_offset_samples"]) - p["offset_samples"]) <= 44
        assert abs(fig["align_gain_db"] + p["gain_db"]) < 0.2
        assert MIN_SCORE <= fig["align_score"] <= 1.0
        # the covered range follows from the offset and the karaoke's length
        start = max(0.0, -p["offset_s"])
        end = min(SECONDS, p["karaoke_seconds"] - p["offset_s"])
        assert abs(fig["align_start_s"] - start) < 0.002 and abs(fig["align_end_s"] - end) < 0.002
        assert abs(fig["align_coverage"] - (end - start) / SECONDS) < 0.001
        assert abs(float(row["duration_s"]) - (end - start)) < 0.002
        assert row["source_path"] == p["original"] and row["karaoke_path"] == p["karaoke"]
        assert int(row["source_sample_rate"]) == 44100 and int(row["karaoke_sample_rate"]) == 48000
        # the stored vocals are the song's vocals over the covered range
        stored = reader.read_wave(row["shard"], row["key"], "vocals", 0, None)
        true_voc, sr = audio.load(root / p["vocals"])
        true_voc = audio.resample(audio.to_mono(true_voc), sr, 16000)
        a = int(round(fig["align_start_s"] * 16000))
        ref = true_voc[a : a + stored.size]
        assert ref.size == stored.size
        assert _sdr(ref, stored) > 6.0
    check = validate(dd)
    assert check.ok, check.problems
    cli = CliRunner().invoke(app, ["validate", str(data)])
    assert cli.exit_code == 0 and "valid: 3 rows" in cli.stdout, cli.output


def test_rerun_skips_unchanged_pairs_and_options_enter_the_fingerprint(corpus, csv_run, tmp_path):
    root, _ = corpus
    _, data = csv_run
    copy = tmp_path / "d"
    shutil.copytree(data, copy)
    before = DataDir.open(copy).manifest.set_index("uid")[["source_fingerprint", "shard", "key"]]
    again = _invoke(root / "pairs.csv", "--out", copy, "-j", "1")
    assert again.exit_code == 1  # the wrong pair is measured (and refused) again: it is not stored
    assert "ingested 0, unchanged 3, excluded 0, failed 1" in again.stdout, again.output
    after = DataDir.open(copy).manifest.set_index("uid")[["source_fingerprint", "shard", "key"]]
    assert after.sort_index().equals(before.sort_index())
    # another threshold is another recipe option: the stored pairs are redone
    other = _invoke(root / "pairs.csv", "--out", copy, "-j", "1", "--min-score", "0.5")
    assert "ingested 3, unchanged 0, excluded 0, failed 1" in other.stdout, other.output
    redone = DataDir.open(copy).manifest.set_index("uid")
    assert not (redone["source_fingerprint"].sort_index() == before["source_fingerprint"].sort_index()).any()
    assert (redone["align_min_score"].astype(float) == 0.5).all()
    assert validate(DataDir.open(copy)).ok


def test_folder_form_pairs_files_by_name(corpus, csv_run, tmp_path):
    root, truth = corpus
    _, csv_data = csv_run
    folder = tmp_path / "mine"
    shutil.copytree(root / "originals", folder / "originals")
    shutil.copytree(root / "karaoke", folder / "karaoke")
    right = [p for p in truth["pairs"] if not p["wrong"]]
    # an original without its karaoke, and a file that is not audio
    shutil.copy(root / right[0]["original"], folder / "originals" / "Lonely Band - No Karaoke.wav")
    (folder / "karaoke" / "notes.txt").write_text("not audio\n")
    result = _invoke(folder, "--out", tmp_path / "d", "-j", "1")
    assert result.exit_code == 1, result.output
    assert "ingested 3, unchanged 0, excluded 0, failed 2" in result.stdout, result.output
    lonely = [ln for ln in result.stderr.splitlines() if "No Karaoke.wav" in ln]
    assert lonely and all("no karaoke of the same name" in ln for ln in lonely)
    df = DataDir.open(tmp_path / "d").manifest.set_index("uid")
    ref = DataDir.open(csv_data).manifest.set_index("uid")
    assert sorted(df.index) == sorted(ref.index)  # same uids as the CSV form
    for p in right:
        row, other = df.loc[_uid(p)], ref.loc[_uid(p)]
        assert (row["artist"], row["title"]) == (p["artist"], p["title"])  # "Artist - Title" file names
        assert row["song_key"] == other["song_key"]
        assert row["source_fingerprint"] == other["source_fingerprint"]  # content, not place: same as the CSV form
        for c in ALIGN_COLUMNS:
            assert float(row[c]) == pytest.approx(float(other[c]), abs=1e-9)
    assert validate(DataDir.open(tmp_path / "d")).ok


def test_csv_row_with_a_missing_file_fails_alone_and_split_column_is_kept(corpus, tmp_path):
    root, truth = corpus
    right = [p for p in truth["pairs"] if not p["wrong"]]
    listing = root / "lists" / "mine.csv"
    listing.parent.mkdir(exist_ok=True)
    splits = ["test", "valid", ""]
    with open(listing, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["original", "karaoke", "artist", "title", "split"])
        w.writeheader()
        for p, split in zip(right, splits):
            w.writerow({"original": f"../{p['original']}", "karaoke": f"../{p['karaoke']}", "artist": p["artist"], "title": p["title"], "split": split})
        w.writerow({"original": f"../{right[0]['original']}", "karaoke": "../karaoke/missing.wav", "artist": "Ghost", "title": "Gone"})
    result = _invoke(listing, "--out", tmp_path / "d", "-j", "1", "--name", "mine")
    assert result.exit_code == 1, result.output
    assert "ingested 3, unchanged 0, excluded 0, failed 1" in result.stdout, result.output
    missing = [ln for ln in result.stderr.splitlines() if "missing.wav" in ln]
    assert missing and all("file not found (karaoke of mine.csv line 5)" in ln for ln in missing), result.stderr
    df = DataDir.open(tmp_path / "d").manifest.set_index("uid")
    assert "mine:Ghost - Gone" not in df.index
    for p, split in zip(right, splits):
        row = df.loc[f"mine:{p['artist']} - {p['title']}"]
        expected = split or hash_split(song_key(p["artist"], p["title"]), 0.1, 0.15, "pairs-song-split-v1")
        assert row["split"] == expected and row["dataset"] == "mine"
        assert row["source_path"] == f"../{p['original']}"


def test_discover_surface_splits_and_options(corpus, tmp_path):
    root, truth = corpus
    assert get_recipe("pairs") is recipe and recipe.NAME == "pairs" and "Layout" in recipe.LAYOUT
    sources = recipe.discover(root, min_score=0.6, max_offset_s=12.0)
    assert [s.track_id for s in sources] == [f"{p['artist']} - {p['title']}" for p in truth["pairs"]]
    for s in sources:
        assert s.loader == "stemforge.recipes.karaoke:load_pair" and s.vocals_kind == "derived"
        assert dict(s.options) == {"min_score": "0.6", "max_offset_s": "12.0"}
        assert [str(f.relative_to(root)) for f in s.files()][0].startswith("originals/") and len(s.files()) == 2
        assert s.split == hash_split(song_key(s.artist, s.title), 0.1, 0.15, "pairs-song-split-v1")
    assert {s.split for s in recipe.discover(root, valid_fraction=0.0, test_fraction=0.0)} == {"train"}
    held = recipe.discover(root, valid_fraction=0.0, test_fraction=0.99)
    assert {s.split for s in held} == {"test"}
    # not a pairs folder: the expected layout and what was found
    wrong = tmp_path / "wrong"
    (wrong / "somewhere").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"expected pairs\.csv .* found \['somewhere'\]"):
        recipe.discover(wrong)
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("mixture,vocals\na.wav,b.wav\n")
    with pytest.raises(DatasetLayoutError, match="original,karaoke"):
        recipe.discover(bad_header)
    with pytest.raises(StemforgeError, match="min_score"):
        recipe.discover(root, min_score=1.5)


def test_loader_honours_min_score_and_names_both_files(corpus):
    root, truth = corpus
    p = next(p for p in truth["pairs"] if not p["wrong"])
    src = next(s for s in recipe.discover(root, min_score=0.999) if s.track_id == f"{p['artist']} - {p['title']}")
    with pytest.raises(AlignmentError) as info:
        recipe.load_pair(src, SpectrogramConfig())
    msg = str(info.value)
    assert "\n" not in msg and str(root / p["original"]) in msg and str(root / p["karaoke"]) in msg
    assert "minimum 0.999" in msg


def test_cli_wrong_folder_exits_3(tmp_path):
    (tmp_path / "x").mkdir()
    result = _invoke(tmp_path / "x", "--out", tmp_path / "d")
    assert result.exit_code == 3 and "not a pairs folder" in result.output
