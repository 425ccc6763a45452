"""Build the reference manifests in manifests/ from the public facts in ../shared/reference/.

Run from the repository root: ``python tools/make_manifests.py [REFERENCE_DIR]``. The package
reads only manifests/ (never the reference folder) at run time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "manifests"


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
        artist, _, title = t["name"].partition(" - ")
        rows.append(
            {
                "dsd100_id": i,
                "folder": f"{i:03d} - {t['name']}",
                "name": t["name"],
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


def main() -> None:
    ref = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "reference"
    OUT.mkdir(exist_ok=True)
    dsd100(ref).to_csv(OUT / "dsd100_tracks.csv", index=False)
    print(f"wrote {OUT / 'dsd100_tracks.csv'}")


if __name__ == "__main__":
    main()
