"""The manifest: one row per stored track, a pandas DataFrame saved as ``manifest.csv``.

:data:`COLUMNS` is the schema (name -> (dtype, description)); docs/data-format.md shows the same
table. Recipes may add columns of their own (alignment figures of karaoke pairs, ...); unknown
columns are kept as they are.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from stemforge.core import files
from stemforge.core.errors import ManifestError

#: name -> (pandas dtype, description). The order is the column order on disk.
COLUMNS: dict[str, tuple[str, str]] = {
    "uid": ("string", "dataset:track_id, unique per row"),
    "dataset": ("string", "corpus the track came from (dsd100, musdb, medleydb, ..., remix)"),
    "track_id": ("string", "the corpus's own id of the track"),
    "song_key": ("string", "normalized 'artist - title' identity of the song across corpora"),
    "artist": ("string", "artist as the corpus names it"),
    "title": ("string", "title as the corpus names it"),
    "split": ("string", "train, valid or test (by song, never by chunk)"),
    "vocals_kind": ("string", "stem, channel, derived (karaoke subtraction) or remix"),
    "source_path": ("string", "path of the track's first source file, relative to the corpus root"),
    "source_sample_rate": ("Int64", "sample rate of the source files (Hz)"),
    "source_channels": ("Int64", "channels of the source files"),
    "duration_s": ("float64", "duration of the stored 16 kHz waveforms (s)"),
    "n_frames": ("Int64", "STFT frames stored"),
    "shard": ("string", "shard file, relative to the DataDir"),
    "key": ("string", "HDF5 group of the track inside its shard"),
    "norm": ("float64", "what the three magnitudes were divided by: the max mixture magnitude (max_mixture) or 1.0 (none)"),
    "vocal_activity": ("float64", "fraction of frames with voice (see dsp.vocal_activity)"),
    "mix_residual_db": ("float64", "energy of mixture - (vocals + accompaniment) re. the mixture (dB); empty when the mixture is derived"),
    "duplicate_of": ("string", "uid of the stored row of the same song when this row is a duplicate; empty otherwise"),
    "parents": ("string", "remix lineage as JSON (vocal uid, accompaniment uid, offsets, gains); empty otherwise"),
    "license": ("string", "licence of the source corpus"),
    "config_hash": ("string", "SpectrogramConfig hash the arrays were made with"),
    "stemforge_version": ("string", "version of stemforge that wrote the row"),
    "source_fingerprint": ("string", "content fingerprint of the source files and recipe options (re-runs skip unchanged tracks)"),
}

REQUIRED = ("uid", "dataset", "track_id", "split", "n_frames", "shard", "key", "norm", "config_hash")


def empty_manifest() -> pd.DataFrame:
    """A manifest with every column and no row."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, (dtype, _) in COLUMNS.items()})


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Give known columns their dtype and order (known first, then extra columns)."""
    df = df.copy()
    for name, (dtype, _) in COLUMNS.items():
        if name not in df.columns:
            df[name] = pd.Series([None] * len(df), dtype=dtype, index=df.index)
        else:
            try:
                df[name] = df[name].astype(dtype)
            except (TypeError, ValueError) as exc:
                raise ManifestError(f"manifest column {name!r} cannot be read as {dtype}: {exc}") from None
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra].reset_index(drop=True)


def read_manifest(path: Path, data: bytes | None = None) -> pd.DataFrame:
    """Read ``manifest.csv`` (or ``data``, its bytes read already: ``path`` then only names it
    in errors); ManifestError when missing columns, duplicate uids or unreadable."""
    if data is None and not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    try:
        source = path if data is None else io.BytesIO(data)
        df = pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing and len(df.columns):
        raise ManifestError(f"{path}: manifest lacks columns {missing}")
    df = coerce(df)
    dup = df["uid"][df["uid"].duplicated()].tolist()
    if dup:
        raise ManifestError(f"{path}: duplicate uids {dup[:5]}")
    return df


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically (``core.files``: temp file beside it, fsync, rename;
    mode as ``open()`` gives under the umask). A full disk raises DiskFullError and leaves the
    previous manifest as it was."""
    text = coerce(df).to_csv(index=False, float_format="%.10g")
    files.write_text(path, text)


def upsert(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """``df`` with ``rows`` added; a row whose uid is already there replaces it."""
    if not rows:
        return df
    new = coerce(pd.DataFrame(rows))
    keep = df[~df["uid"].isin(set(new["uid"]))]
    both = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    return coerce(both)


def hours(df: pd.DataFrame) -> float:
    """Total duration of ``df``'s rows in hours."""
    return float(np.nansum(df["duration_s"].astype("float64").to_numpy())) / 3600.0
