"""Vocals from a song and its karaoke (instrumental) version: align, then subtract magnitudes.

The seed recipe builds training data from pairs of an original song and its official karaoke
version: once both are aligned and the karaoke is brought to the original's level, the vocal
magnitude is ``|V| = max(|O| - g |K|, 0)`` and the original's phase turns it back into a
waveform. Real pairs are never aligned as delivered: the karaoke starts at another offset, is
mastered at another gain, may be at another sample rate, and is sometimes a different mix. This
module measures the offset and the gain, says how well the karaoke explains the original
(``score``), and refuses pairs that do not fit.

Conventions
-----------
* Offset: ``offset_s`` is the time in the karaoke file at which the original's ``t = 0``
  content appears. It is positive when the karaoke has extra material at its start, negative
  when the original has material the karaoke lacks at its start. The aligned karaoke is
  ``karaoke_aligned(t) = karaoke(t + offset_s)``; in samples at the original's rate,
  ``karaoke_aligned[n] = karaoke[n + offset_samples]``.
* Gain: ``gain_db`` is the gain to apply to the karaoke so that it matches the accompaniment
  inside the original: ``original ~ 10**(gain_db/20) * karaoke_aligned + vocals``. A karaoke
  mastered 3 dB quieter than the original's accompaniment gives ``gain_db = +3``.
* Score in [0, 1]: over the time-frequency bins where the aligned karaoke has energy, the
  magnitude-weighted fraction whose level in the original is within ``SCORE_TOLERANCE_DB`` of
  the gain-corrected karaoke's (see :func:`align`). Bins without voice are explained exactly by
  a right pair; a wrong pair or a different mix leaves few such bins. Pairs below
  ``MIN_SCORE`` are refused with :class:`~stemforge.core.errors.AlignmentError`.
* Coverage: where the aligned karaoke does not cover the original (the offset pushes it
  outside, or it is cut shorter), the karaoke is missing, not silent: :func:`derive` keeps the
  output length equal to the original's and sets vocals and accompaniment to 0 there, and
  :attr:`Derived.covered` gives the sample range that is valid; training data should use
  :meth:`Derived.cropped`.

Method (all at the analysis rate, 16 kHz by default; each input is downmixed and resampled
once):

1. coarse offset: multi-band onset flux (half-wave rectified time difference of log band
   energies from the STFT, z-normalised per band), FFT cross-correlation summed over bands,
   the 32 best lags (local maxima at least 0.5 s apart) within ``+-max_offset_s`` that leave at
   least ``MIN_OVERLAP_S`` of overlap, one hop (32 ms) of resolution. Repetitive music (loops,
   repeated bars) gives near-equal peaks a bar apart, and the right one need not be the best:
   it was the 6th, and the 13th, in synthetic pairs;
2. choice and fine offset: each candidate is screened by waveform cross-correlation with
   phase transform (GCC-PHAT, 60 Hz-7.2 kHz) of 4 windows of 2 s over the overlap, searched
   over +-2 hops, to a whole-sample lag; the 6 with the highest PHAT peaks are judged by the
   quality criterion itself, the score (step 5) of the gain-corrected karaoke on 6 blocks of
   40 frames, and the best scoring one is refined: GCC-PHAT of up to 8 windows within +-16
   samples, upsampled 16 times in the frequency domain and refined by parabolic interpolation;
3. the karaoke is shifted by the (fractional) lag with a Kaiser-windowed sinc interpolator;
4. gain: the mode of the magnitude-weighted histogram of the per-bin level ratio
   ``20 log10(|O| / |K|)`` (bins without voice pile up at the true gain; voice only pushes
   bins above it), then least squares ``g = sum |O||K| / sum |K|^2`` over the bins within
   1 dB of it, twice;
5. score as above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AlignmentError, AudioError

#: Pairs whose score is below this are refused (AlignmentError). Measured (docs/pairs.md): right
#: pairs 0.52-0.95 (synthetic; real 128-kbps MP3 excerpts, also re-encoded at 64-96 kbps), wrong
#: pairs <= 0.04, a karaoke without the bass 0.00-0.28, other different mixes 0.12-0.84.
MIN_SCORE = 0.45
#: A bin counts as "explained" by the karaoke when its level in the original is within this
#: many dB of the gain-corrected karaoke's.
SCORE_TOLERANCE_DB = 1.5
#: Band (Hz) below the lowest sung fundamentals (and its window's main lobe), where the
#: karaoke alone must explain the original: a karaoke missing the bass, a different mix or a
#: wrong pair leaves a residual there that voice cannot.
LOW_BAND_HZ = (25.0, 65.0)
#: A low-band residual this far below the original's low-band energy (dB) counts as full agreement.
LOW_BAND_FULL_DB = 30.0
#: The low-band check applies only when that band holds more than this share of the energy (dB).
LOW_BAND_MIN_SHARE_DB = -50.0
#: Default analysis rate of :func:`align` (Hz); :func:`derive` analyses at ``config.sample_rate``.
ANALYSIS_RATE = 16000
#: Default offset search range, seconds either way.
MAX_OFFSET_S = 30.0
#: Less overlap than this between original and aligned karaoke cannot be measured.
MIN_OVERLAP_S = 2.0

# Frequency range (Hz) of the features, the fine correlation and the gain/score bins: above
# rumble, below the transition band of the resampler at 16 kHz.
_F_LO = 60.0
_F_HI = 7200.0
_N_BANDS = 16
_COARSE_CANDIDATES = 32
_SCREEN_WINDOWS = 4
_SCORED_CANDIDATES = 6
_QUICK_BLOCKS = 6
_QUICK_BLOCK_FRAMES = 40
_REFINE_RADIUS = 16  # samples around the chosen integer lag
_FINE_WINDOW = 1 << 15  # samples at the analysis rate (about 2 s at 16 kHz)
_FINE_MAX_WINDOWS = 8
_FINE_UPSAMPLE = 16
_INTERP_HALF_TAPS = 32
_INTERP_KAISER_BETA = 9.0
_GAIN_TOLERANCE_DB = 1.0
_HIST_RANGE_DB = 80.0
_HIST_BIN_DB = 0.05


@dataclass(frozen=True)
class Alignment:
    """How a karaoke lines up with its original (see the module docstring for conventions).

    ``offset_samples`` is at ``original_rate``: ``karaoke_aligned[n] = karaoke[n + offset_samples]``
    (the karaoke resampled to the original's rate first); ``offset_s`` is the same in seconds,
    with sub-sample precision. ``gain_db`` is the gain applied to the karaoke to match the
    original. ``score`` in [0, 1] says how well the aligned, gain-corrected karaoke explains the
    original (1 for a given alignment). ``covered_s`` is the ``(start, end)`` time span of the
    original (seconds) that the aligned karaoke covers. Diagnostics: ``coarse_peak_ratio`` is the
    height of the onset-correlation peak over the best rival more than 0.5 s away (above 1:
    unambiguous); ``fine_peak`` is the height of the GCC-PHAT peak in [0, 1] (1: the karaoke is a
    pure delay of the original's accompaniment). ``measured`` is False for an alignment given by
    the caller (:meth:`known`).
    """

    offset_samples: int
    offset_s: float
    gain_db: float
    score: float
    original_rate: int
    covered_s: tuple[float, float] | None = None
    bin_agreement: float = float("nan")
    low_band_residual_db: float = float("nan")
    coarse_peak_ratio: float = float("nan")
    fine_peak: float = float("nan")
    measured: bool = True

    @property
    def gain(self) -> float:
        """Linear amplitude gain ``10 ** (gain_db / 20)`` applied to the karaoke."""
        return 10.0 ** (self.gain_db / 20.0)

    @classmethod
    def known(cls, offset_s: float, gain_db: float, original_rate: int) -> "Alignment":
        """An alignment the caller knows (no measurement): score 1, no diagnostics."""
        return cls(
            offset_samples=int(round(offset_s * original_rate)),
            offset_s=float(offset_s),
            gain_db=float(gain_db),
            score=1.0,
            original_rate=int(original_rate),
            measured=False,
        )

    def require(self, min_score: float = MIN_SCORE) -> "Alignment":
        """Return self, or raise AlignmentError when ``score < min_score`` (message gives both)."""
        if not self.score >= min_score:
            raise AlignmentError(
                f"karaoke does not fit the original: alignment score {self.score:.3f} is below the "
                f"minimum {min_score:.3f} (best offset {self.offset_s:+.3f} s, gain {self.gain_db:+.2f} dB); "
                "wrong pair, a different mix, or an offset beyond the search range"
            )
        return self

    def to_dict(self) -> dict:
        """JSON-safe dict of every field (NaN becomes None)."""
        def clean(v: object) -> object:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            return v

        return {
            "offset_s": clean(self.offset_s),
            "offset_samples": self.offset_samples,
            "original_sample_rate": self.original_rate,
            "gain_db": clean(self.gain_db),
            "score": clean(self.score),
            "covered_s": clean(self.covered_s) if self.covered_s is not None else None,
            "bin_agreement": clean(self.bin_agreement),
            "low_band_residual_db": clean(self.low_band_residual_db),
            "coarse_peak_ratio": clean(self.coarse_peak_ratio),
            "fine_peak": clean(self.fine_peak),
            "measured": self.measured,
        }


@dataclass(frozen=True)
class Derived:
    """What :func:`derive` makes, every waveform ``[samples]`` float32 mono at ``sample_rate``.

    ``mixture`` is the original; ``accompaniment`` the aligned, gain-corrected karaoke;
    ``vocals`` the spectral difference with the original's phase. All three have the original's
    length. ``covered = (start, stop)`` is the sample range where the karaoke covers the
    original; outside it vocals and accompaniment are 0 (unknown, not silent).
    """

    vocals: np.ndarray
    accompaniment: np.ndarray
    mixture: np.ndarray
    sample_rate: int
    alignment: Alignment
    covered: tuple[int, int] = field(default=(0, 0))

    @property
    def duration_s(self) -> float:
        return self.mixture.shape[0] / self.sample_rate

    @property
    def coverage(self) -> float:
        """Fraction of the original covered by the karaoke, in [0, 1]."""
        n = self.mixture.shape[0]
        return (self.covered[1] - self.covered[0]) / n if n else 0.0

    def cropped(self) -> "Derived":
        """The same, cut to the covered range (what training data should use)."""
        a, b = self.covered
        return replace(
            self,
            vocals=self.vocals[a:b],
            accompaniment=self.accompaniment[a:b],
            mixture=self.mixture[a:b],
            covered=(0, b - a),
        )


# --------------------------------------------------------------------------- public functions


def align(
    original: np.ndarray,
    original_rate: int,
    karaoke: np.ndarray,
    karaoke_rate: int,
    max_offset_s: float = MAX_OFFSET_S,
    *,
    analysis_rate: int = ANALYSIS_RATE,
) -> Alignment:
    """Measure offset, gain and fit of a karaoke against its original.

    ``original`` and ``karaoke`` are ``[samples]`` or ``[channels, samples]`` float arrays at
    ``original_rate`` / ``karaoke_rate`` Hz (any rates, any channel counts: both are downmixed
    and resampled to ``analysis_rate``). The offset is searched within ``+-max_offset_s``
    seconds. Never refuses on the score (see :meth:`Alignment.require`); raises AlignmentError
    only when nothing can be measured (silent input, under ``MIN_OVERLAP_S`` of overlap) and
    AudioError for malformed arrays.
    """
    config = SpectrogramConfig(sample_rate=int(analysis_rate))
    o = _prepare(original, original_rate, config.sample_rate, "original")
    k = _prepare(karaoke, karaoke_rate, config.sample_rate, "karaoke")
    alignment, _ = _measure(o, k, config, int(original_rate), max_offset_s)
    return alignment


def derive(
    original_audio: np.ndarray,
    original_rate: int,
    karaoke_audio: np.ndarray,
    karaoke_rate: int,
    config: SpectrogramConfig = SpectrogramConfig(),
    alignment: Alignment | None = None,
    *,
    min_score: float = MIN_SCORE,
    max_offset_s: float = MAX_OFFSET_S,
) -> Derived:
    """Derive vocals from an original and its karaoke by magnitude subtraction at ``config``.

    Inputs are ``[samples]`` or ``[channels, samples]`` at their own rates. Both are downmixed
    and resampled to ``config.sample_rate``; unless ``alignment`` is given, it is measured here
    (at ``config.sample_rate`` with ``config``'s STFT) and a score below ``min_score`` raises
    AlignmentError. A given alignment is trusted as is (only its ``offset_s`` and ``gain_db``
    are used). The vocal spectrogram is ``max(|O| - g |K_aligned|, 0)`` with the original's
    phase, i.e. the original's STFT times the mask ``max(1 - g |K| / |O|, 0)``, inverted to the
    original's length. Returns a :class:`Derived`.
    """
    from stemforge.core import dsp

    rate = config.sample_rate
    o = _prepare(original_audio, original_rate, rate, "original")
    k = _prepare(karaoke_audio, karaoke_rate, rate, "karaoke")
    if alignment is None:
        alignment, cache = _measure(o, k, config, int(original_rate), max_offset_s)
        alignment.require(min_score)
        spec_o, mag_k, shifted, covered = cache.spec_o, cache.mag_k, cache.shifted, cache.covered
    else:
        _check_signal(o, rate, "original")
        shifted, covered = _shift(k, alignment.offset_s * rate, o.shape[0])
        spec_o = dsp.stft(o, config)
        mag_k = dsp.magnitude(shifted, config)
    g = np.float32(alignment.gain)
    mag_o = np.abs(spec_o)
    with np.errstate(divide="ignore", invalid="ignore"):
        mask = 1.0 - g * mag_k / mag_o
    np.nan_to_num(mask, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(mask, 0.0, 1.0, out=mask)
    # Frames whose centre the karaoke does not reach: unknown, not vocals.
    centres = _frame_centres(spec_o.shape[0], config)
    mask[(centres < covered[0]) | (centres >= covered[1])] = 0.0
    vocals = dsp.istft(spec_o * mask, config, length=o.shape[0])
    accompaniment = shifted * g
    _zero_outside(vocals, covered)
    _zero_outside(accompaniment, covered)
    return Derived(
        vocals=vocals.astype(np.float32, copy=False),
        accompaniment=accompaniment.astype(np.float32, copy=False),
        mixture=o,
        sample_rate=rate,
        alignment=alignment,
        covered=covered,
    )


def derive_files(
    original_path: str | Path,
    karaoke_path: str | Path,
    config: SpectrogramConfig = SpectrogramConfig(),
    min_score: float = MIN_SCORE,
    max_offset_s: float = MAX_OFFSET_S,
) -> Derived:
    """Decode both files (any format :func:`stemforge.core.audio.load` reads) and :func:`derive`.

    Raises AudioError for an undecodable file, AlignmentError for a pair that does not fit.
    """
    from stemforge.core import audio

    original, original_rate = audio.load(original_path)
    karaoke, karaoke_rate = audio.load(karaoke_path)
    return derive(
        original, original_rate, karaoke, karaoke_rate, config,
        min_score=min_score, max_offset_s=max_offset_s,
    )


def derive_to_files(
    original_path: Path,
    karaoke_path: Path,
    vocals_path: Path,
    accompaniment_path: Path | None = None,
    report_path: Path | None = None,
    *,
    min_score: float = MIN_SCORE,
    max_offset_s: float = MAX_OFFSET_S,
    force: bool = False,
) -> tuple[Derived, dict[str, str]]:
    """:func:`derive_files` at the default geometry (16 kHz mono), then write the vocals (and the
    aligned, gain-corrected karaoke to ``accompaniment_path``) as wav, and the figures (offset,
    gain, score, verdict, coverage, the outputs) as JSON to ``report_path``. Returns the
    :class:`Derived` and the files written, role -> path.

    Nothing is written for a pair that does not fit (AlignmentError) or when an output exists
    without ``force`` or would overwrite an input (:func:`stemforge.core.files.check_outputs`);
    StemforgeError naming the report when it cannot be written."""
    import json

    from stemforge.core import audio, files
    from stemforge.core.errors import StemforgeError

    outputs = [p for p in (vocals_path, accompaniment_path, report_path) if p is not None]
    files.check_outputs(outputs, [original_path, karaoke_path], force)
    derived = derive_files(original_path, karaoke_path, SpectrogramConfig(), min_score=min_score, max_offset_s=max_offset_s)
    audio.write(vocals_path, derived.vocals, derived.sample_rate)
    written = {"vocals": str(vocals_path)}
    if accompaniment_path is not None:
        audio.write(accompaniment_path, derived.accompaniment, derived.sample_rate)
        written["accompaniment"] = str(accompaniment_path)
    if report_path is not None:
        figures = {
            "original": str(original_path), "karaoke": str(karaoke_path), **derived.alignment.to_dict(),
            "min_score": min_score, "verdict": "accepted", "coverage": derived.coverage,
            "duration_s": derived.duration_s, "sample_rate": derived.sample_rate, "outputs": written,
        }
        try:
            report_path.parent.mkdir(parents=True, exist_ok=True)
            files.write_text(report_path, json.dumps(figures, indent=2) + "\n")
        except OSError as exc:
            raise StemforgeError(f"{report_path}: cannot write the report ({exc.strerror or exc})") from None
    return derived, written


# --------------------------------------------------------------------------- internals


@dataclass
class _Cache:
    """Intermediate arrays :func:`derive` reuses from the measurement."""

    spec_o: np.ndarray  # complex [n_frames, n_bins] of the original
    mag_k: np.ndarray  # [n_frames, n_bins] of the aligned karaoke (no gain)
    shifted: np.ndarray  # aligned karaoke [samples], no gain, zero outside covered
    covered: tuple[int, int]


def _prepare(audio_in: np.ndarray, rate: int, target_rate: int, what: str) -> np.ndarray:
    """Validate, downmix and resample one input to ``[samples]`` float32 at ``target_rate``."""
    from stemforge.core import audio

    a = np.asarray(audio_in)
    if a.ndim not in (1, 2):
        raise AudioError(what, f"expected [samples] or [channels, samples], got shape {a.shape}")
    if a.ndim == 2 and a.shape[0] > 16 and a.shape[1] <= 16:
        raise AudioError(what, f"expected [channels, samples], got shape {a.shape} (transposed?)")
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(what, f"sample rate must be a positive integer, got {rate!r}")
    if a.size == 0:
        raise AudioError(what, "holds no samples")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise AudioError(what, "holds NaN or infinite samples")
    mono = audio.to_mono(a)
    return np.ascontiguousarray(audio.resample(mono, int(rate), int(target_rate)), dtype=np.float32)


def _check_signal(x: np.ndarray, rate: int, what: str) -> None:
    if x.shape[0] < MIN_OVERLAP_S * rate:
        raise AlignmentError(f"{what} is too short to align: {x.shape[0] / rate:.2f} s < {MIN_OVERLAP_S} s")
    if not np.any(x):
        raise AlignmentError(f"{what} is silent")


def _measure(
    o: np.ndarray, k: np.ndarray, config: SpectrogramConfig, original_rate: int, max_offset_s: float
) -> tuple[Alignment, _Cache]:
    """Coarse + fine offset, gain and score of mono ``o``, ``k`` at ``config.sample_rate``."""
    from stemforge.core import dsp

    rate = config.sample_rate
    _check_signal(o, rate, "original")
    _check_signal(k, rate, "karaoke")
    if not max_offset_s >= 0:
        raise AlignmentError(f"max_offset_s must be >= 0, got {max_offset_s}")
    spec_o = dsp.stft(o, config)
    mag_o = np.abs(spec_o)
    mag_k_raw = dsp.magnitude(k, config)
    candidates, peak_ratio = _coarse_lags(mag_o, mag_k_raw, config, max_offset_s)
    lag, fine_peak = _choose_lag(o, k, mag_o, candidates, config)
    shifted, covered = _shift(k, lag, o.shape[0])
    if covered[1] - covered[0] < MIN_OVERLAP_S * rate:
        raise AlignmentError(
            f"karaoke overlaps the original by {(covered[1] - covered[0]) / rate:.2f} s at the best "
            f"offset {lag / rate:+.3f} s; at least {MIN_OVERLAP_S} s are needed"
        )
    mag_k = dsp.magnitude(shifted, config)
    fit = _gain_and_score(mag_o, mag_k, covered, config)
    offset_s = lag / rate
    alignment = Alignment(
        offset_samples=int(round(offset_s * original_rate)),
        offset_s=float(offset_s),
        gain_db=fit.gain_db,
        score=fit.score,
        original_rate=int(original_rate),
        covered_s=(covered[0] / rate, covered[1] / rate),
        bin_agreement=fit.bin_agreement,
        low_band_residual_db=fit.low_band_residual_db,
        coarse_peak_ratio=float(peak_ratio),
        fine_peak=float(fine_peak),
        measured=True,
    )
    return alignment, _Cache(spec_o, mag_k, shifted, covered)


def _band_edges(config: SpectrogramConfig) -> np.ndarray:
    """Bin indices of ``_N_BANDS`` log-spaced bands between _F_LO and _F_HI."""
    hz_per_bin = config.sample_rate / config.n_fft
    f_hi = min(_F_HI, 0.45 * config.sample_rate)
    edges = np.geomspace(max(_F_LO, hz_per_bin), f_hi, _N_BANDS + 1) / hz_per_bin
    edges = np.unique(np.round(edges).astype(int))
    return edges


def _onset_features(mag: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Multi-band onset flux ``[n_frames, n_bands]``, z-normalised per band (float64)."""
    power = mag.astype(np.float32) ** 2
    cums = np.cumsum(power, axis=1, dtype=np.float64)
    cums = np.concatenate([np.zeros((cums.shape[0], 1)), cums], axis=1)
    bands = cums[:, edges[1:]] - cums[:, edges[:-1]]  # [n_frames, n_bands]
    floor = 1e-6 * np.maximum(bands.mean(axis=0, keepdims=True), 1e-30)
    log_e = np.log(bands + floor)
    flux = np.zeros_like(log_e)
    flux[1:] = np.maximum(np.diff(log_e, axis=0), 0.0)
    flux -= flux.mean(axis=0, keepdims=True)
    std = flux.std(axis=0, keepdims=True)
    flux /= np.where(std > 0, std, 1.0)
    return flux


def _coarse_lags(
    mag_o: np.ndarray, mag_k: np.ndarray, config: SpectrogramConfig, max_offset_s: float
) -> tuple[list[int], float]:
    """Candidate frame lags ``d`` (``k[t + d] ~ o[t]``), best first, and the best one's peak ratio.

    Up to ``_COARSE_CANDIDATES`` local maxima of the onset cross-correlation at least 0.5 s
    apart: repetitive music (loops, choruses) gives rival peaks a bar or a section away, and
    the fine stage decides between them.
    """
    import scipy.fft

    edges = _band_edges(config)
    fo = _onset_features(mag_o, edges)
    fk = _onset_features(mag_k, edges)
    n_o, n_k = fo.shape[0], fk.shape[0]
    n = scipy.fft.next_fast_len(n_o + n_k, real=True)
    spec = np.sum(np.conj(scipy.fft.rfft(fo, n, axis=0)) * scipy.fft.rfft(fk, n, axis=0), axis=1)
    corr = scipy.fft.irfft(spec, n)  # corr[d mod n] = sum_t fo[t] fk[t + d]
    max_frames = int(math.ceil(max_offset_s * config.sample_rate / config.hop_length))
    # Lags with some overlap: -n_o < d < n_k; those leaving under MIN_OVERLAP_S cannot be
    # measured (unless no lag leaves that much).
    lags = np.arange(max(-max_frames, -n_o + 1), min(max_frames, n_k - 1) + 1)
    overlap = np.minimum(n_o, n_k - lags) - np.maximum(0, -lags)
    enough = overlap >= MIN_OVERLAP_S * config.sample_rate / config.hop_length
    if np.any(enough):
        lags = lags[enough]
    values = corr[lags % n]
    guard = max(1, int(round(0.5 * config.sample_rate / config.hop_length)))
    order = np.argsort(values)[::-1]
    picked: list[int] = []
    for i in order:
        if all(abs(int(i) - j) > guard for j in picked):
            picked.append(int(i))
            if len(picked) == _COARSE_CANDIDATES:
                break
    base = float(np.median(values))
    ratio = float("inf")
    if len(picked) > 1:
        rival = float(values[picked[1]]) - base
        top = float(values[picked[0]]) - base
        ratio = top / rival if rival > 0 else float("inf")
    return [int(lags[i]) for i in picked], ratio


def _segment(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """``x[start:start + length]`` with zeros where the range leaves ``x``."""
    out = np.zeros(length, dtype=np.float64)
    a, b = max(start, 0), min(start + length, x.shape[0])
    if b > a:
        out[a - start : b - start] = x[a:b]
    return out


def _choose_lag(
    o: np.ndarray, k: np.ndarray, mag_o: np.ndarray, candidates: list[int], config: SpectrogramConfig
) -> tuple[float, float]:
    """The sub-sample lag (``k[n + lag] ~ o[n]``) among the coarse frame-lag ``candidates``, and its PHAT peak.

    Each candidate is screened by GCC-PHAT (``_SCREEN_WINDOWS`` windows, whole samples, +-2
    hops); the ``_SCORED_CANDIDATES`` with the highest PHAT peaks are then judged by the fit
    itself, the score of the gain-corrected karaoke on a few blocks of frames
    (:func:`_quick_score`), and the best one is refined to sub-sample precision.
    """
    rate, hop = config.sample_rate, config.hop_length
    screened = [
        _fine_lag(o, k, d * hop, 2 * hop, rate, max_windows=_SCREEN_WINDOWS, upsample=1) for d in candidates
    ]
    top = sorted(range(len(screened)), key=lambda i: -screened[i][1])[:_SCORED_CANDIDATES]
    lags = [int(round(screened[i][0])) for i in top]
    if len(lags) > 1:
        scores = [_quick_score(mag_o, o.shape[0], k, lag, config) for lag in lags]
        best = lags[int(np.argmax(scores))]  # first (highest PHAT peak) on ties
    else:
        best = lags[0]
    return _fine_lag(o, k, best, _REFINE_RADIUS, rate)


def _quick_score(mag_o: np.ndarray, n_o: int, k: np.ndarray, lag: int, config: SpectrogramConfig) -> float:
    """Score (as :func:`_gain_and_score`) of karaoke ``k`` at whole-sample ``lag`` on a few frame blocks.

    ``mag_o`` is the original's centred STFT magnitude ``[n_frames, n_bins]`` and ``n_o`` its
    length in samples. Up to ``_QUICK_BLOCKS`` blocks of ``_QUICK_BLOCK_FRAMES`` frames spread
    over the overlap are compared; the karaoke's frames are computed on its samples
    ``[f hop - n_fft/2 + lag, f hop + n_fft/2 + lag)`` so that they line up with the original's
    frame ``f`` exactly. Returns -1 when the overlap holds no full block or the fit cannot be
    measured.
    """
    from stemforge.core import dsp

    hop, half = config.hop_length, config.n_fft // 2
    uncentred = replace(config, center=False)
    f_lo = max(-(-half // hop), -(-(half - lag) // hop))
    f_hi = min((n_o - half) // hop, (k.shape[0] - half - lag) // hop, mag_o.shape[0] - 1)  # last usable frame
    m = _QUICK_BLOCK_FRAMES
    if f_hi - f_lo + 1 < m:
        return -1.0
    n_blocks = int(min(_QUICK_BLOCKS, (f_hi - f_lo + 1) // m))
    starts = np.linspace(f_lo, f_hi - m + 1, n_blocks).astype(int)
    rows_o, rows_k = [], []
    for f in starts:
        a = int(f) * hop - half + lag
        seg = k[a : a + (m - 1) * hop + config.n_fft]
        rows_k.append(dsp.magnitude(seg, uncentred)[:m])
        rows_o.append(mag_o[f : f + m])
    try:
        fit = _gain_and_score(np.concatenate(rows_o), np.concatenate(rows_k), (-(1 << 62), 1 << 62), config)
    except AlignmentError:
        return -1.0
    return fit.score


def _fine_lag(
    o: np.ndarray,
    k: np.ndarray,
    coarse: int,
    radius: int,
    rate: int,
    *,
    max_windows: int = _FINE_MAX_WINDOWS,
    upsample: int = _FINE_UPSAMPLE,
) -> tuple[float, float]:
    """Sub-sample lag within ``coarse +- radius`` samples by GCC-PHAT over windows of the overlap.

    Returns ``(lag, peak)`` with ``k[n + lag] ~ o[n]`` and the normalised PHAT peak in [0, 1].
    """
    import scipy.fft

    start = max(0, -coarse)
    stop = min(o.shape[0], k.shape[0] - coarse)
    span = max(stop - start, 0)
    width = min(_FINE_WINDOW, max(span, 4 * radius))
    n_win = int(min(max_windows, max(1, span // width)))
    if span > width:
        starts = np.linspace(start, stop - width, n_win).astype(int)
    else:
        starts = np.array([start])
    n = scipy.fft.next_fast_len(width + 2 * radius, real=True)
    cross = np.zeros(n // 2 + 1, dtype=np.complex128)
    for a in starts:
        seg_o = _segment(o, int(a), width)
        seg_k = _segment(k, int(a) + coarse - radius, width + 2 * radius)
        cross += np.conj(scipy.fft.rfft(seg_o, n)) * scipy.fft.rfft(seg_k, n)
    freqs = np.arange(n // 2 + 1) * rate / n
    band = (freqs >= _F_LO) & (freqs <= min(_F_HI, 0.45 * rate))
    amp = np.abs(cross)
    weights = np.where(band & (amp > 0), 1.0 / np.where(amp > 0, amp, 1.0), 0.0)
    up = n * upsample
    padded = np.zeros(up // 2 + 1, dtype=np.complex128)
    padded[: n // 2 + 1] = cross * weights
    corr = scipy.fft.irfft(padded, up)[: 2 * radius * upsample + 1]
    ideal = scipy.fft.irfft(band.astype(np.float64), n)[0] / upsample  # same scale as corr
    p = int(np.argmax(corr))
    delta = 0.0
    if 0 < p < corr.shape[0] - 1:
        y0, y1, y2 = corr[p - 1], corr[p], corr[p + 1]
        denom = y0 - 2.0 * y1 + y2
        if denom < 0:
            delta = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    lag = coarse - radius + (p + delta) / upsample
    peak = float(corr[p] / ideal) if ideal > 0 else 0.0
    return float(lag), float(np.clip(peak, 0.0, 1.0))


def _shift(k: np.ndarray, lag: float, n_out: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``out[n] = k(n + lag)`` for ``n < n_out`` (fractional lag by windowed sinc), and coverage.

    Returns ``(out [n_out] float32, (start, stop))`` where ``[start, stop)`` are the samples the
    karaoke reaches; ``out`` is 0 outside that range.
    """
    from scipy.signal import oaconvolve

    base = math.floor(lag)
    frac = lag - base
    if frac < 1e-4 or frac > 1.0 - 1e-4:
        base = int(round(lag))
        out = _segment(k, base, n_out).astype(np.float32)
    else:
        half = _INTERP_HALF_TAPS
        j = np.arange(-half + 1, half + 1)
        x = j - frac
        window = np.i0(_INTERP_KAISER_BETA * np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, None)))
        h = np.sinc(x) * window
        h /= h.sum()
        seg = _segment(k, base - half + 1, n_out + 2 * half - 1).astype(np.float32)
        out = oaconvolve(seg, h[::-1].astype(np.float32), mode="valid").astype(np.float32)
    start = max(0, int(math.ceil(-lag)))
    stop = min(n_out, int(math.floor(k.shape[0] - 1 - lag)) + 1)
    stop = max(stop, start)
    _zero_outside(out, (start, stop))
    return out, (start, stop)


def _zero_outside(x: np.ndarray, covered: tuple[int, int]) -> None:
    x[: covered[0]] = 0.0
    x[covered[1] :] = 0.0


def _frame_centres(n_frames: int, config: SpectrogramConfig) -> np.ndarray:
    """Sample index of each frame's centre."""
    centres = np.arange(n_frames) * config.hop_length
    if not config.center:
        centres = centres + config.n_fft // 2
    return centres


@dataclass(frozen=True)
class _Fit:
    gain_db: float
    score: float
    bin_agreement: float
    low_band_residual_db: float  # NaN when the original has no energy in the low band


def _gain_and_score(
    mag_o: np.ndarray, mag_k: np.ndarray, covered: tuple[int, int], config: SpectrogramConfig
) -> _Fit:
    """Gain (dB) of the karaoke that matches the original, and the score in [0, 1]."""
    centres = _frame_centres(mag_o.shape[0], config)
    half = config.n_fft // 2
    frames = (centres - half >= covered[0]) & (centres + half <= covered[1])
    hz_per_bin = config.sample_rate / config.n_fft
    lo = max(1, int(math.ceil(_F_LO / hz_per_bin)))
    hi = int(math.floor(min(_F_HI, 0.45 * config.sample_rate) / hz_per_bin)) + 1
    o = mag_o[frames, lo:hi].ravel()
    kk = mag_k[frames, lo:hi].ravel()
    if o.size == 0:
        raise AlignmentError("no STFT frame lies inside the overlap of original and karaoke")
    keep = (kk > 1e-4 * float(kk.max())) & (o > 0)
    if np.count_nonzero(keep) < 1000:
        raise AlignmentError("the karaoke is (nearly) silent where it overlaps the original")
    o, kk = o[keep], kk[keep]
    ratio_db = np.log10(o / kk)
    ratio_db *= np.float32(20.0)
    # Mode of the magnitude-weighted level-ratio histogram.
    n_bins = int(round(2 * _HIST_RANGE_DB / _HIST_BIN_DB))
    idx = ((ratio_db + np.float32(_HIST_RANGE_DB)) * np.float32(1.0 / _HIST_BIN_DB)).astype(np.int32)
    np.clip(idx, 0, n_bins - 1, out=idx)
    hist = np.bincount(idx, weights=kk, minlength=n_bins)
    hist[0] = hist[-1] = 0.0  # out of range
    sigma = 0.3 / _HIST_BIN_DB
    t = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    smooth = np.convolve(hist, kernel, mode="same")
    gain_db = (int(np.argmax(smooth)) + 0.5) * _HIST_BIN_DB - _HIST_RANGE_DB
    # Least squares over the bins the current gain explains (no voice expected there), twice.
    ok = o * kk
    kk2 = kk * kk
    for _ in range(2):
        inl = np.abs(ratio_db - np.float32(gain_db)) < _GAIN_TOLERANCE_DB
        den = float(np.sum(kk2[inl], dtype=np.float64))
        if den <= 0:
            break
        gain_db = 20.0 * math.log10(max(float(np.sum(ok[inl], dtype=np.float64)) / den, 1e-12))
    explained = np.abs(ratio_db - np.float32(gain_db)) < SCORE_TOLERANCE_DB
    bin_agreement = float(kk[explained].sum(dtype=np.float64) / kk.sum(dtype=np.float64))
    # Low band, where no voice is expected: the karaoke must explain the original there.
    b0 = max(1, int(math.ceil(LOW_BAND_HZ[0] / hz_per_bin)))
    b1 = int(math.floor(LOW_BAND_HZ[1] / hz_per_bin)) + 1
    low_residual_db = float("nan")
    low_agreement = 1.0
    if b1 > b0:
        lo_o = mag_o[frames, b0:b1].astype(np.float64)
        lo_k = mag_k[frames, b0:b1].astype(np.float64) * 10 ** (gain_db / 20)
        energy = float(np.sum(lo_o**2))
        total = float(np.sum(mag_o[frames].astype(np.float64) ** 2))
        if energy > total * 10 ** (LOW_BAND_MIN_SHARE_DB / 10) and energy > 0:
            low_residual_db = 10.0 * math.log10(max(float(np.sum((lo_o - lo_k) ** 2)) / energy, 1e-12))
            low_agreement = float(np.clip(-low_residual_db / LOW_BAND_FULL_DB, 0.0, 1.0))
    return _Fit(
        gain_db=float(gain_db),
        score=min(bin_agreement, low_agreement),
        bin_agreement=bin_agreement,
        low_band_residual_db=low_residual_db,
    )
