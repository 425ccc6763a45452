"""Reliability of the recipes (issue 16, items 2, 3 and 8): corpus metadata is parsed within
bounds, names a corpus's files give never lead outside its root, and stems of different
channel counts are recorded. Every input is made at test time.

Each class: one bad track gets a one-line reason, the rest of the batch is stored, the rows stored
before stay, the exit code is 1; memory stays bounded where the input could blow it up. Memory
measured in a fresh process: tests/integration/test_reliability_recipes_memory.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.core.errors import DatasetLayoutError
from stemforge.recipes import medleydb
from stemforge.recipes.base import inside_root
from stemforge.store import DataDir

from conftest import ROOT

from support.reliability_recipes import _bomb, _medleydb, _meta_path

REFERENCE = Path(os.environ.get("STEMFORGE_REFERENCE", ROOT.parent / "shared" / "reference"))


def _edit_metadata(rec: dict, edit) -> None:
    """Rewrite a synthetic track's METADATA after ``edit(meta_dict) -> yaml text or None``."""
    path = _meta_path(rec)
    meta = yaml.safe_load(path.read_text())
    text = edit(meta)
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(meta, sort_keys=False))


def _ingest(root: Path, data: Path, *args: str):
    return CliRunner().invoke(app, ["ingest", "medleydb", str(root), "--out", str(data), "--workers", "1", *args])


def _failed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("failed: ")]


# -- item 2: metadata that expands -------------------------------------------------------------
def test_alias_bomb_fails_its_track_only_and_stored_rows_stay(tmp_path):
    recs = _medleydb(tmp_path / "m", songs=3)
    first = _ingest(tmp_path / "m", tmp_path / "d")
    assert first.exit_code == 0, first.output
    before = DataDir.open(tmp_path / "d").manifest.set_index("uid")
    assert len(before) == 3

    # a 1 KB bomb (10**9 scalars) where the recipe reads a string, and a merge-key bomb
    _edit_metadata(recs[0], lambda m: _bomb(9) + yaml.safe_dump({**m, "title": None}, sort_keys=False).replace("title: null", "title: *l8"))
    _edit_metadata(recs[1], lambda m: _bomb(8) + "mix: &m {" + ", ".join(f"k{i}: *l7" for i in range(10)) + "}\n" + yaml.safe_dump(m, sort_keys=False).replace("genre: Pop", "genre: {<<: *m}"))
    assert _meta_path(recs[0]).stat().st_size < 2048
    result = _ingest(tmp_path / "m", tmp_path / "d")
    assert result.exit_code == 1, result.output
    failed = _failed_lines(result.output)
    assert len(failed) == 2, result.output
    for rec in recs[:2]:
        line = next(f for f in failed if rec["track_id"] in f)
        assert str(_meta_path(rec)) in line and "expands to more than" in line, line
    after = DataDir.open(tmp_path / "d").manifest.set_index("uid")
    assert set(after.index) == set(before.index)  # nothing stored earlier is lost
    assert (after["source_fingerprint"] == before["source_fingerprint"]).all()


def test_metadata_faults_are_one_line_reasons_for_their_track(tmp_path):
    recs = _medleydb(tmp_path / "m", songs=6)
    faults = {
        0: ("a: &a [1, *a]\nstems: *a\n", "recursive alias"),
        1: ("stems:\n" + "  " + "[" * 200 + "]" * 200 + "\n", "unreadable metadata"),
        2: ("stems: {S01: {filename: [a, b]}}\n", "stem S01 has no filename"),
        3: ("stems: [1, 2\n", "unreadable metadata"),
        4: ("title: " + "x" * (medleydb.MAX_METADATA_BYTES + 1) + "\n", "bytes, more than"),
    }
    for i, (text, _) in faults.items():
        _meta_path(recs[i]).write_text(text)
    tracks = {t.track_id: t for t in medleydb.discover(tmp_path / "m")}
    for i, (_, reason) in faults.items():
        error = tracks[recs[i]["track_id"]].error
        assert error and reason in error and "\n" not in error, (i, error)
        assert error.startswith(str(_meta_path(recs[i])))
    good = tracks[recs[5]["track_id"]]
    assert good.error is None and good.vocals and good.accompaniment


