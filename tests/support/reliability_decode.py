"""What tests/unit/core/test_reliability_decode.py and
tests/integration/test_reliability_decode_memory.py share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """``[samples, channels]`` float32 at -10 dBFS (soundfile's layout)."""
    t = np.arange(int(round(seconds * rate))) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * freq * (1 + c / 4) * t) for c in range(channels)], axis=1).astype(np.float32)


def write_flac(path: Path, seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> Path:
    sf.write(path, tone(seconds, rate, channels, freq), rate, subtype="PCM_16")
    return path


def set_total_samples(path: Path, n: int) -> Path:
    """Rewrite the 36-bit total-samples field of a FLAC's STREAMINFO (0: unknown length)."""
    b = bytearray(path.read_bytes())
    assert b[:4] == b"fLaC" and b[4] & 0x7F == 0  # STREAMINFO is the first metadata block
    field = slice(8 + 10, 8 + 18)  # sample rate 20 bits, channels 3, bits 5, total samples 36
    v = int.from_bytes(b[field], "big")
    v = (v & ~((1 << 36) - 1)) | n
    b[field] = v.to_bytes(8, "big")
    path.write_bytes(bytes(b))
    return path


def hostile_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Name -> (file, a word its one-line reason holds)."""
    folder.mkdir(parents=True, exist_ok=True)
    one_hz = write_flac(folder / "day_at_1hz.flac", 86400, 1)  # 86,400 samples: the file
    claims_day = set_total_samples(write_flac(folder / "claims_a_day.flac", 1.0, 16000), 86400 * 16000)
    fast = write_flac(folder / "rate_655k.flac", 0.2, 655350)
    many = folder / "sixteen_channels.wav"
    sf.write(many, np.zeros((1000, 16), np.float32), 16000)
    return {
        "1 Hz": (one_hz, "sample rate 1 Hz"),
        "claims a day": (claims_day, "86400.0 s"),
        "655 kHz": (fast, "sample rate 655350 Hz"),
        "16 channels": (many, "16 channels"),
    }

