"""Consistency checks of a DataDir (``stemforge validate``) and its summary (``stemforge info``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from stemforge.core.errors import StemforgeError
from stemforge.core.text import format_table
from stemforge.store.datadir import DataDir
from stemforge.core.config import SpectrogramConfig
from stemforge.store.shards import MAG_FIELDS, TMP_SUFFIX, WAVE_FIELDS, dataset_checksum, mag_shape, stored_checksum

@dataclass
class ValidationResult:
    """``problems`` make a DataDir invalid; ``warnings`` are legal but worth knowing."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _empty(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v == ""


def validate(datadir: DataDir, check_values: bool = True) -> ValidationResult:
    """Check every row has its arrays with the right shapes, dtypes, config hash and finite values,
    and that no orphan, unreadable or half-written shard is there.

    ``check_values`` reads every array fully to test finiteness (slow on big DataDirs).
    """
    res = ValidationResult()
    cfg = datadir.config
    try:
        df = datadir.reload()
    except StemforgeError as exc:
        res.problems.append(str(exc))
        return res
    res.n_rows = len(df)
    reader = datadir.reader()
    unchecked: dict[str, int] = {}  # shard -> tracks stored without checksums
    for row in df.itertuples(index=False):
        uid = row.uid
        for col in ("uid", "dataset", "track_id", "split", "shard", "key", "n_frames", "norm", "config_hash"):
            if _empty(getattr(row, col)):
                res.problems.append(f"{uid}: column {col} is empty")
        if row.split not in ("train", "valid", "test"):
            res.problems.append(f"{uid}: split {row.split!r} is not train/valid/test")
        if row.config_hash != cfg.hash:
            res.problems.append(f"{uid}: config hash {row.config_hash} differs from the DataDir's {cfg.hash}")
        if _empty(row.shard) or _empty(row.key):
            continue
        if not (datadir.path / row.shard).exists():
            res.problems.append(f"{uid}: shard {row.shard} is missing")
            continue
        try:
            g = reader.group(row.shard, row.key)
        except StemforgeError as exc:
            res.problems.append(f"{uid}: {exc}")
            continue
        n_frames = int(row.n_frames)
        if g.attrs.get("config_hash") != cfg.hash:
            res.problems.append(f"{uid}: track config hash {g.attrs.get('config_hash')} differs from {cfg.hash}")
        if g.attrs.get("uid") != uid:
            res.problems.append(f"{uid}: group {row.shard}:{row.key} holds {g.attrs.get('uid')!r}")
        for name in MAG_FIELDS:
            if name not in g:
                res.problems.append(f"{uid}: {name} missing in {row.shard}")
                continue
            ds = g[name]
            if ds.shape != mag_shape(cfg, n_frames):
                res.problems.append(f"{uid}: {name} shape {ds.shape}, expected {mag_shape(cfg, n_frames)}")
            if ds.dtype != np.float16:
                res.problems.append(f"{uid}: {name} dtype {ds.dtype}, expected float16")
            if check_values:
                _check_array(res, uid, row.shard, name, ds, negative=True, unchecked=unchecked)
        for name in WAVE_FIELDS:
            key = f"wave_{name}"
            if key not in g:
                res.problems.append(f"{uid}: waveform {name} missing in {row.shard}")
                continue
            n_samples = g[key].shape[0]
            wave_shape = (n_samples,) if cfg.channels == 1 else (n_samples, cfg.channels)
            if g[key].shape != wave_shape:
                res.problems.append(f"{uid}: waveform {name} shape {g[key].shape}, expected {wave_shape}")
            elif cfg.n_frames(n_samples) != n_frames:
                res.problems.append(f"{uid}: waveform {name} has {n_samples} samples, not {n_frames} frames' worth")
            if check_values:
                _check_array(res, uid, row.shard, key, g[key], negative=False, unchecked=unchecked)
        if "vocal_energy" not in g or g["vocal_energy"].shape != (n_frames,):
            res.problems.append(f"{uid}: vocal_energy missing or of the wrong shape")
        elif check_values:
            _check_array(res, uid, row.shard, "vocal_energy", g["vocal_energy"], negative=False, unchecked=unchecked)
    reader.close()
    for shard, n in sorted(unchecked.items()):
        res.warnings.append(
            f"{shard}: no checksum (written by an older stemforge) for {n} track(s); their values are checked, "
            "their bytes cannot be; re-ingest with --force to add checksums"
        )
    referenced = set(df["shard"].dropna())
    for p in datadir.shard_files():
        rel = datadir.relative(p)
        if rel not in referenced:
            res.problems.append(f"{rel}: orphan shard (no manifest row references it)")
    if datadir.shards_path.exists():
        for p in datadir.shards_path.glob(f"*{TMP_SUFFIX}"):
            res.problems.append(f"{datadir.relative(p)}: half-written shard (removed by the next write)")
    for problem in leakage(df):
        res.problems.append(problem)
    from stemforge.store.lineage import stale_remixes

    for uid, why in stale_remixes(df):
        res.problems.append(f"{uid}: remix would leak a held-out song ({why}); `stemforge augment` drops it")
    return res