def test_bounds_count_expansion_not_aliases():
    """Small aliases and merge keys are legal YAML and are read; only what they expand to counts."""
    data = medleydb.safe_load_yaml("a: &a [1, 2]\nb: *a\nc: {<<: {k: 1}, j: 2}\n")
    assert data == {"a": [1, 2], "b": [1, 2], "c": {"k": 1, "j": 2}}
    with pytest.raises(ValueError, match="expands to more than 50 nodes"):
        medleydb.safe_load_yaml(_bomb(3, width=5), max_nodes=50)
    with pytest.raises(ValueError, match="nests deeper than 8 levels"):
        medleydb.safe_load_yaml("a: " + "[" * 10 + "]" * 10, max_depth=8)


def test_every_real_metadata_file_is_within_the_bounds():
    folder = REFERENCE / "medleydb-metadata"
    files = sorted(folder.glob("*_METADATA.yaml")) if folder.is_dir() else []
    if not files:
        pytest.skip(f"MedleyDB reference metadata not found at {folder} (set STEMFORGE_REFERENCE)")
    assert len(files) == 330
    for path in files:
        meta = medleydb.read_metadata(path)  # raises on any file the bounds would refuse
        assert meta["stems"] and all(isinstance(s["filename"], str) for s in meta["stems"].values())


# -- item 3: names that lead outside the corpus root ---------------------------------------------
def test_inside_root_refuses_absolute_and_climbing_names():
    assert inside_root("/c", "T", "T_STEMS", "T_STEM_01.wav") == "T/T_STEMS/T_STEM_01.wav"
    assert inside_root("/c", "T", "./S", "x.wav") == "T/S/x.wav"
    assert inside_root("/c", "T", "../U_STEMS", "x.wav") == "U_STEMS/x.wav"  # another track: still inside
    for names, reason in [
        (("T", "S", "../../../x.wav"), "leads outside /c"),
        (("T", "..\\..\\x.wav"), "leads outside /c"),
        (("T", "/etc/passwd"), "is an absolute path"),
        (("T", "C:\\x.wav"), "is an absolute path"),
        (("T", ""), "is empty"),
    ]:
        with pytest.raises(DatasetLayoutError, match=reason.replace("\\", "\\\\")):
            inside_root("/c", *names)


def test_metadata_names_outside_the_root_fail_their_track(tmp_path):
    recs = _medleydb(tmp_path / "corpus" / "m", songs=4)
    outside = tmp_path / "outside.wav"  # a real, decodable file outside the corpus root
    stem = recs[0]["paths"]["stems"]["S01"]
    outside.write_bytes(stem.read_bytes())
    climbs = os.path.relpath(outside, stem.parent)
    assert climbs.startswith("..")

    def set_stem(name):
        def edit(m):
            m["stems"]["S01"]["filename"] = name

        return edit

    _edit_metadata(recs[0], set_stem(climbs))
    _edit_metadata(recs[1], set_stem(str(outside)))
    _edit_metadata(recs[2], lambda m: m.update(stem_dir=str(outside.parent)))
    result = _ingest(tmp_path / "corpus" / "m", tmp_path / "d")
    assert result.exit_code == 1, result.output
    failed = _failed_lines(result.output)
    assert len(failed) == 3, result.output
    for rec, reason in zip(recs, ("leads outside", "is an absolute path", "is an absolute path")):
        line = next(f for f in failed if rec["track_id"] in f)
        assert str(_meta_path(rec)) in line and reason in line, line
    stored = DataDir.open(tmp_path / "d").manifest
    assert list(stored["track_id"]) == [recs[3]["track_id"]]
    assert not stored["source_path"].str.contains(r"\.\.|^/", regex=True).any()


