"""Cross-song remixes: target size, source rules, balance, waveform-domain mixing, determinism,
resuming, stale remixes, CLI."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from stemforge.core import dsp
from stemforge.augment.remix import (
    AugmentOptions,
    RemixPlanner,
    augment,
    render_remix,
    train_hours,
)
from stemforge.core.errors import StemforgeError
from stemforge.store import DataDir
from stemforge.store.check import summary, validate
from stemforge.store.lineage import remix_sources, stale_remixes

SEGMENT = 5.0  # seconds: 157 frames, more than a 128-frame patch
OPTIONS = AugmentOptions(segment_seconds=SEGMENT)
SONGS, SECONDS = 8, 15.0


@pytest.fixture(scope="module")
def base_data(tmp_path_factory) -> Path:
    """A DataDir of synthetic DSD100 songs (train and test), ingested once, never written to."""
    from stemforge.ingest.engine import ingest
    from stemforge.recipes import dsd100
    from stemforge.synth.layouts import write_corpus

    root = tmp_path_factory.mktemp("augment-corpus")
    write_corpus(root, "dsd100", songs=SONGS, seconds=SECONDS, seed=11)
    data = tmp_path_factory.mktemp("augment-base") / "data"
    report = ingest(DataDir.create(data), dsd100.discover(root), workers=1)
    assert report.ok, report.failed
    df = DataDir.open(data).manifest
    assert (df["split"] == "train").sum() >= 3, "the corpus needs at least three train songs"
    return data


def _copy(base: Path, dst: Path) -> DataDir:
    shutil.copytree(base, dst)
    return DataDir.open(dst)


def _checksums(dd: DataDir, uids=None) -> dict[str, str]:
    """uid -> SHA-256 of every stored array of the track and its norm."""
    df = dd.reload()
    if uids is not None:
        df = df[df["uid"].isin(set(uids))]
    reader = dd.reader()
    out = {}
    for row in df.itertuples(index=False):
        g = reader.group(row.shard, row.key)
        h = hashlib.sha256()
        for name in sorted(g):
            h.update(name.encode())
            h.update(np.ascontiguousarray(g[name][()]).tobytes())
        h.update(repr(float(g.attrs["norm"])).encode())
        out[row.uid] = h.hexdigest()
    reader.close()
    return out


def _remixes(dd: DataDir) -> pd.DataFrame:
    df = dd.reload()
    return df[df["vocals_kind"] == "remix"]


def _target(dd: DataDir, extra_minutes: float) -> float:
    return train_hours(dd.manifest).total_h + extra_minutes / 60.0


def test_reaches_target_and_follows_the_source_rules(base_data, tmp_path):
    dd = _copy(base_data, tmp_path / "d")
    before_rows = dd.manifest.copy()
    held_out = before_rows[before_rows["split"] != "train"]["uid"].tolist()
    assert held_out, "the corpus should have test/valid rows to check they stay untouched"
    held_sums = _checksums(dd, held_out)
    target = _target(dd, 3.0)

    report = augment(dd, target, seed=3, options=OPTIONS, workers=1)

    assert report.ok and report.added
    after = train_hours(dd.reload())
    assert target <= after.total_h < target + SEGMENT / 3600
    assert after.ingested_h == pytest.approx(report.before.ingested_h)
    assert report.added_h == pytest.approx(after.remix_h)
    df = dd.manifest
    sources = remix_sources(before_rows).set_index("uid")
    rem = _remixes(dd)
    assert len(rem) == len(report.added) == report.planned
    for row in rem.itertuples(index=False):
        assert row.dataset == "remix" and row.split == "train" and row.uid.startswith("remix:")
        assert row.duration_s == pytest.approx(SEGMENT)
        lineage = json.loads(row.parents)
        v, a = lineage["vocals"], lineage["accompaniment"]
        assert v in sources.index and a in sources.index  # train, not duplicate, not remix
        assert sources.loc[v, "song_key"] != sources.loc[a, "song_key"]
        assert row.song_key == f"remix:{sources.loc[v, 'song_key']}+{sources.loc[a, 'song_key']}:{row.track_id}"
        assert -3.0 <= lineage["vocals_gain_db"] <= 3.0 and lineage["pitch_semitones"] == 0.0
    # song keys never collide with real songs, and no leak is reported
    assert not set(rem["song_key"]) & set(before_rows["song_key"])
    assert rem["song_key"].is_unique
    # held-out rows untouched (row and arrays)
    pd.testing.assert_frame_equal(
        df[df["uid"].isin(held_out)].sort_values("uid").reset_index(drop=True),
        before_rows[before_rows["uid"].isin(held_out)].sort_values("uid").reset_index(drop=True),
    )
    assert _checksums(dd, held_out) == held_sums
    res = validate(dd)
    assert res.ok, res.problems
    kinds = {k["split"]: k for k in summary(dd)["kinds"]}
    assert kinds["train"]["remix_h"] == pytest.approx(after.remix_h)
    assert kinds["test"]["remix_h"] == 0.0


def test_vocal_segments_are_voiced(base_data, tmp_path):
    dd = DataDir.open(base_data)
    options = AugmentOptions(segment_seconds=SEGMENT, min_vocal_activity=0.7)
    planner = RemixPlanner(dd, seed=5, options=options)
    reader = dd.reader()
    hop = dd.config.hop_length
    win = planner.segment // hop
    by_uid = dd.manifest.set_index("uid")
    plans = planner.plans(40)
    for p in plans:
        assert p.vocals_offset % hop == 0
        row = by_uid.loc[p.vocals_uid]
        active = dsp.vocal_activity(reader.read_vocal_energy(row["shard"], row["key"]))
        f = p.vocals_offset // hop
        assert active[f : f + win].mean() >= 0.7 - 1e-9
        assert p.vocals_offset + p.n_samples <= int(round(row["duration_s"] * 16000))
        assert 0 <= p.accompaniment_offset <= int(round(by_uid.loc[p.accompaniment_uid, "duration_s"] * 16000)) - p.n_samples
    # a track's offsets vary (not always the start)
    assert len({p.vocals_offset for p in plans}) > 5
    reader.close()


def test_sources_are_used_evenly_and_pairs_differ_in_song(base_data):
    dd = DataDir.open(base_data)
    planner = RemixPlanner(dd, seed=1, options=OPTIONS)
    n = 7 * len(planner.sources) + 3
    plans = planner.plans(n)
    songs = remix_sources(dd.manifest).set_index("uid")["song_key"]
    for role in ("vocals", "accompaniment"):
        uses = pd.Series([getattr(p, f"{role}_uid") for p in plans]).value_counts()
        pool = planner.usage()[role]["sources"]
        mean = n / pool
        assert len(uses) == pool, f"every {role} source is used"
        assert uses.max() <= math.ceil(mean) + 1, (role, uses.to_dict())
        assert uses.min() >= math.floor(mean) - 1, (role, uses.to_dict())
    assert all(songs[p.vocals_uid] != songs[p.accompaniment_uid] for p in plans)
    pairs = pd.Series([(p.vocals_uid, p.accompaniment_uid) for p in plans]).value_counts()
    n_songs = len(planner.sources)
    if n <= n_songs * (n_songs - 1):
        assert pairs.max() == 1, "no pair repeats while new pairs remain"


def test_plan_n_does_not_depend_on_how_many_are_planned(base_data):
    dd = DataDir.open(base_data)
    a = RemixPlanner(dd, seed=9, options=OPTIONS).plans(10)
    b = RemixPlanner(dd, seed=9, options=OPTIONS).plans(30)
    assert a == b[:10]
    c = RemixPlanner(dd, seed=10, options=OPTIONS).plans(10)
    assert a[0].plan_id != c[0].plan_id and [p.vocals_offset for p in a] != [p.vocals_offset for p in c]


def test_same_seed_is_byte_identical_and_growing_adds_only_the_missing(base_data, tmp_path):
    target_small = _target(DataDir.open(base_data), 1.5)
    target = _target(DataDir.open(base_data), 3.0)
    # direct, in worker processes
    direct = _copy(base_data, tmp_path / "direct")
    r = augment(direct, target, seed=4, options=OPTIONS, workers=2)
    assert r.ok and r.already == 0
    # in two steps, in-process
    steps = _copy(base_data, tmp_path / "steps")
    r1 = augment(steps, target_small, seed=4, options=OPTIONS, workers=1)
    r2 = augment(steps, target, seed=4, options=OPTIONS, workers=1)
    assert r2.already == len(r1.added) and len(r1.added) + len(r2.added) == len(r.added)
    a, b = _checksums(direct, [x["uid"] for x in r.added]), _checksums(steps)
    b = {u: s for u, s in b.items() if u.startswith("remix:")}
    assert a == b and len(a) == len(r.added)
    pd.testing.assert_frame_equal(
        _remixes(direct).drop(columns=["shard"]).sort_values("uid").reset_index(drop=True),
        _remixes(steps).drop(columns=["shard"]).sort_values("uid").reset_index(drop=True),
    )
    # the split is there: nothing to do
    r3 = augment(steps, target, seed=4, options=OPTIONS, workers=1)
    assert r3.nothing_to_do and not r3.added
    # another seed adds a new plan on top of the old one, counting its hours
    r4 = augment(steps, target + 1 / 60, seed=5, options=OPTIONS, workers=1)
    assert r4.plan_id != r.plan_id and 0 < len(r4.added) <= math.ceil(60 / SEGMENT)


def test_stored_mixture_is_the_magnitude_of_the_waveform_sum(base_data, tmp_path):
    dd = _copy(base_data, tmp_path / "d")
    augment(dd, _target(dd, 0.5), seed=2, options=AugmentOptions(segment_seconds=SEGMENT, vocal_gain_db=(-6, 6)))
    reader = dd.reader()
    rem = _remixes(dd)
    for row in rem.head(3).itertuples(index=False):
        voc = reader.read_wave(row.shard, row.key, "vocals")
        acc = reader.read_wave(row.shard, row.key, "accompaniment")
        mags = reader.read_frames(row.shard, row.key)
        norm = float(row.norm)
        expected = dsp.magnitude(voc + acc, dd.config) / norm  # dsp.stft equals librosa.stft (tested in dsp)
        stored = mags["mixture"].astype(np.float32)
        assert stored.shape == expected.shape == (int(row.n_frames), 513)
        np.testing.assert_allclose(stored, expected, atol=2e-3, rtol=2e-3)
        assert abs(stored.max() - 1.0) < 1e-3
        wrong = (dsp.magnitude(voc, dd.config) + dsp.magnitude(acc, dd.config)) / norm
        assert np.abs(wrong - stored).max() > 0.05  # |A + B| is not |A| + |B|
        np.testing.assert_allclose(mags["vocals"].astype(np.float32), dsp.magnitude(voc, dd.config) / norm, atol=2e-3, rtol=2e-3)
    reader.close()


def test_rendering_reproduces_the_lineage(base_data):
    """The stored waveforms are the parents' segments with the recorded gain (and pitch)."""
    dd = DataDir.open(base_data)
    reader = dd.reader()
    options = AugmentOptions(segment_seconds=SEGMENT, vocal_gain_db=(-6, 6), pitch_semitones=2)
    plans = RemixPlanner(dd, seed=8, options=options).plans(4)
    assert any(abs(p.pitch_semitones) > 0.1 for p in plans)
    assert all(-2 <= p.pitch_semitones <= 2 for p in plans)
    by_uid = dd.manifest.set_index("uid")
    for p in plans:
        row, arrays = render_remix(reader, p, dd.config)
        assert arrays.wave_vocals.size == arrays.wave_accompaniment.size == p.n_samples
        assert json.loads(row["parents"])["pitch_semitones"] == p.pitch_semitones
        a = by_uid.loc[p.accompaniment_uid]
        src = reader.read_wave(a["shard"], a["key"], "accompaniment", p.accompaniment_offset, p.accompaniment_offset + p.n_samples)
        np.testing.assert_array_equal(arrays.wave_accompaniment, src)
        v = by_uid.loc[p.vocals_uid]
        raw = reader.read_wave(v["shard"], v["key"], "vocals", p.vocals_offset, p.vocals_offset + p.n_samples)
        if p.pitch_semitones:
            assert not np.allclose(arrays.wave_vocals, raw * 10 ** (p.vocals_gain_db / 20), atol=1e-3)
        else:
            np.testing.assert_allclose(arrays.wave_vocals, raw * 10 ** (p.vocals_gain_db / 20), rtol=1e-6)
    reader.close()


