"""Build the reference manifests in stemforge/manifests/ (the package's copy, the only one, installed
with it) from the public facts in ../shared/reference/.

Run from the repository root: ``python tools/make_manifests.py [REFERENCE_DIR]``. The package
reads only stemforge/manifests/ (never the reference folder) at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "stemforge" / "manifests"


def dsd100(ref: Path) -> pd.DataFrame:
    """DSD100 track list: id, folder name, subset, and our split.

    The validation list: the DSD100 Dev songs that MUSDB18 holds out for validation (5 songs),
    so that a song is valid in both corpora.
    """
    tracks = json.loads((ref / "sisec2016_dsd100_tracklist.json").read_text())
    musdb = pd.read_csv(ref / "musdb18_tracks.csv")
    musdb = musdb[musdb["source"] == "DSD"].set_index("dsd100_id")
    rows = []
    for t in tracks:
        i = int(t["id"])
        subset = "Test" if i <= 50 else "Dev"
        m = musdb.loc[i] if i in musdb.index else None
        musdb_valid = bool(m is not None and m["musdb_valid_split"])
        split = "test" if subset == "Test" else ("valid" if musdb_valid else "train")
        # The SiSEC list names song 081 as MUSDB18 does ("Set Free Me"); the DSD100 folder says
        # "Set Me Free". The MUSDB18 table records the folder name: prefer it.
        folder = m["dsd100_folder_guess"] if m is not None and isinstance(m["dsd100_folder_guess"], str) else f"{i:03d} - {t['name']}"
        name = folder.split(" - ", 1)[1]
        artist, _, title = name.partition(" - ")
        rows.append(
            {
                "dsd100_id": i,
                "folder": folder,
                "name": name,
                "artist": artist,
                "title": title,
                "subset": subset,
                "split": split,
                "genre": t.get("genre", ""),
                "musdb_name": "" if m is None else m["musdb_name"],
                "musdb_subset": "" if m is None else m["musdb_subset"],
            }
        )
    return pd.DataFrame(rows).sort_values("dsd100_id")


SINGING = ("male singer", "female singer", "vocalists", "choir", "male rapper", "female rapper")


def _song_key(artist: str, title: str) -> str:
    sys.path.insert(0, str(ROOT))
    from stemforge.recipes.identity import song_key

    return song_key(artist, title)


def _musdb_split(row) -> str:
    if row["musdb_subset"] == "test":
        return "test"
    return "valid" if str(row["musdb_valid_split"]) == "True" else "train"


def musdb18(ref: Path) -> pd.DataFrame:
    """MUSDB18 track list: name, artist, title, subset, split (the 14 validation tracks -> valid),
    source corpus, DSD100 id/subset, MedleyDB id."""
    m = pd.read_csv(ref / "musdb18_tracks.csv", dtype=str, keep_default_na=False)
    rows = []
    for r in m.to_dict("records"):
        artist, _, title = r["musdb_name"].partition(" - ")
        rows.append(
            {
                "name": r["musdb_name"],
                "artist": artist,
                "title": title,
                "subset": r["musdb_subset"],
                "split": _musdb_split(r),
                "source": r["source"],
                "license": r["license"],
                "dsd100_id": r["dsd100_id"],
                "dsd100_subset": r["dsd100_subset"],
                "medleydb_track_id": r["medleydb_track_id"],
            }
        )
    return pd.DataFrame(rows).sort_values("name")


def _load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def medleydb_tracks(ref: Path) -> pd.DataFrame:
    """MedleyDB: one row per track: version (V1/V2/EXTRA/BACH10), split artist (the artist index),
    the song's artist/title from its metadata, flags, the reference voice stems, the MUSDB18 name
    and split where MUSDB18 also holds the track."""
    t = pd.read_csv(ref / "medleydb_tracks.csv", dtype=str, keep_default_na=False)
    artists = json.loads((ref / "medleydb_artist_index.json").read_text())
    musdb = musdb18(ref)
    musdb_by_id = {r["medleydb_track_id"]: r for r in musdb.to_dict("records") if r["medleydb_track_id"]}
    rows = []
    for r in t.to_dict("records"):
        tid = r["track_id"]
        meta = _load_yaml(ref / "medleydb-metadata" / f"{tid}_METADATA.yaml")
        mu = musdb_by_id.get(tid)
        rows.append(
            {
                "track_id": tid,
                "version": r["dataset_version"],
                "split_artist": artists.get(tid, str(meta.get("artist", ""))),
                "artist": str(meta.get("artist", "")),
                "title": str(meta.get("title", "")),
                "instrumental_flag": r["instrumental_flag"],
                "has_bleed": r["has_bleed"],
                "n_stems": r["n_stems"],
                "voice_stems": r["voice_stems"],
                "musdb18_name": r["musdb18_name"],
                "musdb18_split": "" if mu is None else mu["split"],
            }
        )
    return pd.DataFrame(rows).sort_values("track_id")


def medleydb_mixing_coefficients(ref: Path) -> pd.DataFrame:
    """One gain per (track, stem index): MIX = sum(gain * STEM).

    The rule (as the MedleyDB tools mix stems): the ``manual`` coefficients when the track has
    them for every stem, otherwise the mean of the ``audio`` and ``stft`` estimates.
    """
    import yaml

    coeffs = yaml.safe_load((ref / "medleydb_mixing_coefficients_version2.yaml").read_text())
    sys.path.insert(0, str(ROOT))
    from stemforge.recipes.medleydb import resolve_coefficients

    rows = []
    for tid in sorted(coeffs):
        gains, method = resolve_coefficients(coeffs[tid])
        for s in sorted(gains):
            rows.append({"track_id": tid, "stem": int(s), "gain": round(gains[s], 6), "method": method})
    return pd.DataFrame(rows)


def medleydb_taxonomy(ref: Path) -> pd.DataFrame:
    """Every instrument label with its family; voices carry voice_group singing|other
    (``--voices singing`` keeps singers, vocalists, choir and rappers; ``all`` adds the rest)."""
    tax = _load_yaml(ref / "medleydb_taxonomy.yaml")
    rows = []

    def walk(node, family: str, subfamily: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, family or k, subfamily if not family else k)
        elif isinstance(node, list):
            for label in node:
                group = ""
                if family == "voices":
                    group = "singing" if label in SINGING else "other"
                rows.append({"label": label, "family": family, "subfamily": subfamily, "voice_group": group})

    for family, node in tax.items():
        walk(node, family, "")
    df = pd.DataFrame(rows)
    voices = set(df.loc[df["family"] == "voices", "label"])
    missing = set(SINGING) - voices
    if missing:
        raise SystemExit(f"singing labels {missing} are not in the taxonomy's voices family")
    return df


def ikala_tracks(ref: Path) -> pd.DataFrame:
    """The 252 iKala clips: clip id, song id (the number before the section), section, md5 of the wav."""
    index = json.loads((ref / "ikala_index.json").read_text())
    rows = []
    for clip, files in sorted(index["tracks"].items()):
        song, _, section = clip.partition("_")
        rows.append({"clip_id": clip, "song_id": song, "section": section, "audio_md5": files["audio"][1]})
    return pd.DataFrame(rows)


def aliases(ref: Path) -> pd.DataFrame:
    """song_key aliases (alias -> canonical key) and per-row key pins (uid -> key).

    * DSD100 names that differ from MUSDB18's after normalization -> the MUSDB18 key;
    * MUSDB18 names of MedleyDB tracks -> the MedleyDB key (artist and title of its metadata);
    * MedleyDB tracks whose metadata gives another track's artist and title -> a key made from
      the track id.
    """
    rows = []
    musdb = musdb18(ref)
    dsd = json.loads((ref / "sisec2016_dsd100_tracklist.json").read_text())
    dsd_by_id = {int(t["id"]): t["name"] for t in dsd}
    raw = pd.read_csv(ref / "musdb18_tracks.csv", dtype=str, keep_default_na=False)
    folders = {n: f.partition(" - ")[2] for n, f in zip(raw["musdb_name"], raw["dsd100_folder_guess"]) if f}
    seen: set[str] = set()
    for r in musdb.to_dict("records"):
        mkey = _song_key(r["artist"], r["title"])
        if r["dsd100_id"]:
            # the SiSEC list and the real DSD100 folder names do not always agree (081: the
            # folder says "Set Me Free", the list and MUSDB18 "Set Free Me"): alias both
            names = {dsd_by_id[int(float(r["dsd100_id"]))], folders.get(r["name"], "")}
            for name in sorted(n for n in names if n):
                a, _, t = name.partition(" - ")
                dkey = _song_key(a, t)
                if dkey != mkey and dkey not in seen:
                    seen.add(dkey)
                    rows.append({"uid": "", "alias": dkey, "song_key": mkey, "note": f"DSD100 name of MUSDB18 {r['name']!r}"})
    med = medleydb_tracks(ref)
    keys: dict[str, list[str]] = {}
    for r in med.to_dict("records"):
        keys.setdefault(_song_key(r["artist"], r["title"]), []).append(r["track_id"])
    for key, ids in sorted(keys.items()):
        if len(ids) > 1:
            for tid in ids:
                artist = med.loc[med["track_id"] == tid, "artist"].iloc[0]
                pinned = _song_key(artist, split_camel(tid.partition("_")[2]))
                rows.append(
                    {"uid": f"medleydb:{tid}", "alias": "", "song_key": pinned,
                     "note": f"MedleyDB metadata gives {len(ids)} tracks the key {key!r}"}
                )
    for r in med.to_dict("records"):
        if r["musdb18_name"]:
            a, _, t = r["musdb18_name"].partition(" - ")
            mkey, key = _song_key(a, t), _song_key(r["artist"], r["title"])
            if mkey != key:
                rows.append({"uid": "", "alias": mkey, "song_key": key, "note": f"MUSDB18 name of MedleyDB {r['track_id']}"})
    return pd.DataFrame(rows, columns=["uid", "alias", "song_key", "note"])


def split_camel(text: str) -> str:
    sys.path.insert(0, str(ROOT))
    from stemforge.recipes.identity import split_camel as f

    return f(text)


def main() -> None:
    ref = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "reference"
    OUT.mkdir(exist_ok=True)
    tables = {
        "dsd100_tracks": dsd100,
        "musdb18_tracks": musdb18,
        "medleydb_tracks": medleydb_tracks,
        "medleydb_mixing_coefficients": medleydb_mixing_coefficients,
        "medleydb_taxonomy": medleydb_taxonomy,
        "ikala_tracks": ikala_tracks,
        "aliases": aliases,
    }
    for name, build in tables.items():
        df = build(ref)
        df.to_csv(OUT / f"{name}.csv", index=False)
        print(f"wrote {OUT / (name + '.csv')} ({len(df)} rows)")


if __name__ == "__main__":
    main()