def test_list_recipes_take_paths_anywhere_as_documented(tmp_path):
    """The csv and pairs lists are documented to name files anywhere (absolute, or ``../``):
    they are the user's own lists, not a corpus's metadata. Held, and said in their help."""
    from stemforge.synth.layouts import write_corpus

    recs = write_corpus(tmp_path / "audio", "musdb-hq", songs=2, seconds=2.0, seed=16)
    lists = tmp_path / "lists"
    lists.mkdir()
    a, b = (r["paths"] for r in recs)
    (lists / "songs.csv").write_text(
        "mixture,vocals\n"
        f"{a['mixture']},{a['vocals']}\n"
        f"{os.path.relpath(b['mixture'], lists)},{os.path.relpath(b['vocals'], lists)}\n"
    )
    result = CliRunner().invoke(app, ["ingest", "csv", str(lists / "songs.csv"), "--out", str(tmp_path / "d"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len(DataDir.open(tmp_path / "d").manifest) == 2
    for command in ("csv", "pairs"):
        text = CliRunner().invoke(app, ["ingest", command, "--help"], env={"COLUMNS": "200"}).output
        assert "absolute" in text and "../" in text, text


# -- item 8: stems of different channel counts ---------------------------------------------------
def test_stems_of_different_channel_counts_are_downmixed_each_and_recorded(tmp_path):
    """Mono vocals and 6-channel drums in one DSD100 song: accepted, each file downmixed to
    mono on its own (so the sum equals the mono stems' sum), and the manifest says so."""
    import numpy as np

    from stemforge.core import audio
    from stemforge.synth.layouts import write_corpus

    recs = write_corpus(tmp_path / "dsd", "dsd100", songs=2, seconds=2.0, seed=16)
    shutil.copytree(tmp_path / "dsd", tmp_path / "plain")
    odd = recs[0]["paths"]
    voc, sr = audio.load(odd["vocals"])
    drums, _ = audio.load(odd["drums"])
    audio.write(odd["vocals"], voc.mean(axis=0), sr, "FLOAT")  # mono, same mean
    audio.write(odd["drums"], np.repeat(drums.mean(axis=0, keepdims=True), 6, axis=0), sr, "FLOAT")  # 6 equal channels
    result = CliRunner().invoke(app, ["ingest", "dsd100", str(tmp_path / "dsd"), "--out", str(tmp_path / "d"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = DataDir.open(tmp_path / "d").manifest.set_index("track_id")
    odd_id, even_id = (next(t for t in rows.index if t.startswith(r["track_id"] + " - ")) for r in recs)
    marked = rows["stem_channels"].fillna("")
    assert marked[odd_id] == "mixture=2; vocals=1; accompaniment=2,6,2"
    assert marked[even_id] == ""  # uniform: no note
    assert int(rows.loc[odd_id, "source_channels"]) == 6
    assert "1 track had files of different channel counts" in result.output, result.output
    # each file was downmixed on its own: the same arrays as the song's all-stereo original
    plain = CliRunner().invoke(app, ["ingest", "dsd100", str(tmp_path / "plain"), "--out", str(tmp_path / "p"), "--workers", "1"])
    assert plain.exit_code == 0 and "channel counts" not in plain.output, plain.output
    a, b = DataDir.open(tmp_path / "d"), DataDir.open(tmp_path / "p")
    ra, rb = a.manifest.set_index("track_id").loc[odd_id], b.manifest.set_index("track_id").loc[odd_id]
    arrays_a, arrays_b = a.reader().read_frames(ra["shard"], ra["key"]), b.reader().read_frames(rb["shard"], rb["key"])
    for name in ("mixture", "vocals", "accompaniment"):
        np.testing.assert_allclose(arrays_a[name].astype(np.float32), arrays_b[name].astype(np.float32), atol=1e-3)