def test_killed_run_keeps_committed_shards_and_resumes(base_data, tmp_path):
    target = _target(DataDir.open(base_data), 2.0)
    ref = _copy(base_data, tmp_path / "ref")
    augment(ref, target, seed=6, options=OPTIONS)
    dd = _copy(base_data, tmp_path / "d")
    done = []

    def die(event, uid, detail):
        if event == "done":
            done.append(uid)
            if len(done) == 11:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        augment(dd, target, seed=6, options=OPTIONS, progress=die, remixes_per_shard=4)
    kept = _remixes(dd)
    assert len(kept) == 8  # two full shards committed, the third abandoned
    assert validate(dd).ok
    r = augment(dd, target, seed=6, options=OPTIONS, remixes_per_shard=4)
    assert r.already == 8 and len(r.added) == r.planned - 8
    assert _checksums(dd, _remixes(dd)["uid"]) == _checksums(ref, _remixes(ref)["uid"])


def test_stale_remixes_are_dropped(base_data, tmp_path):
    dd = _copy(base_data, tmp_path / "d")
    augment(dd, _target(dd, 1.0), seed=1, options=OPTIONS)
    df = dd.reload()
    rem = _remixes(dd)
    parent = json.loads(rem.iloc[0]["parents"])["vocals"]
    assert stale_remixes(df) == []
    # identity reconciliation moves the parent's song to test
    moved = df[df["uid"] == parent].to_dict("records")
    moved[0]["split"] = "test"
    with dd.writing():
        dd.commit(moved)
    stale = stale_remixes(dd.manifest)
    users = {r.uid for r in rem.itertuples() if parent in (json.loads(r.parents)["vocals"], json.loads(r.parents)["accompaniment"])}
    assert {u for u, _ in stale} == users and all("now in split test" in why for _, why in stale)
    r = augment(dd, _target(dd, 0.0), seed=1, options=OPTIONS)  # drops them, then tops the split up again
    assert {u for u, _ in r.dropped} == users
    left = dd.reload()
    assert not set(left["uid"]) & users
    assert stale_remixes(left) == [] and validate(dd).ok


