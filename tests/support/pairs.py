"""What tests/unit/karaoke/test_pairs.py and tests/integration/test_pairs_real.py share."""

from __future__ import annotations

import numpy as np

from stemforge.core import audio


SR_ORIG = 44100


SR_KAR = 48000


def _envelope(n: int, sample_rate: int, attack_s: float, decay_s: float) -> np.ndarray:
    t = np.arange(n) / sample_rate
    env = np.minimum(t / attack_s, 1.0) * np.exp(-t / decay_s)
    release = min(n, int(0.02 * sample_rate))
    env[n - release :] *= np.linspace(1.0, 0.0, release)
    return env


def _harmonic_sum(phase: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """``sum_h amps[h-1] sin(h phase)`` by the Chebyshev recurrence (one sin and cos in all)."""
    two_cos = 2.0 * np.cos(phase)
    prev = np.zeros_like(phase)
    cur = np.sin(phase)
    out = amps[0] * cur
    for amp in amps[1:]:
        prev, cur = cur, two_cos * cur - prev
        out += amp * cur
    return out


def make_song(rng: np.random.Generator, seconds: float, sample_rate: int = SR_ORIG) -> tuple[np.ndarray, np.ndarray]:
    """A music-like ``(vocals, accompaniment)`` pair of ``[samples]`` float32 arrays at ``sample_rate``.

    Accompaniment: chords of harmonic notes with random onsets and timbres, a bass line, noise
    bursts (drums) on a jittered beat grid. Vocals: a harmonic source with vibrato and a
    formant-like envelope, sung in phrases separated by pauses.
    """
    n = int(seconds * sample_rate)
    acc = np.zeros(n)
    voc = np.zeros(n)
    t_all = np.arange(n) / sample_rate
    # Harmonic notes (chords).
    pos = 0.0
    while pos < seconds:
        dur = rng.uniform(0.25, 1.2)
        for _ in range(rng.integers(1, 4)):
            f0 = 110.0 * 2 ** (rng.integers(0, 36) / 12)
            a, b = int(pos * sample_rate), min(n, int((pos + dur) * sample_rate))
            if b - a < 64:
                continue
            t = t_all[: b - a]
            tilt = rng.uniform(0.6, 1.5)
            n_harm = int(min(11, 0.45 * sample_rate // f0))
            note = _harmonic_sum(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi), 1.0 / np.arange(1, n_harm + 1) ** tilt)
            acc[a:b] += 0.15 * note * _envelope(b - a, sample_rate, 0.01, rng.uniform(0.2, 1.0))
        pos += rng.uniform(0.15, 0.6)
    # Bass line.
    pos = 0.0
    while pos < seconds:
        dur = rng.uniform(0.2, 0.6)
        f0 = 41.2 * 2 ** (rng.integers(0, 15) / 12)
        a, b = int(pos * sample_rate), min(n, int((pos + dur) * sample_rate))
        t = t_all[: b - a]
        note = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(4 * np.pi * f0 * t) + 0.2 * np.sin(6 * np.pi * f0 * t)
        acc[a:b] += 0.25 * note * _envelope(b - a, sample_rate, 0.005, 0.4)
        pos += dur
    # Noise bursts on a jittered beat grid (kick-like low, snare/hat-like bright).
    beat = rng.uniform(0.22, 0.32)
    pos = rng.uniform(0.0, beat)
    while pos < seconds:
        a = int((pos + rng.normal(0, 0.004)) * sample_rate)
        length = int(rng.uniform(0.05, 0.25) * sample_rate)
        a = max(a, 0)
        b = min(n, a + length)
        if b - a > 32:
            burst = rng.standard_normal(b - a)
            if rng.random() < 0.5:  # bright: first difference whitens upwards
                burst = np.diff(burst, prepend=0.0)
            else:  # dark: one-pole lowpass
                from scipy.signal import lfilter

                burst = lfilter([0.08], [1.0, -0.92], burst)
            acc[a:b] += rng.uniform(0.1, 0.3) * burst * _envelope(b - a, sample_rate, 0.002, rng.uniform(0.02, 0.08))
        pos += beat * rng.choice([0.5, 1.0, 1.0, 2.0])
    # Voice: phrases of sung notes with vibrato and formants, pauses between phrases.
    pos = rng.uniform(0.5, 2.0)
    while pos < seconds:
        phrase = rng.uniform(1.5, 4.0)
        note_pos = pos
        while note_pos < min(pos + phrase, seconds):
            dur = rng.uniform(0.2, 0.8)
            a, b = int(note_pos * sample_rate), min(n, int((note_pos + dur) * sample_rate))
            if b - a < 256:
                break
            t = t_all[: b - a]
            f0 = 196.0 * 2 ** (rng.integers(0, 15) / 12)
            vib = 1.0 + 0.012 * np.sin(2 * np.pi * rng.uniform(5.0, 6.5) * t) * np.minimum(t / 0.2, 1.0)
            phase = 2 * np.pi * np.cumsum(f0 * vib) / sample_rate
            formants = rng.choice([(700, 1200), (400, 2000), (300, 2500), (500, 900)])
            fh = f0 * np.arange(1, int(min(24, 0.45 * sample_rate // (f0 * 1.02))) + 1)
            amps = sum(np.exp(-0.5 * ((fh - fc) / 150.0) ** 2) for fc in formants) + 0.05 / np.arange(1, fh.size + 1)
            note = _harmonic_sum(phase, amps)
            voc[a:b] += 0.12 * note * _envelope(b - a, sample_rate, 0.04, 2.0)
            note_pos += dur
        pos += phrase + rng.uniform(0.5, 2.0)
    return voc.astype(np.float32), acc.astype(np.float32)


def make_karaoke(
    rng: np.random.Generator,
    accompaniment: np.ndarray,
    offset_s: float,
    gain_db: float,
    tail_s: float,
    sample_rate: int = SR_ORIG,
    karaoke_rate: int = SR_KAR,
) -> np.ndarray:
    """The accompaniment as a karaoke file: at ``karaoke_rate``, ``-gain_db`` dB quieter, and

    * ``offset_s > 0``: preceded by ``offset_s`` seconds of other material (an intro);
    * ``offset_s < 0``: its first ``-offset_s`` seconds cut off;
    * ``tail_s > 0``: followed by ``tail_s`` seconds of other material; ``< 0``: its end cut.

    ``offset_s`` is rounded to whole samples at ``karaoke_rate`` (the test uses the rounded value).
    """
    kar = audio.resample(accompaniment, sample_rate, karaoke_rate).astype(np.float64)
    shift = int(round(offset_s * karaoke_rate))
    _, other = make_song(rng, abs(offset_s) + abs(tail_s) + 1.0, karaoke_rate)
    if shift > 0:
        kar = np.concatenate([other[:shift], kar])
    elif shift < 0:
        kar = kar[-shift:]
    tail = int(round(tail_s * karaoke_rate))
    if tail > 0:
        kar = np.concatenate([kar, other[-tail:]])
    elif tail < 0:
        kar = kar[:tail]
    return (kar * 10 ** (-gain_db / 20)).astype(np.float32)


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB: ``10 log10(|s|^2 / |s - s_hat|^2)``."""
    ref = reference.astype(np.float64)
    err = ref - estimate.astype(np.float64)
    return float(10 * np.log10(np.dot(ref, ref) / np.dot(err, err)))

