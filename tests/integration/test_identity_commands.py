"""Song identity through whole ingests: DSD100 and MUSDB18 ingested into one DataDir by `stemforge
ingest` leak nothing and name their duplicates, and a later ingest that moves a remix parent to
test says so. Keys, aliases and splits on their own: tests/unit/recipes/test_identity.py."""

from __future__ import annotations

from typer.testing import CliRunner

from stemforge.cli.main import app
from stemforge.store import DataDir
from stemforge.store.check import leakage, validate


SONGS = [
    # (DSD100 id, DSD100 folder artist, title, MUSDB18 subset): chosen for their split conflicts
    (51, "AM Contra", "Heart Peripheral", "test"),  # DSD100 Dev (train) -> MUSDB18 test
    (1, "ANiMAL", "Clinic A", "train"),  # DSD100 Test -> MUSDB18 train
    (3, "Actions", "One Minute Smile", "train"),  # DSD100 Test -> MUSDB18 valid list
    (81, "Patrick Talbot", "Set Me Free", "train"),  # named "Set Free Me" in MUSDB18
    (53, "Actions", "Devil's Words", "train"),  # train in both
]


def test_dsd100_and_musdb18_in_one_datadir_have_no_leak_and_name_duplicates(tmp_path):
    from stemforge.recipes.reference import reference_manifest
    from stemforge.synth.layouts import write_corpus

    musdb_ref = reference_manifest("musdb18_tracks").set_index("dsd100_id")
    dsd_entries, musdb_entries = [], []
    for ident, artist, title, subset in SONGS:
        m = musdb_ref.loc[str(ident)]
        assert m["subset"] == subset
        dsd_entries.append({"id": ident, "subset": "Test" if ident <= 50 else "Dev", "artist": artist, "title": title})
        musdb_entries.append({"subset": subset, "artist": m["artist"], "title": m["title"]})
    assert musdb_entries[3]["title"] == "Set Free Me"
    write_corpus(tmp_path / "dsd", "dsd100", songs=len(SONGS), seconds=2.0, seed=1, entries=dsd_entries)
    write_corpus(tmp_path / "musdb", "musdb-hq", songs=len(SONGS), seconds=2.0, seed=1, entries=musdb_entries)
    runner = CliRunner()
    data = str(tmp_path / "d")
    first = runner.invoke(app, ["ingest", "dsd100", str(tmp_path / "dsd"), "--out", data, "--workers", "1"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["ingest", "musdb", str(tmp_path / "musdb"), "--out", data, "--workers", "1"])
    assert second.exit_code == 0, second.output
    # the later ingest says which stored rows moved, and names the duplicates
    assert "moved to a stricter split" in second.output
    assert "dsd100:051 - AM Contra - Heart Peripheral: train -> test" in second.output
    assert "musdb:Patrick Talbot - Set Free Me -> dsd100:081 - Patrick Talbot - Set Me Free" in second.output
    assert "leak:" not in second.output

    df = DataDir.open(data).manifest
    assert leakage(df) == [] and validate(DataDir.open(data)).ok
    assert len(df) == 10 and df.groupby("song_key").size().eq(2).all()  # 5 songs, each from both corpora
    split = df.groupby("song_key")["split"].first().to_dict()
    assert split == {
        "am contra - heart peripheral": "test",
        "animal - clinic a": "test",
        "actions - one minute smile": "test",
        "patrick talbot - set free me": "train",
        "actions - devil s words": "train",
    }
    dups = df[df["duplicate_of"].notna()]
    assert sorted(dups["dataset"]) == ["musdb"] * 5
    assert len(DataDir.open(data).select()) == 5  # training sees each song once

    info = runner.invoke(app, ["info", data])
    assert info.exit_code == 0, info.output
    assert "duplicates (5" in info.output and "no song is in more than one split" in info.output

    # the other order (MUSDB18 first) ends in the same splits
    data2 = str(tmp_path / "d2")
    assert runner.invoke(app, ["ingest", "musdb", str(tmp_path / "musdb"), "--out", data2, "--workers", "1"]).exit_code == 0
    res = runner.invoke(app, ["ingest", "dsd100", str(tmp_path / "dsd"), "--out", data2, "--workers", "1"])
    assert res.exit_code == 0 and "musdb:ANiMAL - Clinic A: train -> test" in res.output
    df2 = DataDir.open(data2).manifest
    assert df2.groupby("song_key")["split"].first().to_dict() == split and leakage(df2) == []
    assert sorted(df2.loc[df2["duplicate_of"].notna(), "dataset"]) == ["musdb"] * 5


def test_a_later_ingest_that_moves_a_remix_parent_to_test_says_so(tmp_path):
    """DSD100 Dev song -> remixed as train -> MUSDB18 holds it in test: the ingest warns."""
    from stemforge.augment.remix import AugmentOptions, augment
    from stemforge.store.lineage import stale_remixes
    from stemforge.synth.layouts import write_corpus

    entries = [
        {"id": 51, "subset": "Dev", "artist": "AM Contra", "title": "Heart Peripheral"},  # MUSDB18 test
        {"id": 53, "subset": "Dev", "artist": "Actions", "title": "Devil's Words"},  # MUSDB18 train
    ]
    write_corpus(tmp_path / "dsd", "dsd100", songs=2, seconds=5.0, seed=2, entries=entries)
    write_corpus(tmp_path / "musdb", "musdb-hq", songs=1, seconds=3.0, seed=2,
                 entries=[{"subset": "test", "artist": "AM Contra", "title": "Heart Peripheral"}])
    runner = CliRunner()
    data = str(tmp_path / "d")
    assert runner.invoke(app, ["ingest", "dsd100", str(tmp_path / "dsd"), "--out", data, "-j", "1"]).exit_code == 0
    options = AugmentOptions(segment_seconds=4.1, min_vocal_activity=0.05)
    augment(DataDir.create(data), hours=20 / 3600, seed=1, options=options)
    assert stale_remixes(DataDir.open(data).manifest) == []
    res = runner.invoke(app, ["ingest", "musdb", str(tmp_path / "musdb"), "--out", data, "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "dsd100:051 - AM Contra - Heart Peripheral: train -> test" in res.output
    stale = stale_remixes(DataDir.open(data).manifest)
    assert stale and f"{len(stale)} remix row(s) now have a parent outside train" in res.output