def test_refuses_what_cannot_be_remixed(base_data, tmp_path):
    with pytest.raises(StemforgeError, match="segment"):
        AugmentOptions(segment_seconds=0)
    with pytest.raises(StemforgeError, match="LOW"):
        AugmentOptions(vocal_gain_db=(3, -3))
    with pytest.raises(StemforgeError, match="activity"):
        AugmentOptions(min_vocal_activity=0)
    dd = DataDir.open(base_data)
    with pytest.raises(StemforgeError, match="training patch"):
        RemixPlanner(dd, 0, AugmentOptions(segment_seconds=3.0))
    with pytest.raises(StemforgeError, match="cannot remix"):
        RemixPlanner(dd, 0, AugmentOptions(segment_seconds=SECONDS + 1))
    # one train song only
    one = _copy(base_data, tmp_path / "one")
    df = one.manifest
    train = df[df["split"] == "train"]["uid"].tolist()
    with one.writing():
        one.commit([], drop_uids=train[1:])
    with pytest.raises(StemforgeError, match="two different songs"):
        augment(one, 10.0, options=OPTIONS)


def _app() -> typer.Typer:
    from stemforge.cli import augment as cmd

    app = typer.Typer(rich_markup_mode=None)
    cmd.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps "augment" a subcommand
        pass

    return app


