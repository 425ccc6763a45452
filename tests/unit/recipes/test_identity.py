"""Song identity across corpora: keys, aliases, deterministic splits, duplicates, leakage. Whole
ingests into one DataDir: tests/integration/test_identity_commands.py."""

from __future__ import annotations

import pandas as pd
import pytest

from stemforge.core.errors import StemforgeError
from stemforge.ingest.reconcile import reconcile_frame
from stemforge.recipes.identity import canonical_key, normalize, song_key, split_camel
from stemforge.recipes.splits import balanced_split, hash_split, hash_unit
from stemforge.store import manifest as mf
from stemforge.store.check import leakage


def test_normalize_and_song_key():
    assert normalize("Beyoncé (feat. Jay-Z)") == "beyonce"
    assert song_key("Simon & Garfunkel", "The Boxer!") == "simon and garfunkel - the boxer"
    assert song_key("", "iKala 10161") == "ikala 10161"
    assert split_camel("LarkOnTheStrand80sRock") == "Lark On The Strand 80s Rock"


def test_alias_table_joins_names_that_differ_between_corpora():
    # DSD100's folder says "Set Me Free", MUSDB18 says "Set Free Me"
    assert canonical_key(song_key("Patrick Talbot", "Set Me Free")) == song_key("Patrick Talbot", "Set Free Me")
    # MUSDB18's names of MedleyDB tracks map to the MedleyDB metadata's artist and title
    assert canonical_key(song_key("Music Delta", "80s Rock")) == song_key("Music Delta Multitracks", "80s Rock")
    assert canonical_key(song_key("A Classic Education", "NightOwl")) == song_key("A Classic Education", "Night Owl")
    # two different MedleyDB tracks whose metadata share a title are pinned apart by uid
    key = song_key("Phoenix", "Lark On The Strand - Drummond Castle")
    a = canonical_key(key, "medleydb:Phoenix_ScotchMorris")
    b = canonical_key(key, "medleydb:Phoenix_LarkOnTheStrandDrummondCastle")
    assert a != b and a == "phoenix - scotch morris"
    # a key without alias is left alone
    assert canonical_key("nobody - nothing") == "nobody - nothing"


def test_every_medleydb_track_in_musdb18_gets_the_same_key():
    from stemforge.recipes.reference import reference_manifest

    med = reference_manifest("medleydb_tracks")
    both = med[med["musdb18_name"] != ""]
    assert len(both) == 46
    for r in both.itertuples():
        artist, _, title = r.musdb18_name.partition(" - ")
        assert canonical_key(song_key(artist, title)) == canonical_key(song_key(r.artist, r.title), f"medleydb:{r.track_id}")


def test_hash_split_and_balanced_split_are_deterministic():
    assert hash_unit("abc", "s") == hash_unit("abc", "s") != hash_unit("abc", "t")
    assert 0 <= hash_unit("x") < 1
    weights = {f"artist{i}": float(1 + i % 5) for i in range(200)}
    a = balanced_split(weights, 0.1, 0.2, salt="x")
    assert a == balanced_split(dict(reversed(list(weights.items()))), 0.1, 0.2, salt="x")
    total = sum(weights.values())
    share = {s: sum(w for g, w in weights.items() if a[g] == s) / total for s in ("train", "valid", "test")}
    assert abs(share["test"] - 0.2) < 0.02 and abs(share["valid"] - 0.1) < 0.02
    fixed = balanced_split(weights, 0.1, 0.2, salt="x", fixed={"artist3": "valid", "artist4": "test"})
    assert fixed["artist3"] == "valid" and fixed["artist4"] == "test"
    assert hash_split("song", 0.0, 0.0) == "train"
    with pytest.raises(StemforgeError):
        balanced_split(weights, 0.6, 0.5)


def _rows(*specs) -> pd.DataFrame:
    rows = []
    for uid, key, split, *rest in specs:
        dataset = uid.split(":")[0]
        rows.append({"uid": uid, "dataset": dataset, "track_id": uid.split(":")[1], "song_key": key, "split": split,
                     "vocals_kind": rest[0] if rest else "stem", "n_frames": 10, "shard": "shards/x.h5", "key": "k",
                     "norm": 1.0, "config_hash": "h"})
    return mf.coerce(pd.DataFrame(rows))


def _apply(df, changed):
    return mf.upsert(df, changed)


def test_reconcile_propagates_the_strictest_split_and_marks_duplicates():
    df = _rows(
        ("dsd100:051 - AM Contra - Heart Peripheral", "am contra - heart peripheral", "train"),
        ("musdb:AM Contra - Heart Peripheral", "am contra - heart peripheral", "test"),
        ("dsd100:081 - Patrick Talbot - Set Me Free", "patrick talbot - set me free", "train"),
        ("musdb:Patrick Talbot - Set Free Me", "patrick talbot - set free me", "train"),
        ("ikala:10161_chorus", "ikala 10161", "valid"),
        ("ikala:10161_verse", "ikala 10161", "valid"),
        ("remix:r1", "am contra - heart peripheral", "train", "remix"),
    )
    changed, report = reconcile_frame(df)
    out = _apply(df, changed).set_index("uid")
    # the DSD100 row moved to test because MUSDB18 holds the song out
    assert out.loc["dsd100:051 - AM Contra - Heart Peripheral", "split"] == "test"
    assert out.loc["dsd100:051 - AM Contra - Heart Peripheral", "corpus_split"] == "train"
    assert ("dsd100:051 - AM Contra - Heart Peripheral", "train", "test", "musdb:AM Contra - Heart Peripheral") in report.moved
    # stored once: DSD100 is preferred, the MUSDB18 row points to it
    assert out.loc["musdb:AM Contra - Heart Peripheral", "duplicate_of"] == "dsd100:051 - AM Contra - Heart Peripheral"
    assert pd.isna(out.loc["dsd100:051 - AM Contra - Heart Peripheral", "duplicate_of"])
    # alias: one key for both names
    assert out.loc["dsd100:081 - Patrick Talbot - Set Me Free", "song_key"] == "patrick talbot - set free me"
    assert out.loc["musdb:Patrick Talbot - Set Free Me", "duplicate_of"] == "dsd100:081 - Patrick Talbot - Set Me Free"
    # excerpts of one song in one corpus are not duplicates
    assert out.loc[["ikala:10161_chorus", "ikala:10161_verse"], "duplicate_of"].isna().all()
    # remix rows are left alone
    assert out.loc["remix:r1", "split"] == "train" and pd.isna(out.loc["remix:r1", "duplicate_of"])
    assert leakage(out.reset_index()[out.reset_index()["vocals_kind"] != "remix"]) == []
    # idempotent
    again, rep2 = reconcile_frame(_apply(df, changed))
    assert again == [] and rep2.n_changed == 0


def test_a_row_returns_to_its_own_split_when_the_stricter_corpus_leaves():
    df = _rows(("dsd100:a", "x - y", "train"), ("musdb:a", "x - y", "test"))
    changed, _ = reconcile_frame(df)
    df = _apply(df, changed)
    assert set(df["split"]) == {"test"}
    df = df[df["uid"] != "musdb:a"]
    changed, report = reconcile_frame(df)
    df = _apply(df, changed)
    assert df.set_index("uid").loc["dsd100:a", "split"] == "train" and report.moved == [("dsd100:a", "test", "train", "dsd100:a")]


# -- the must-show: DSD100 and MUSDB18 with real song names in one DataDir -----------------
