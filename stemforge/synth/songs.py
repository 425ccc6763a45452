"""Procedural songs: vocals that look like a voice to the pipeline's measures, and an accompaniment.

Real singing-voice corpora are licensed, so tests, the demo and the benchmarks run on songs
made here. :func:`synthesize_song` makes one song (vocals, drums, bass, other) from a
``numpy.random.Generator``; :func:`synthesize_multitrack` makes one stem per MedleyDB-style
instrument label. :mod:`stemforge.synth.layouts` writes them in the on-disk layout of each
corpus. See ``docs/synth.md``.

Why procedural and not noise: the pipeline measures vocal activity, aligns karaoke pairs and
separates voice from accompaniment, so the vocals must look like a voice to those measures: a
harmonic source (glottal-pulse-like spectrum, many harmonics) shaped by vowel formants that
change per syllable, vibrato, a melody in a key, syllable envelopes, breaths, and phrases with
rests (roughly a third of a song has no voice). The accompaniment (drums, a bass line,
chords) overlaps the voice in time and frequency.

Speed: everything is built from small templates (one period of a tone, one drum hit, one
note) placed and scaled with numpy; a 3-minute 44.1 kHz stereo song takes a fraction of a
second on one core (``benchmarks/synth.py`` prints the figure).

Determinism: every random choice comes from the Generator given (no global random state).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from stemforge.core.errors import StemforgeError

__all__ = [
    "VOICE_LABELS",
    "SongStems",
    "child_rng",
    "song_names",
    "song_samples",
    "stem_kind",
    "synthesize_multitrack",
    "synthesize_song",
]

#: MedleyDB's ``voices`` family (its taxonomy): stems with one of these labels get a voice.
VOICE_LABELS = frozenset(
    {
        "male singer",
        "female singer",
        "male speaker",
        "female speaker",
        "male rapper",
        "female rapper",
        "beatboxing",
        "vocalists",
        "choir",
        "crowd",
        "male screamer",
        "female screamer",
    }
)
_DRUM_LABELS = frozenset(
    {
        "drum set",
        "drum machine",
        "kick drum",
        "bass drum",
        "snare drum",
        "toms",
        "high hat",
        "cymbal",
        "auxiliary percussion",
        "tambourine",
        "shaker",
        "claps",
        "castanet",
        "bongo",
        "conga",
        "tabla",
        "darbuka",
        "doumbek",
        "timpani",
        "gong",
        "cowbell",
        "cabasa",
        "triangle",
        "sleigh bells",
    }
)
_BASS_LABELS = frozenset({"electric bass", "double bass", "tuba", "bassoon", "bass clarinet", "synth bass"})

# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

_FIRST = (
    "Ada Bruno Clara Dario Elena Felix Greta Hugo Iris Jonas Kira Leon Maya Nils Olga Pablo "
    "Quinn Rosa Sami Tara Ugo Vera Wim Xena Yara Zeno Lena Otto Mira Tomas"
).split()
_LAST = (
    "Abbott Brandt Castell Dorn Ekberg Falk Gruber Hale Ibsen Janssen Krug Lind Moreau Novak "
    "Orsini Pryce Quist Rasmussen Sauer Thorne Ulrich Varga Weller Young Zeller Marsh Holt"
).split()
_ADJ = (
    "Amber Blue Broken Silent Golden Hollow Electric Velvet Northern Restless Paper Crimson "
    "Silver Wild Quiet Burning Faded Distant Gentle Neon Lonely Midnight Bright Frozen Hidden "
    "Lucky Scarlet Wooden Endless Tender"
).split()
_NOUN = (
    "River Harbor Signal Lantern Garden Mirror Engine Comet Feather Island Window Ocean Meadow "
    "Canyon Echo Ember Falcon Glacier Horizon Lighthouse Orchard Planet Shadow Thunder Valley "
    "Whistle Station Tower Compass Anchor Satellite Dancer"
).split()
_VERB = "Chasing Holding Finding Leaving Calling Crossing Counting Painting Dreaming Waiting".split()


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def song_names(rng: np.random.Generator) -> tuple[str, str]:
    """A deterministic (artist, title) from word lists."""
    form = int(rng.integers(3))
    if form == 0:
        artist = f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}"
    elif form == 1:
        artist = f"The {_pick(rng, _ADJ)} {_pick(rng, _NOUN)}s"
    else:
        artist = f"{_pick(rng, _ADJ)} {_pick(rng, _NOUN)}"
    form = int(rng.integers(3))
    if form == 0:
        title = f"{_pick(rng, _ADJ)} {_pick(rng, _NOUN)}"
    elif form == 1:
        title = f"{_pick(rng, _VERB)} the {_pick(rng, _NOUN)}"
    else:
        title = f"{_pick(rng, _NOUN)} of {_pick(rng, _NOUN)}"
    return artist, title


# --------------------------------------------------------------------------------------------
# Music plan
# --------------------------------------------------------------------------------------------

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 3), (5, 3, 0, 4), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 6, 2), (0, 5, 3, 4), (0, 6, 5, 6), (0, 3, 4, 0)),
}
_PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Vowel formants (Hz) and bandwidths for an adult male voice; a female voice scales them.
_VOWELS = {
    "a": ((730, 1090, 2440), (90, 110, 160)),
    "e": ((530, 1840, 2480), (70, 110, 160)),
    "i": ((300, 2290, 3010), (60, 100, 170)),
    "o": ((570, 840, 2410), (80, 90, 160)),
    "u": ((320, 870, 2240), (60, 90, 150)),
}
_VOWEL_NAMES = tuple(_VOWELS)


def _degree_semitones(scale: Sequence[int], degree: int) -> int:
    """Semitones above the tonic of scale degree ``degree`` (0 = tonic, may be negative or > 6)."""
    octave, step = divmod(int(degree), 7)
    return 12 * octave + scale[step]


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


@dataclass
class _Note:
    onset_s: float
    length_s: float  # sounding length
    midi: float
    degree: int = 0  # scale degree relative to the singer's tonic
    vowel: int = 0
    phrase: int = 0


@dataclass
class _Plan:
    """Everything the stems share: tempo, key, chords, the vocal phrases."""

    sample_rate: int
    n_samples: int
    tempo_bpm: float
    beat_s: float
    mode: str
    tonic_pc: int
    chord_beats: int
    progression: tuple[int, ...]
    singer: str  # "male" / "female"
    tonic_midi: int  # the singer's tonic
    melody: list[_Note]
    phrases: list[tuple[float, float]]  # (start_s, end_s)
    drum_pattern: int
    other_style: str  # "pad" / "pluck"

    @property
    def scale(self) -> tuple[int, ...]:
        return _SCALES[self.mode]

    @property
    def seconds(self) -> float:
        return self.n_samples / self.sample_rate

    def chord_at(self, index: int) -> int:
        return self.progression[index % len(self.progression)]


def _plan_song(rng: np.random.Generator, n_samples: int, sample_rate: int) -> _Plan:
    seconds = n_samples / sample_rate
    tempo = round(float(rng.uniform(78.0, 140.0)), 1)
    beat_s = 60.0 / tempo
    mode = "major" if rng.random() < 0.6 else "minor"
    tonic_pc = int(rng.integers(12))
    progression = _PROGRESSIONS[mode][int(rng.integers(len(_PROGRESSIONS[mode])))]
    chord_beats = 8 if tempo > 118 else 4
    singer = "female" if rng.random() < 0.5 else "male"
    scale = _SCALES[mode]
    tonic_midi = (57 if singer == "female" else 45) + (tonic_pc - 9) % 12
    lo, hi = (-3, 7) if singer == "female" else (-3, 6)

    total_beats = seconds / beat_s
    melody: list[_Note] = []
    phrases: list[tuple[float, float]] = []
    # Short intro, never more than a tenth of the song, so even a 2 s clip has voice.
    t = min(float(rng.choice([0.5, 1.0, 2.0])), 0.1 * total_beats)
    degree = int(rng.choice([0, 2, 4]))
    steps = np.array([-2, -1, 0, 1, 2, -4, 3])
    step_p = np.array([0.14, 0.3, 0.1, 0.3, 0.12, 0.02, 0.02])
    phrase_index = 0
    while t < total_beats:
        phrase_beats = float(rng.choice([4.0, 6.0, 8.0]))
        pos = 0.0
        phrase_start = t
        while pos < phrase_beats - 1e-9:
            dur = float(rng.choice([0.5, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0]))
            dur = min(dur, phrase_beats - pos)
            last = pos + dur >= phrase_beats - 1e-9
            articulation = 1.0 if last else float(rng.uniform(0.8, 0.94))
            degree += int(rng.choice(steps, p=step_p))
            if degree < lo:
                degree = lo + (lo - degree)
            if degree > hi:
                degree = hi - (degree - hi)
            degree = int(np.clip(degree, lo, hi))
            midi = tonic_midi + _degree_semitones(scale, degree)
            melody.append(
                _Note(
                    onset_s=(t + pos) * beat_s,
                    length_s=dur * articulation * beat_s,
                    midi=float(midi),
                    degree=degree,
                    vowel=int(rng.integers(len(_VOWELS))),
                    phrase=phrase_index,
                )
            )
            pos += dur
        phrases.append((phrase_start * beat_s, (phrase_start + phrase_beats) * beat_s))
        phrase_index += 1
        t += phrase_beats + float(rng.choice([2.0, 3.0, 4.0]))
    melody = [n for n in melody if n.onset_s < seconds - 0.05]
    return _Plan(
        sample_rate=sample_rate,
        n_samples=n_samples,
        tempo_bpm=tempo,
        beat_s=beat_s,
        mode=mode,
        tonic_pc=tonic_pc,
        chord_beats=chord_beats,
        progression=progression,
        singer=singer,
        tonic_midi=tonic_midi,
        melody=melody,
        phrases=phrases,
        drum_pattern=int(rng.integers(3)),
        other_style="pad" if rng.random() < 0.5 else "pluck",
    )


# --------------------------------------------------------------------------------------------
# DSP building blocks
# --------------------------------------------------------------------------------------------

_TABLE = 2048  # samples per period of a wavetable


def _wavetable(amps: np.ndarray, phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One period (``_TABLE`` samples) with harmonic k+1 of amplitude amps[k], phase phases[k].

    Returns (table, slope), float32, each ``_TABLE + 1`` long (wrapped), normalized to unit
    RMS, for linear interpolation: value(x) = table[i] + (x - i) * slope[i].
    """
    import scipy.fft

    spec = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    k = min(len(amps), _TABLE // 2 - 1)
    spec[1 : k + 1] = amps[:k] * np.exp(1j * phases[:k])
    period = scipy.fft.irfft(spec, n=_TABLE)
    rms = math.sqrt(float(np.dot(period, period)) / _TABLE)
    table = np.empty(_TABLE + 1, dtype=np.float32)
    table[:_TABLE] = period * (1.0 / rms if rms > 0 else 1.0)
    table[_TABLE] = table[0]
    slope = np.empty(_TABLE + 1, dtype=np.float32)
    np.subtract(table[1:], table[:-1], out=slope[:_TABLE])
    slope[_TABLE] = 0.0
    return table, slope


def _oscillate(table: tuple[np.ndarray, np.ndarray], cycles: np.ndarray) -> np.ndarray:
    """Read a wavetable at phase ``cycles`` (float64, in periods) -> float32 samples."""
    return _read_table(table, (cycles - np.floor(cycles)).astype(np.float32))


def _read_table(table: tuple[np.ndarray, np.ndarray], frac: np.ndarray) -> np.ndarray:
    """Read a wavetable at fractional phase ``frac`` (float32 in [0, 1]) with linear interpolation."""
    pos = frac * np.float32(_TABLE)
    idx = pos.astype(np.int32)
    pos -= idx
    tab, slope = table
    out = np.take(slope, idx)
    out *= pos
    out += np.take(tab, idx)
    return out


def _shaped_noise(rng: np.random.Generator, n: int, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """White Gaussian noise band-limited to about [low_hz, high_hz] (4th-order-like skirts), unit RMS."""
    noise = rng.standard_normal(n)
    spec = np.fft.rfft(noise)
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    f[0] = 1e-3
    mask = 1.0 / (1.0 + (low_hz / f) ** 4) / (1.0 + (f / max(high_hz, 1.0)) ** 4)
    out = np.fft.irfft(spec * mask, n=n)
    rms = float(np.sqrt(np.mean(out**2)))
    return (out / (rms if rms > 0 else 1.0)).astype(np.float32)


def _harmonic_amps(f0: float, sample_rate: int, tilt: float, max_harmonics: int = 80) -> np.ndarray:
    """Amplitudes k^-tilt of harmonics k = 1..K, K keeping every harmonic below 0.45 * rate."""
    k_max = max(1, min(max_harmonics, int(0.45 * sample_rate / f0)))
    k = np.arange(1, k_max + 1, dtype=np.float64)
    return k**-tilt


def _add(buf: np.ndarray, start: int, piece: np.ndarray, gain: float = 1.0) -> None:
    """buf[..., start:start+len] += gain * piece, clipped to the buffer (start may be < 0)."""
    n = buf.shape[-1]
    if start >= n:
        return
    a = max(0, -start)
    end = min(n, start + piece.shape[-1])
    if end <= max(start, 0):
        return
    if gain == 1.0:
        buf[..., max(start, 0) : end] += piece[..., a : a + end - max(start, 0)]
    else:
        buf[..., max(start, 0) : end] += gain * piece[..., a : a + end - max(start, 0)]


def _rms(x: np.ndarray) -> float:
    """Root mean square of all samples (BLAS dot product: no temporary array)."""
    if not x.size:
        return 0.0
    flat = np.ascontiguousarray(x).ravel()
    return math.sqrt(max(float(np.dot(flat, flat)), 0.0) / flat.size)


def _peak_of_sum(stems: Sequence[np.ndarray], block: int = 1 << 16) -> float:
    """max |sum(stems)| over every channel and sample, computed block by block (cache-sized)."""
    peak = 0.0
    n = stems[0].shape[-1]
    for a in range(0, n, block):
        acc = stems[0][..., a : a + block].copy()
        for s in stems[1:]:
            acc += s[..., a : a + block]
        peak = max(peak, float(acc.max()), -float(acc.min()))
    return peak


def _pan_rows(buf: np.ndarray, pan: float, gain: float = 1.0) -> np.ndarray:
    """Spread the mono signal in row 0 of ``buf`` [channels, n] over its channels, in place.

    Two channels: a constant-power pan in [-1, 1] (0 = centre, both rows = row 0 * gain);
    one channel: only the gain. Rendering into row 0 of the final array saves a full-length
    temporary (page faults of fresh memory dominate the cost of long songs).
    """
    if buf.shape[0] == 1:
        if gain != 1.0:
            buf *= np.float32(gain)
        return buf
    angle = (pan + 1.0) * math.pi / 4.0
    np.multiply(buf[0], np.float32(gain * math.sin(angle) * math.sqrt(2.0)), out=buf[1])
    buf[0] *= np.float32(gain * math.cos(angle) * math.sqrt(2.0))
    return buf


# --------------------------------------------------------------------------------------------
# Voice
# --------------------------------------------------------------------------------------------


def _formant_gain(freqs: np.ndarray, formants: Sequence[float], bandwidths: Sequence[float]) -> np.ndarray:
    """Complex response of cascaded two-pole resonators (unit gain at DC) at ``freqs`` (Hz)."""
    h = np.ones(freqs.shape, dtype=np.complex128)
    for fc, bw in zip(formants, bandwidths):
        h *= fc * fc / (fc * fc - freqs * freqs + 1j * bw * freqs)
    return h


@dataclass
class _Timbre:
    """One voice's sound, drawn once per voice: formant scale, spectral tilt, vibrato, breath and
    aspiration levels, and the noise material (about 3 s each) its consonants, breaths and
    aspiration are sliced from."""

    formant_scale: float
    tilt: float
    vib_rate: float
    vib_cents: float
    breath_prob: float
    aspiration: float
    fric: np.ndarray  # fricatives (s/sh)
    plos: np.ndarray  # plosive bursts
    breath: np.ndarray
    asp: np.ndarray  # aspiration

    @classmethod
    def draw(cls, rng: np.random.Generator, sr: int, singer: str) -> "_Timbre":
        formant_scale = 1.17 if singer == "female" else 1.0
        formant_scale *= float(rng.uniform(0.96, 1.04))
        tilt = float(rng.uniform(1.0, 1.35))
        vib_rate = float(rng.uniform(5.0, 6.2))
        vib_cents = float(rng.uniform(25.0, 60.0))
        breath_prob = float(rng.uniform(0.5, 0.9))
        aspiration = float(rng.uniform(0.004, 0.012))
        # Noise material, sliced at random offsets: fricatives (s/sh), plosive bursts, breaths.
        n = _NOISE_SAMPLES
        fric = _shaped_noise(rng, n, sr, 3500.0, 0.45 * sr)
        plos = _shaped_noise(rng, n, sr, 900.0, min(7000.0, 0.45 * sr))
        breath = _shaped_noise(rng, n, sr, 500.0, min(3500.0, 0.45 * sr))
        asp = _shaped_noise(rng, n, sr, 1500.0, min(9000.0, 0.45 * sr))
        return cls(formant_scale, tilt, vib_rate, vib_cents, breath_prob, aspiration, fric, plos, breath, asp)


#: Samples of each noise material of a voice: about 3 s at 44.1 kHz, longer than any syllable.
_NOISE_SAMPLES = 1 << 17


def _render_voice(
    plan: _Plan,
    rng: np.random.Generator,
    *,
    transpose_degrees: int = 0,
    singer: str | None = None,
    phrase_keep: float = 1.0,
    channels: int = 1,
) -> tuple[np.ndarray, list[tuple[float, float, float]], float]:
    """A voice, its notes (onset_s, end_s, f0_hz) and its RMS over sung samples.

    The voice is float32 ``[channels, n_samples]`` with the (mono) signal in row 0 and zeros
    elsewhere, ready for :func:`_pan_rows`.

    Each syllable is :func:`_syllable`. Syllable envelopes, consonant-like noise onsets
    (:func:`_consonant`), breath-noise bursts before phrases (:func:`_breaths`) and a little
    pulse-synchronous aspiration noise complete it. ``transpose_degrees`` moves the melody in
    the scale (a harmony part); ``phrase_keep`` is the probability that a phrase is sung
    (backing voices sing some phrases only).
    """
    sr = plan.sample_rate
    n_total = plan.n_samples
    singer = singer or plan.singer
    buf = np.zeros((channels, n_total), dtype=np.float32)
    out = buf[0]
    timbre = _Timbre.draw(rng, sr, singer)
    octave_shift = 0
    if singer != plan.singer:  # a voice of the other kind sings the same line an octave away
        octave_shift = 12 if singer == "female" else -12
    keep = rng.random(max(1, len(plan.phrases))) < phrase_keep
    if phrase_keep >= 1.0:
        keep[:] = True
    elif not keep.any():
        keep[0] = True
    _breaths(out, plan, rng, timbre, keep)
    notes_out: list[tuple[float, float, float]] = []
    t_all = np.arange(int(2.5 * sr) + 1, dtype=np.float64) / sr
    t32_all = t_all.astype(np.float32)
    sung = 0
    sung_energy = 0.0
    for note in plan.melody:
        if not keep[note.phrase]:
            continue
        midi = note.midi + octave_shift
        if transpose_degrees:  # a harmony part: the same rhythm, moved in the scale
            midi = plan.tonic_midi + octave_shift + _degree_semitones(plan.scale, note.degree + transpose_degrees)
        f0 = _midi_hz(midi) * 2.0 ** (rng.normal(0.0, 6.0) / 1200.0)  # slight intonation error
        start = int(round(note.onset_s * sr))
        n = min(int(round(note.length_s * sr)), n_total - start, len(t_all))
        if n <= 16:
            continue
        voiced, level = _syllable(rng, timbre, sr, f0, note.vowel, t_all[:n], t32_all[:n])
        _add(out, start, voiced, level)
        sung += n
        sung_energy += level * level * float(np.dot(voiced, voiced))
        _consonant(out, rng, timbre, sr, start, level)
        notes_out.append((start / sr, (start + n) / sr, float(f0)))
    active_rms = math.sqrt(sung_energy / sung) if sung else 0.0
    return buf, notes_out, active_rms


def _breaths(out: np.ndarray, plan: _Plan, rng: np.random.Generator, timbre: _Timbre, keep: np.ndarray) -> None:
    """Add a breath-noise burst before some of the phrases kept (``keep[i]``) to ``out``."""
    sr = plan.sample_rate
    n_noise = len(timbre.breath)
    for p_index, (p_start, _p_end) in enumerate(plan.phrases):
        if not keep[p_index]:
            continue
        if rng.random() < timbre.breath_prob and p_start > 0.25:
            length = int(sr * rng.uniform(0.15, 0.35))
            start = int(sr * p_start) - length - int(sr * rng.uniform(0.02, 0.08))
            length = min(length, n_noise)
            off = int(rng.integers(0, n_noise - length + 1))
            hump = np.sin(np.linspace(0.0, math.pi, length, dtype=np.float32)) ** 2
            _add(out, start, timbre.breath[off : off + length] * hump, float(rng.uniform(0.05, 0.12)))


def _syllable(
    rng: np.random.Generator, timbre: _Timbre, sr: int, f0: float, vowel: int, t: np.ndarray, t32: np.ndarray
) -> tuple[np.ndarray, float]:
    """One sung syllable of ``n = len(t)`` samples at ``f0`` Hz: float32 ``[n]`` before its level,
    and the level.

    The source is one period of a glottal-pulse-like harmonic series (amplitudes k^-tilt, every
    harmonic below 0.45 * rate) shaped by the vowel's formants (five cascaded resonators: the
    vowel's F1-F3 plus F4, F5), stored as a wavetable and read at an instantaneous phase with an
    onset glide and delayed vibrato (closed form, no per-sample recursion); an envelope (smooth
    attack, slight decay, release) and pulse-synchronous aspiration noise complete it. ``t`` is
    the time of each sample (s, float64), ``t32`` the same in float32.
    """
    n = len(t)
    # Instantaneous phase in cycles: steady f0 + onset glide + delayed, ramped vibrato
    # (closed-form integrals of the frequency curve; transcendental functions only where
    # the term is not zero, in float32 where the precision suffices).
    glide = 2.0 ** (rng.uniform(-80.0, 40.0) / 1200.0) - 1.0
    tau = float(rng.uniform(0.02, 0.05))
    vib_depth = timbre.vib_cents * float(rng.uniform(0.7, 1.2)) * math.log(2.0) / 1200.0
    delay = float(rng.uniform(0.1, 0.25))
    vphase = float(rng.uniform(0.0, 2 * math.pi))
    cycles = f0 * t
    n_glide = min(n, int(6 * tau * sr))
    decay = np.exp(t32[:n_glide] * np.float32(-1.0 / tau))
    decay -= np.float32(1.0)
    cycles[:n_glide] -= (f0 * glide * tau) * decay
    n_delay = int(delay * sr)
    if n_delay < n:
        tv = t32[n_delay:n]
        ramp = np.minimum((tv - np.float32(delay)) * np.float32(5.0), np.float32(1.0))
        ramp *= np.cos(np.float32(2 * math.pi * timbre.vib_rate) * tv + np.float32(vphase))
        cycles[n_delay:] -= (f0 * vib_depth / (2 * math.pi * timbre.vib_rate)) * ramp
    np.subtract(cycles, np.floor(cycles), out=cycles)
    frac = cycles.astype(np.float32)
    formants, bands = _VOWELS[_VOWEL_NAMES[vowel]]
    jitter = rng.uniform(0.95, 1.05, size=3)
    scale = timbre.formant_scale
    fs = [f * scale * j for f, j in zip(formants, jitter)] + [3350.0 * scale, 4300.0 * scale]
    bws = list(bands) + [220.0, 300.0]
    amps = _harmonic_amps(f0, sr, timbre.tilt)
    freqs = f0 * np.arange(1, len(amps) + 1)
    h = _formant_gain(freqs, fs, bws)
    table = _wavetable(amps * np.abs(h), np.angle(h) - math.pi / 2)
    voiced = _read_table(table, frac)
    # Envelope: smooth attack, slight decay, release; per-syllable level.
    attack = max(2, int(sr * rng.uniform(0.015, 0.04)))
    release = max(2, min(n // 2, int(sr * rng.uniform(0.03, 0.08))))
    sustain_end = float(rng.uniform(0.7, 0.95))
    env = t32[:n] * np.float32((sustain_end - 1.0) / max(t[-1], 1e-9))
    env += np.float32(1.0)
    env[:attack] *= np.sin(np.linspace(0.0, math.pi / 2, attack, dtype=np.float32)) ** 2
    env[n - release :] *= np.cos(np.linspace(0.0, math.pi / 2, release, dtype=np.float32)) ** 2
    level = float(rng.uniform(0.7, 1.0))
    n_noise = len(timbre.asp)
    off = int(rng.integers(0, max(1, n_noise - n + 1)))
    noise = timbre.asp[off : off + n] if n <= n_noise else np.resize(timbre.asp, n)
    # aspiration noise, pulse-synchronous: loudest at the start of each period, fading over it
    pulse = np.float32(1.0) - frac
    pulse *= noise
    pulse *= np.float32(2.0 * timbre.aspiration)
    voiced += pulse
    voiced *= env
    return voiced, level


def _consonant(out: np.ndarray, rng: np.random.Generator, timbre: _Timbre, sr: int, start: int, level: float) -> None:
    """A consonant onset on about half the syllables: a fricative or a plosive burst just before
    ``start``, added to ``out``."""
    if rng.random() < 0.5:
        kind = timbre.fric if rng.random() < 0.5 else timbre.plos
        n_noise = len(kind)
        length = min(int(sr * rng.uniform(0.02, 0.07)), n_noise)
        off = int(rng.integers(0, n_noise - length + 1))
        decay = np.exp(-np.arange(length, dtype=np.float32) / (0.3 * length))
        _add(out, start - length // 3, kind[off : off + length] * decay, level * float(rng.uniform(0.15, 0.3)))


# --------------------------------------------------------------------------------------------
# Accompaniment
# --------------------------------------------------------------------------------------------

# 16 steps per 4-beat bar: (kick steps, snare steps, closed hat steps, open hat steps)
_DRUM_PATTERNS = (
    ((0, 8, 10), (4, 12), (0, 2, 4, 6, 8, 10, 12, 14), ()),  # rock
    ((0, 4, 8, 12), (4, 12), (0, 4, 8, 12), (2, 6, 10, 14)),  # four on the floor
    ((0, 6, 10), (8,), (0, 2, 4, 6, 8, 10, 12, 14), (14,)),  # half time
)


def _drum_kit(rng: np.random.Generator, sr: int) -> dict[str, list[np.ndarray]]:
    """Three variants each of kick, snare, closed and open hi-hat (mono float32 templates)."""
    kit: dict[str, list[np.ndarray]] = {"kick": [], "snare": [], "hat": [], "open": []}
    nyq = 0.45 * sr
    for _ in range(3):
        n = int(0.35 * sr)
        t = np.arange(n) / sr
        f_end, f_sweep, tau = rng.uniform(42, 55), rng.uniform(90, 140), rng.uniform(0.03, 0.05)
        cyc = f_end * t + f_sweep * tau * (1 - np.exp(-t / tau))
        kick = np.sin(2 * np.pi * cyc) * np.exp(-t / rng.uniform(0.18, 0.3))
        click = _shaped_noise(rng, n, sr, 1000.0, min(6000.0, nyq)) * np.exp(-t / 0.004) * 0.3
        kit["kick"].append((kick + click).astype(np.float32))
        n = int(0.3 * sr)
        t = np.arange(n) / sr
        f = rng.uniform(170, 210)
        body = (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 1.7 * f * t)) * np.exp(-t / 0.06)
        rattle = _shaped_noise(rng, n, sr, 1200.0, min(9000.0, nyq)) * np.exp(-t / rng.uniform(0.08, 0.14))
        kit["snare"].append((0.6 * body + 0.7 * rattle).astype(np.float32))
        n = int(0.12 * sr)
        t = np.arange(n) / sr
        kit["hat"].append(
            (_shaped_noise(rng, n, sr, min(6500.0, 0.35 * sr), nyq) * np.exp(-t / rng.uniform(0.02, 0.04))).astype(np.float32)
        )
        n = int(0.45 * sr)
        t = np.arange(n) / sr
        kit["open"].append(
            (_shaped_noise(rng, n, sr, min(5500.0, 0.35 * sr), nyq) * np.exp(-t / rng.uniform(0.15, 0.25))).astype(np.float32)
        )
    return kit


def _render_drums(plan: _Plan, rng: np.random.Generator, stereo: bool, parts: Sequence[str] = ("kick", "snare", "hat", "open")) -> np.ndarray:
    """Drums [2 or 1, n_samples] float32: synthesized kit hits on a 16-step pattern, humanized."""
    sr = plan.sample_rate
    kit = _drum_kit(rng, sr)
    kick, snare, hat, open_hat = _DRUM_PATTERNS[plan.drum_pattern]
    steps = {"kick": kick, "snare": snare, "hat": hat, "open": open_hat}
    gains = {"kick": 1.0, "snare": 0.8, "hat": 0.25, "open": 0.22}
    pans = {"kick": 0.0, "snare": -0.1, "hat": 0.35, "open": 0.3}
    channels = 2 if stereo else 1
    out = np.zeros((channels, plan.n_samples), dtype=np.float32)
    step_s = plan.beat_s / 4.0
    n_bars = int(math.ceil(plan.seconds / (4 * plan.beat_s))) + 1
    for part in parts:
        if part not in steps:
            continue
        pan = pans[part]
        angle = (pan + 1.0) * math.pi / 4.0
        lr = (math.cos(angle) * math.sqrt(2.0), math.sin(angle) * math.sqrt(2.0))
        for bar in range(n_bars):
            hits = list(steps[part])
            if part == "kick" and rng.random() < 0.3:
                hits.append(int(rng.choice([3, 7, 11, 14, 15])))
            for step in hits:
                start = int(round(((bar * 16 + step) * step_s + rng.normal(0.0, 0.003)) * sr))
                if start >= plan.n_samples:
                    continue
                tmpl = kit[part][int(rng.integers(3))]
                vel = gains[part] * float(rng.uniform(0.8, 1.0))
                if stereo:
                    _add(out[0], start, tmpl, vel * lr[0])
                    _add(out[1], start, tmpl, vel * lr[1])
                else:
                    _add(out[0], start, tmpl, vel)
    return out


def _note_tone(f0: float, n: int, sr: int, tilt: float, decay_s: float | None, attack_s: float, release_s: float, detune_cents: float = 0.0, phase_seed: int = 0) -> np.ndarray:
    """One note [n] float32: a band-limited harmonic tone with an attack/decay/release envelope."""
    f = f0 * 2.0 ** (detune_cents / 1200.0)
    amps = _harmonic_amps(f, sr, tilt, max_harmonics=40)
    phases = np.random.default_rng(phase_seed).uniform(0, 2 * np.pi, len(amps))
    table = _wavetable(amps, phases)
    t = np.arange(n, dtype=np.float64) / sr
    x = _oscillate(table, f * t)
    env = np.ones(n, dtype=np.float32)
    a = max(2, min(n // 2, int(attack_s * sr)))
    r = max(2, min(n // 2, int(release_s * sr)))
    env[:a] = np.linspace(0.0, 1.0, a, dtype=np.float32)
    if decay_s:
        env *= np.exp(-t / decay_s).astype(np.float32)
    env[n - r :] *= np.linspace(1.0, 0.0, r, dtype=np.float32)
    return x * env


def _render_bass(plan: _Plan, rng: np.random.Generator, stereo: bool) -> np.ndarray:
    """Bass line [2 or 1, n_samples]: chord roots (and fifths) on a per-song rhythm."""
    sr = plan.sample_rate
    buf = np.zeros((2 if stereo else 1, plan.n_samples), dtype=np.float32)
    out = buf[0]
    bass_tonic = 28 + (plan.tonic_pc - 4) % 12
    pattern = int(rng.integers(3))
    tilt = float(rng.uniform(1.4, 2.0))
    cache: dict[tuple[float, int], np.ndarray] = {}
    beats = int(math.ceil(plan.seconds / plan.beat_s)) + 1
    for beat in range(beats):
        chord = plan.chord_at(beat // plan.chord_beats)
        root = bass_tonic + _degree_semitones(plan.scale, chord)
        if pattern == 0:  # quarter notes on the root
            events = [(0.0, 0.9, root)]
        elif pattern == 1:  # eighths, octave jump on the off-beat
            events = [(0.0, 0.45, root), (0.5, 0.45, root + 12 if beat % 2 else root)]
        else:  # root on 1, fifth on 3, rest elsewhere
            pos = beat % 4
            events = [(0.0, 1.8, root)] if pos == 0 else ([(0.0, 1.8, root + 7)] if pos == 2 else [])
        for off, length, midi in events:
            n = int(length * plan.beat_s * sr)
            key = (float(midi), n)
            if key not in cache:
                cache[key] = _note_tone(_midi_hz(midi), n, sr, tilt, decay_s=0.6, attack_s=0.005, release_s=0.03, phase_seed=int(midi))
            start = int(round((beat + off) * plan.beat_s * sr))
            _add(out, start, cache[key], float(rng.uniform(0.85, 1.0)))
    return _pan_rows(buf, 0.0)


def _render_other(plan: _Plan, rng: np.random.Generator, stereo: bool, style: str | None = None, octave: int = 0) -> np.ndarray:
    """Chords [2 or 1, n_samples]: sustained detuned pads or plucked arpeggios following the progression."""
    sr = plan.sample_rate
    style = style or plan.other_style
    channels = 2 if stereo else 1
    out = np.zeros((channels, plan.n_samples), dtype=np.float32)
    chord_tonic = 48 + plan.tonic_pc + 12 * octave
    tilt = float(rng.uniform(1.0, 1.6))
    chord_s = plan.chord_beats * plan.beat_s
    n_chords = int(math.ceil(plan.seconds / chord_s)) + 1
    cache: dict[tuple, np.ndarray] = {}
    for c in range(n_chords):
        degree = plan.chord_at(c)
        midis = [chord_tonic + _degree_semitones(plan.scale, degree + k) for k in (0, 2, 4)]
        midis = [m - 12 if m > chord_tonic + 14 else m for m in midis]
        start = int(round(c * chord_s * sr))
        if style == "pad":
            n = int((chord_s + 0.3) * sr)
            key = ("pad", degree, n)
            if key not in cache:
                voices = []
                for ch in range(channels):
                    detune = (-6.0, 6.0)[ch] if channels == 2 else 0.0
                    voice = sum(
                        _note_tone(_midi_hz(m), n, sr, tilt, None, 0.25, 0.3, detune, phase_seed=int(m) * 7 + ch)
                        for m in midis
                    )
                    voices.append(voice / len(midis))
                cache[key] = np.stack(voices).astype(np.float32)
            _add(out, start, cache[key], float(rng.uniform(0.85, 1.0)))
        else:
            step = plan.beat_s / 2.0
            n = int(0.9 * plan.beat_s * sr)
            for k in range(2 * plan.chord_beats):
                midi = midis[k % 3] + (12 if (k // 3) % 2 else 0)
                key = ("pluck", midi, n)
                if key not in cache:
                    cache[key] = _note_tone(_midi_hz(midi), n, sr, tilt + 0.3, 0.25, 0.003, 0.05, phase_seed=int(midi))
                s = start + int(round(k * step * sr))
                pan = float(rng.uniform(-0.4, 0.4))
                if stereo:
                    angle = (pan + 1.0) * math.pi / 4.0
                    vel = float(rng.uniform(0.7, 1.0)) * math.sqrt(2.0)
                    _add(out[0], s, cache[key], vel * math.cos(angle))
                    _add(out[1], s, cache[key], vel * math.sin(angle))
                else:
                    _add(out[0], s, cache[key], float(rng.uniform(0.7, 1.0)))
    return out


# --------------------------------------------------------------------------------------------
# Songs
# --------------------------------------------------------------------------------------------


@dataclass
class SongStems:
    """One synthetic song: four stems, float32 ``[channels, n_samples]`` (2 channels, or 1 when mono).

    ``mixture`` is the plain sum of the stems; ``accompaniment`` is drums + bass + other.
    ``vocal_notes`` lists the sung syllables as (onset_s, end_s, f0_hz); ``key`` is e.g.
    "A minor"; ``singer`` "male" or "female".
    """

    vocals: np.ndarray
    drums: np.ndarray
    bass: np.ndarray
    other: np.ndarray
    sample_rate: int
    artist: str
    title: str
    tempo_bpm: float
    key: str = ""
    singer: str = ""
    vocal_notes: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return int(self.vocals.shape[-1])

    @property
    def accompaniment(self) -> np.ndarray:
        return self.drums + self.bass + self.other

    @property
    def mixture(self) -> np.ndarray:
        return self.vocals + self.drums + self.bass + self.other

    def stems(self) -> dict[str, np.ndarray]:
        """The four stems by name, in MUSDB18 stream order (drums, bass, other, vocals)."""
        return {"drums": self.drums, "bass": self.bass, "other": self.other, "vocals": self.vocals}


def child_rng(rng: np.random.Generator) -> np.random.Generator:
    """A new Generator seeded from ``rng`` (which it advances): one per stem or per choice, so
    that what one part draws never shifts another's."""
    return np.random.default_rng(rng.integers(0, 2**63 - 1, size=2))


def song_samples(seconds: float, sample_rate: int) -> int:
    """``round(seconds * sample_rate)``, the length of a song; StemforgeError for a length
    that is not positive and finite, a rate below 8000 Hz, or fewer than 64 samples."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise StemforgeError(f"seconds must be a positive number, got {seconds!r}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise StemforgeError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    n = int(round(seconds * sample_rate))
    if n < 64:
        raise StemforgeError(f"seconds={seconds} gives only {n} samples at {sample_rate} Hz")
    return n


def synthesize_song(rng: np.random.Generator, seconds: float, sample_rate: int = 44100, stereo: bool = True) -> SongStems:
    """Synthesize one song of ``seconds`` seconds at ``sample_rate`` Hz.

    Returns a :class:`SongStems` with ``vocals``, ``drums``, ``bass``, ``other`` as float32
    arrays ``[2, n_samples]`` (``[1, n_samples]`` when ``stereo`` is False), ``n_samples =
    round(seconds * sample_rate)``. Deterministic for a given state of ``rng`` (which it
    advances). Levels: drums about -20 dBFS RMS, bass -22, other -23 (each +-2 dB), the vocals'
    RMS over sung samples within +-2 dB of the accompaniment's RMS; everything is scaled down
    together when the mixture would peak above 0.89, so nothing clips.
    """
    if not isinstance(rng, np.random.Generator):
        raise StemforgeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_samples = song_samples(seconds, sample_rate)
    artist, title = song_names(rng)
    plan = _plan_song(rng, n_samples, int(sample_rate))
    r_voice, r_drums, r_bass, r_other, r_mix = (child_rng(rng) for _ in range(5))
    vocals, notes, voice_rms = _render_voice(plan, r_voice, channels=2 if stereo else 1)
    drums = _render_drums(plan, r_drums, stereo)
    bass = _render_bass(plan, r_bass, stereo)
    other = _render_other(plan, r_other, stereo)
    targets = 10.0 ** ((np.array([-20.0, -22.0, -23.0]) + r_mix.uniform(-2.0, 2.0, size=3)) / 20.0)
    for stem, target in zip((drums, bass, other), targets):
        level = _rms(stem)
        if level > 0:
            stem *= np.float32(target / level)
    acc_rms = math.sqrt(float(np.sum(targets**2)))
    voice_gain = acc_rms * 10.0 ** (r_mix.uniform(-2.0, 2.0) / 20.0) / max(voice_rms, 1e-12)
    _pan_rows(vocals, float(r_mix.uniform(-0.1, 0.1)), gain=voice_gain)
    peak = _peak_of_sum((vocals, drums, bass, other))
    if peak > 0.89:
        g = np.float32(0.89 / peak)
        for stem in (vocals, drums, bass, other):
            stem *= g
    return SongStems(
        vocals=vocals,
        drums=drums,
        bass=bass,
        other=other,
        sample_rate=int(sample_rate),
        artist=artist,
        title=title,
        tempo_bpm=plan.tempo_bpm,
        key=f"{_PITCH_NAMES[plan.tonic_pc]} {plan.mode}",
        singer=plan.singer,
        vocal_notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Multitrack songs (MedleyDB: any number of stems of each kind)
# --------------------------------------------------------------------------------------------


def stem_kind(label: str | Sequence[str] | None) -> str:
    """The kind of audio a MedleyDB stem label gets: "voice", "drums", "bass" or "other".

    List-valued labels (MedleyDB EXTRA) use their first entry; voice labels are
    :data:`VOICE_LABELS`.
    """
    if isinstance(label, (list, tuple)):
        label = label[0] if label else ""
    label = str(label or "").strip().lower()
    if label in VOICE_LABELS:
        return "voice"
    if label in _DRUM_LABELS:
        return "drums"
    if label in _BASS_LABELS:
        return "bass"
    return "other"


_DRUM_PARTS = {
    "kick drum": ("kick",),
    "bass drum": ("kick",),
    "snare drum": ("snare",),
    "toms": ("kick", "snare"),
    "high hat": ("hat", "open"),
    "cymbal": ("open",),
    "tambourine": ("hat",),
    "shaker": ("hat",),
    "claps": ("snare",),
    "castanet": ("hat",),
}


def synthesize_multitrack(
    rng: np.random.Generator, n_samples: int, sample_rate: int, labels: Sequence[Any], stereo: bool = True
) -> tuple[list[np.ndarray], _Plan]:
    """One song with one stem per label, [2 or 1, n_samples] float32 each, levels set per kind;
    returns the stems and the song's plan (key, tempo, melody).

    The first voice stem sings the melody (about -20 dBFS RMS over sung samples); further
    voice stems sing a harmony (a third or a sixth away) in some phrases only, quieter.
    Drum labels get the matching kit pieces, bass labels the bass line, everything else
    chords (alternating pads and plucks, an octave apart).
    """
    plan = _plan_song(rng, n_samples, sample_rate)
    out: list[np.ndarray] = []
    counts = {"voice": 0, "drums": 0, "bass": 0, "other": 0}
    for label in labels:
        kind = stem_kind(label)
        first = label[0] if isinstance(label, (list, tuple)) and label else label
        first = str(first or "").lower()
        child = child_rng(rng)
        k = counts[kind]
        counts[kind] += 1
        if kind == "voice":
            singer = "female" if "female" in first else ("male" if "male" in first else None)
            channels = 2 if stereo else 1
            if k == 0:
                voice, _notes, level = _render_voice(plan, child, singer=singer, channels=channels)
                target = -20.0
            else:
                voice, _notes, level = _render_voice(
                    plan, child, transpose_degrees=(2, -3, 4)[(k - 1) % 3], singer=singer, phrase_keep=0.6, channels=channels
                )
                target = -25.0
            gain = 10.0 ** ((target + child.uniform(-2.0, 2.0)) / 20.0) / max(level, 1e-12)
            out.append(_pan_rows(voice, float(child.uniform(-0.3, 0.3)) if k else 0.0, gain=gain))
            continue
        if kind == "drums":
            stem = _render_drums(plan, child, stereo, parts=_DRUM_PARTS.get(first, ("kick", "snare", "hat", "open")))
            target = -21.0
        elif kind == "bass":
            stem = _render_bass(plan, child, stereo)
            target = -22.0
        else:
            style = ("pad", "pluck")[(k + (plan.other_style == "pluck")) % 2]
            stem = _render_other(plan, child, stereo, style=style, octave=(0, 1, -1)[k % 3])
            target = -25.0
        level = _rms(stem)
        if level > 0:
            stem *= np.float32(10.0 ** ((target + child.uniform(-2.0, 2.0)) / 20.0) / level)
        out.append(stem)
    return out, plan