def test_cli(base_data, tmp_path, monkeypatch):
    dd = _copy(base_data, tmp_path / "d")
    target = _target(dd, 1.0)
    runner = CliRunner()
    help_text = runner.invoke(_app(), ["augment", "--help"]).output
    assert "Example: stemforge augment --hours 17" in help_text and "AFTER the run" in help_text
    monkeypatch.setenv("STEMFORGE_DATA", str(dd.path))
    res = runner.invoke(_app(), ["augment", "--hours", repr(target), "--segment-seconds", "5", "--vocal-gain-db=-6,0", "-j", "1"])
    assert res.exit_code == 0, res.output
    assert "$STEMFORGE_DATA" in res.output
    assert "train split: had" in res.output and "added" in res.output and "now" in res.output
    rem = _remixes(dd)
    assert len(rem) == math.ceil(60 / SEGMENT)
    assert all(-6 <= json.loads(p)["vocals_gain_db"] <= 0 for p in rem["parents"])
    res = runner.invoke(_app(), ["augment", str(dd.path), "--hours", repr(target), "--segment-seconds", "5"])
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = runner.invoke(_app(), ["augment", str(tmp_path / "nope"), "--hours", "1"])
    assert res.exit_code == 3 and "not a stemforge DataDir" in res.output
    res = runner.invoke(_app(), ["augment", str(dd.path), "--hours", "1", "--vocal-gain-db", "x"])
    assert res.exit_code == 2


def test_validate_flags_remix_whose_parent_left_train(base_data, tmp_path):
    """A remix whose source song moved to test (a later ingest) is a leak until augment drops it."""
    import json as _json

    from stemforge.store.check import validate as _validate

    dd = _copy(base_data, tmp_path / "d")
    augment(dd, hours=_target(dd, 1.0), seed=0)
    dd = DataDir.open(tmp_path / "d")
    assert _validate(dd).ok
    remix = _remixes(dd).iloc[0]
    parent = _json.loads(remix["parents"])["vocals"]
    with dd.writing():
        df = dd.manifest.copy()
        df.loc[df["uid"] == parent, "split"] = "test"
        dd.commit(df.to_dict("records"))
    res = _validate(DataDir.open(tmp_path / "d"))
    assert any("would leak" in p and parent in p for p in res.problems), res.problems
