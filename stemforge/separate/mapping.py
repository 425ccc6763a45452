"""The vocals mask at the model's STFT (:class:`ModelMask`) and its mapping onto the output's
STFT grid (:class:`MaskMapper`): linear interpolation in time and frequency, and above the
model's band the frame's top-band value (see the Separator's module docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stemforge.core.config import SpectrogramConfig

#: Fraction of the model's Nyquist up to which the mask is used as is when the output rate is
#: higher than the model's (7.5 kHz for a 16 kHz model: where soxr HQ's passband ends).
KEEP_FRACTION = 0.9375
#: Band (fractions of the model's Nyquist) whose magnitude-weighted mean mask extends the mask
#: above the model's band: 6 to 7.5 kHz for a 16 kHz model.
EXTEND_BAND = (0.75, 0.9375)


def output_stft_size(sample_rate: int, config: SpectrogramConfig) -> tuple[int, int]:
    """``(n_fft, hop_length)`` of the output STFT at ``sample_rate`` Hz.

    At the model's rate, the model's own STFT (the seed's output). Elsewhere ``n_fft`` is the
    smallest power of two at least as long as the model's window (4096 at 44.1 and 48 kHz,
    2048 at 22.05 and 32 kHz) and ``hop_length = n_fft / 4``: with a time-interpolated mask,
    75 % overlap is robust where 50 % lost up to 15 dB on a real song (docs/separation.md).
    """
    if sample_rate == config.sample_rate:
        return config.n_fft, config.hop_length
    n_fft = 2 ** int(math.ceil(math.log2(config.n_fft * sample_rate / config.sample_rate) - 1e-9))
    n_fft = max(n_fft, 16)
    return n_fft, n_fft // 4


@dataclass
class ModelMask:
    """The vocals mask of one song at the model's STFT.

    Attributes:
        values: float32 ``[n_frames, n_bins + 1]``: columns ``0..n_bins-1`` the vocals mask per
            bin (DC 0 for a model), the last column the frame's top-band value (see
            :data:`EXTEND_BAND`) that extends the mask above the model's band.
        config: the model's :class:`SpectrogramConfig`.
        norm: the normalization factor used (maximum mixture magnitude), 0 for silence.
    """

    values: np.ndarray
    config: SpectrogramConfig
    norm: float

    @property
    def n_frames(self) -> int:
        return self.values.shape[0]

    @property
    def mask(self) -> np.ndarray:
        """``[n_frames, n_bins]`` vocals mask (a view)."""
        return self.values[:, :-1]


def _band_columns(config: SpectrogramConfig) -> tuple[int, int, int]:
    nyq_bin = config.n_bins - 1
    keep = int(math.floor(KEEP_FRACTION * nyq_bin))
    lo = int(math.ceil(EXTEND_BAND[0] * nyq_bin))
    hi = int(math.floor(EXTEND_BAND[1] * nyq_bin))
    return keep, lo, hi


def top_band_value(mask: np.ndarray, magnitude: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """Per frame, the mixture-magnitude-weighted mean of ``mask`` over :data:`EXTEND_BAND`.

    ``mask`` and ``magnitude`` are ``[n_frames, n_bins]``; frames whose band is silent get the
    plain mean. Returns float32 ``[n_frames]``.
    """
    _, lo, hi = _band_columns(config)
    m = mask[:, lo : hi + 1].astype(np.float32, copy=False)
    w = magnitude[:, lo : hi + 1].astype(np.float32, copy=False)
    num = np.einsum("tk,tk->t", m, w)
    den = w.sum(axis=1)
    plain = m.mean(axis=1)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), plain)
    return out.astype(np.float32)


class MaskMapper:
    """Maps a :class:`ModelMask` onto the STFT grid of the output (see the module docstring).

    Args:
        model_mask: the song's mask at the model's STFT.
        sample_rate: rate of the output signal (Hz).
        n_fft, hop_length: its STFT.
        hard_mask: binarize the mapped mask (``> 0.5``).
    """

    def __init__(self, model_mask: ModelMask, sample_rate: int, n_fft: int, hop_length: int, hard_mask: bool = False):
        cfg = model_mask.config
        self.model_mask = model_mask
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.hard_mask = hard_mask
        self.identity = sample_rate == cfg.sample_rate and n_fft == cfg.n_fft and hop_length == cfg.hop_length
        n_bins = cfg.n_bins
        ext = n_bins  # column of the top-band value
        n_out = n_fft // 2 + 1
        if self.identity:
            self.col0 = np.arange(n_bins)
            self.col1 = self.col0
            self.frac = np.zeros(n_bins, dtype=np.float32)
        else:
            # Output bin m sits at model-bin position m * (sample_rate / n_fft) / (sr_m / n_fft_m).
            pos = np.arange(n_out, dtype=np.float64) * (sample_rate / n_fft) / (cfg.sample_rate / cfg.n_fft)
            nyq = n_bins - 1
            if sample_rate > cfg.sample_rate:
                keep, _, _ = _band_columns(cfg)
                col0 = np.minimum(np.floor(pos), keep).astype(np.int64)
                col1 = np.minimum(col0 + 1, keep)
                frac = pos - col0
                between = (pos > keep) & (pos < nyq)
                col0[between] = keep
                col1[between] = ext
                frac[between] = (pos[between] - keep) / (nyq - keep)
                above = pos >= nyq
                col0[above] = ext
                col1[above] = ext
                frac[above] = 0.0
                frac[pos <= keep] = np.clip(frac[pos <= keep], 0.0, 1.0)
            else:
                col0 = np.minimum(np.floor(pos), nyq).astype(np.int64)
                col1 = np.minimum(col0 + 1, nyq)
                frac = np.clip(pos - col0, 0.0, 1.0)
            self.col0, self.col1, self.frac = col0, col1, frac.astype(np.float32)
        # Model frame position of output frame i: i * (hop / sr) / (hop_m / sr_m).
        self.frame_scale = (hop_length / sample_rate) / (cfg.hop_length / cfg.sample_rate)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """The mapped vocals mask of output frames ``start..stop-1``: float32 ``[n, n_fft//2 + 1]``."""
        values = self.model_mask.values
        last = values.shape[0] - 1
        if self.identity:
            idx = np.minimum(np.arange(start, stop), last)
            out = values[idx, :-1]
        else:
            u = np.arange(start, stop, dtype=np.float64) * self.frame_scale
            t0 = np.minimum(np.floor(u).astype(np.int64), last)
            t1 = np.minimum(t0 + 1, last)
            a = np.clip(u - t0, 0.0, 1.0).astype(np.float32)[:, None]
            r = values[t0] * (1.0 - a) + values[t1] * a
            out = r[:, self.col0] * (1.0 - self.frac) + r[:, self.col1] * self.frac
        if self.hard_mask:
            return (out > 0.5).astype(np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)
