"""What tests/unit/evaluate/test_musdb18_protocol.py and
tests/integration/test_musdb18_protocol_runs.py share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


SR = 8000


STEMS = ("mixture", "drums", "bass", "other", "vocals")


def _song(rng: np.random.Generator, seconds: float) -> dict[str, np.ndarray]:
    """Stereo [samples, 2] stems with some structure (a tone and noise per stem)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = {}
    for k, (f, g) in enumerate(((110.0, 0.3), (55.0, 0.2), (440.0, 0.15), (660.0, 0.25))):
        env = 0.5 + 0.5 * np.sin(2 * np.pi * (0.3 + 0.1 * k) * t)
        sig = g * env * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(n)
        out[("drums", "bass", "other", "vocals")[k]] = np.stack([sig, 0.8 * sig + 0.02 * rng.standard_normal(n)], axis=1)
    out["vocals"][int(1.0 * SR) : int(2.0 * SR)] = 0.0  # a silent second: undefined frames
    out["mixture"] = out["drums"] + out["bass"] + out["other"] + out["vocals"]
    return out


def _hq_corpus(root: Path, names: dict[str, list[str]], seconds: float = 5.0, seed: int = 0) -> dict[str, dict]:
    """A MUSDB18-HQ layout ``{subset}/{name}/{stem}.wav`` (float wavs); returns name -> stems."""
    rng = np.random.default_rng(seed)
    songs = {}
    for subset, items in names.items():
        for name in items:
            folder = root / subset / name
            folder.mkdir(parents=True)
            s = _song(rng, seconds)
            for stem in STEMS:
                sf.write(folder / f"{stem}.wav", s[stem].astype(np.float32), SR, subtype="FLOAT")
            songs[name] = s
    return songs