def _check_array(
    res: ValidationResult, uid: str, shard: str, name: str, ds, negative: bool, unchecked: dict[str, int]
) -> None:
    """Read ``ds`` whole in blocks: finite values (and no negative magnitude when ``negative``),
    and its bytes against the CRC-32 stored with it. One problem line at most per array."""
    bad: list[str] = []

    def each(block: np.ndarray) -> None:
        if bad:
            return
        if not np.isfinite(block).all():
            bad.append("has non-finite values")
        elif negative and (block < 0).any():
            bad.append("has negative magnitudes")

    what = name if not name.startswith("wave_") else f"waveform {name[5:]}"
    try:
        got = dataset_checksum(ds, each=each)
        expected = stored_checksum(ds)
    except (OSError, RuntimeError, ValueError) as exc:
        res.problems.append(f"{uid}: {what} in {shard} is unreadable ({exc})")
        return
    if expected is None:
        if name == MAG_FIELDS[0]:
            unchecked[shard] = unchecked.get(shard, 0) + 1
    elif got != expected:
        also = f"; it {bad[0]}" if bad else ""
        res.problems.append(f"{uid}: {what} in {shard} fails its checksum (damaged on disk{also}; re-run the ingest to redo it)")
        return
    if bad:
        res.problems.append(f"{uid}: {what} {bad[0]}")


def leakage(df: pd.DataFrame) -> list[str]:
    """Songs (song_key) present in more than one split: each is one problem line."""
    if df.empty or "song_key" not in df:
        return []
    keyed = df[~df["song_key"].isna() & (df["song_key"] != "")]
    splits = keyed.groupby("song_key")["split"].agg(lambda s: sorted(set(s)))
    return [f"song {k!r} is in several splits: {', '.join(v)}" for k, v in splits.items() if len(v) > 1]


def geometry_bytes_per_hour(config: SpectrogramConfig) -> dict[str, int]:
    """Bytes one hour of audio takes in the shards at ``config``, from the layout alone:
    ``magnitudes`` (three float16 ``[n_frames, channels, n_bins]``), ``waveforms`` (two float32
    ``[n_samples, channels]``), ``vocal_energy`` and their ``total`` (HDF5's own records and
    the last chunk's padding aside). 807 MB at the seed geometry, 6.35 GB at fullband."""
    frames = 3600.0 * config.sample_rate / config.hop_length
    mags = int(round(3 * frames * config.channels * config.n_bins * 2))
    waves = int(round(2 * 3600.0 * config.sample_rate * config.channels * 4))
    energy = int(round(frames * 4))
    return {"magnitudes": mags, "waveforms": waves, "vocal_energy": energy, "total": mags + waves + energy}


def summary(datadir: DataDir) -> dict:
    """What ``stemforge info`` shows: tracks and hours per dataset x split, by kind, shards,
    bytes, the geometry (config, preset name, a one-line description) and bytes per hour of
    audio: ``bytes_per_hour`` measured (shard bytes / stored hours; None while empty) and
    ``geometry_bytes_per_hour`` from the layout (:func:`geometry_bytes_per_hour`)."""
    df = datadir.reload()
    shards = datadir.shard_files()
    table = []
    if len(df):
        for (dataset, split), part in df.groupby(["dataset", "split"], sort=True):
            table.append({"dataset": dataset, "split": split, "tracks": len(part), "hours": part["duration_s"].sum() / 3600})
    kinds = []
    if len(df):
        remix = df["vocals_kind"] == "remix"
        for split in ("train", "valid", "test"):
            sel = df["split"] == split
            kinds.append(
                {
                    "split": split,
                    "ingested_h": df.loc[sel & ~remix, "duration_s"].sum() / 3600,
                    "remix_h": df.loc[sel & remix, "duration_s"].sum() / 3600,
                    "total_h": df.loc[sel, "duration_s"].sum() / 3600,
                }
            )
    dups = df[~df["duplicate_of"].isna() & (df["duplicate_of"] != "")] if len(df) else df
    hours = float(df["duration_s"].sum()) / 3600 if len(df) else 0.0
    n_bytes = sum(p.stat().st_size for p in shards)
    cfg = datadir.config
    return {
        "path": str(datadir.path.resolve()),
        "config": cfg.to_dict(),
        "config_hash": cfg.hash,
        "preset": cfg.preset_name,
        "geometry": cfg.geometry(),
        "tracks": len(df),
        "hours": hours,
        "table": table,
        "kinds": kinds,
        "shards": len(shards),
        "bytes": n_bytes,
        "bytes_per_hour": n_bytes / hours if hours > 0 else None,
        "geometry_bytes_per_hour": geometry_bytes_per_hour(cfg),
        "duplicates": [(r.uid, r.duplicate_of) for r in dups.itertuples()],
        "leaks": leakage(df),
        "created_by": datadir.meta.get("created_by"),
        "updated": datadir.meta.get("updated"),
    }


def summary_report(s: dict, out: Callable[[str], None], err: Callable[[str], None]) -> None:
    """What ``stemforge info`` says of :func:`summary` ``s``: sizes, geometry, bytes per hour,
    config, the tables, duplicates to ``out``; leaks to ``err`` (none: a line saying so to ``out``)."""
    out(f"DataDir {s['path']}  ({s['tracks']} tracks, {s['hours']:.2f} h, {s['shards']} shards, {s['bytes'] / 1e6:.1f} MB)")
    preset = f"preset {s['preset']}" if s["preset"] else "no preset"
    out(f"geometry: {s['geometry']} ({preset})")
    g = s["geometry_bytes_per_hour"]
    measured = f"{s['bytes_per_hour'] / 1e9:.2f} GB measured" if s["bytes_per_hour"] else "nothing stored yet"
    out(
        f"bytes per hour of audio: {measured}; {g['total'] / 1e9:.2f} GB by the layout "
        f"(magnitudes {g['magnitudes'] / 1e9:.2f} GB, waveforms {g['waveforms'] / 1e9:.2f} GB)"
    )
    out(f"config {s['config_hash']}: " + ", ".join(f"{k}={v}" for k, v in s["config"].items()))
    out("")
    out(format_table(s["table"]))
    if s["kinds"]:
        out("")
        out(format_table(s["kinds"]))
    if s["duplicates"]:
        out("")
        out(f"duplicates ({len(s['duplicates'])}, stored once; the other row points to it):")
        for uid, of in s["duplicates"]:
            out(f"  {uid} -> {of}")
    out("")
    for line in s["leaks"]:
        err(f"leak: {line}")
    if not s["leaks"]:
        out("no song is in more than one split")
