"""The vocals mask at the model's STFT (:class:`ModelMask`) and its mapping onto the output's
STFT grid (:class:`MaskMapper`): the mask as is where the output STFT is the model's, linear
interpolation in time and frequency elsewhere, and above the model's extent one value per frame
and channel, the *extension* (see :data:`EXTENSIONS` and the Separator's module docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import StemforgeError

#: Fraction of the model's Nyquist up to which the mask is used as is when the output rate is
#: higher than the model's (7.5 kHz for a 16 kHz model: where soxr HQ's passband ends).
KEEP_FRACTION = 0.9375
#: Band (fractions of the model's top bin) whose magnitude-weighted mean mask extends the mask
#: above the model's extent: 6 to 7.5 kHz for the 16 kHz seed model (top bin 512, 8 kHz); 8.3 to
#: 10.3 kHz for Spleeter's nets (top bin 1023 of a 4096-point STFT at 44.1 kHz, 11.0 kHz).
EXTEND_BAND = (0.75, 0.9375)
#: How the mask is extended above the bins the network sees: ``top_band`` (the frame's
#: magnitude-weighted mean over :data:`EXTEND_BAND`, stemforge's default), ``zeros`` (no vocals
#: up there: Spleeter's ``mask_extension: zeros``) or ``average`` (the frame's mean over every bin
#: the network sees: Spleeter's ``average``).
EXTENSIONS = ("top_band", "zeros", "average")


def output_stft_size(sample_rate: int, config: SpectrogramConfig) -> tuple[int, int]:
    """``(n_fft, hop_length)`` of the output STFT at ``sample_rate`` Hz.

    At the model's rate, the model's own STFT (the seed's output; at 44.1 kHz for a 44.1 kHz
    model the mask is applied as the network gave it). Elsewhere ``n_fft`` is the smallest power
    of two at least as long as the model's window (4096 at 44.1 and 48 kHz for the 16 kHz seed,
    2048 at 22.05 and 32 kHz) and ``hop_length = n_fft / 4``: with a time-interpolated mask, 75 %
    overlap is robust where 50 % lost up to 15 dB on a real song (docs/separation.md).
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
        values: float32 ``[channels, n_frames, top_bin + 2]`` (a 2-D ``[n_frames, top_bin + 2]``
            given is taken as one channel): columns ``0..top_bin`` the vocals mask at the
            model's STFT bins ``0..top_bin`` (the highest bin the network sees; bins below its
            first get 0), the last column the frame's extension value, which every bin above
            ``top_bin`` gets (see :data:`EXTENSIONS`). For the seed model ``top_bin`` is the
            model's Nyquist bin (512): ``[1, n_frames, 514]``.
        config: the model's :class:`SpectrogramConfig`.
        norm: the factor the magnitudes were divided by (the song's maximum mixture magnitude;
            1.0 for ``normalization="none"``), 0 for silence.
    """

    values: np.ndarray
    config: SpectrogramConfig
    norm: float

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float32)
        if v.ndim == 2:
            v = v[None]
        if v.ndim != 3 or v.shape[-1] < 2 or v.shape[-1] - 2 >= self.config.n_bins:
            raise StemforgeError(
                f"ModelMask: values must be [channels, n_frames, top_bin + 2] with top_bin < {self.config.n_bins}, got {v.shape}"
            )
        self.values = v

    @property
    def channels(self) -> int:
        return self.values.shape[0]

    @property
    def n_frames(self) -> int:
        return self.values.shape[1]

    @property
    def top_bin(self) -> int:
        """The highest model STFT bin the mask holds; above it, the extension column."""
        return self.values.shape[-1] - 2

    @property
    def mask(self) -> np.ndarray:
        """The vocals mask (a view): ``[n_frames, top_bin + 1]`` for one channel,
        ``[channels, n_frames, top_bin + 1]`` for two."""
        m = self.values[..., :-1]
        return m[0] if self.channels == 1 else m

    def downmixed(self) -> "ModelMask":
        """One channel: the mean of the channels' masks (a stereo model's mask for a mono output)."""
        if self.channels == 1:
            return self
        return ModelMask(self.values.mean(axis=0, keepdims=True, dtype=np.float32), self.config, self.norm)


def _band_columns(top_bin: int) -> tuple[int, int, int]:
    keep = int(math.floor(KEEP_FRACTION * top_bin))
    lo = int(math.ceil(EXTEND_BAND[0] * top_bin))
    hi = int(math.floor(EXTEND_BAND[1] * top_bin))
    return keep, lo, hi


def top_band_value(mask: np.ndarray, magnitude: np.ndarray, config: SpectrogramConfig | None = None) -> np.ndarray:
    """Per frame, the mixture-magnitude-weighted mean of ``mask`` over :data:`EXTEND_BAND` of its
    top bin.

    ``mask`` and ``magnitude`` are ``[..., n_frames, top_bin + 1]`` (model STFT bins
    ``0..top_bin``; ``config`` is not needed and kept for callers that pass it); frames whose
    band is silent get the plain mean. Returns float32 ``[..., n_frames]``.
    """
    _, lo, hi = _band_columns(mask.shape[-1] - 1)
    m = mask[..., lo : hi + 1].astype(np.float32, copy=False)
    w = magnitude[..., lo : hi + 1].astype(np.float32, copy=False)
    num = np.einsum("...tk,...tk->...t", m, w)
    den = w.sum(axis=-1)
    plain = m.mean(axis=-1)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), plain)
    return out.astype(np.float32)


def extension_value(kind: str, mask: np.ndarray, magnitude: np.ndarray, first_bin: int) -> np.ndarray:
    """The extension (:data:`EXTENSIONS`) of ``mask [..., n_frames, top_bin + 1]`` (model STFT
    bins 0..top_bin, the network's from ``first_bin``) with the mixture's ``magnitude`` of the
    same shape: float32 ``[..., n_frames]``."""
    if kind == "top_band":
        return top_band_value(mask, magnitude)
    if kind == "zeros":
        return np.zeros(mask.shape[:-1], dtype=np.float32)
    if kind == "average":
        return mask[..., first_bin:].mean(axis=-1, dtype=np.float32)
    raise StemforgeError(f"mask extension must be one of {EXTENSIONS}, got {kind!r}")


class MaskMapper:
    """Maps a :class:`ModelMask` onto the STFT grid of the output (see the module docstring).

    Args:
        model_mask: the song's mask at the model's STFT (one channel, or one per output channel).
        sample_rate: rate of the output signal (Hz).
        n_fft, hop_length: its STFT.
        hard_mask: binarize the mapped mask (``> 0.5``).

    When the output STFT is the model's (same rate, ``n_fft`` and hop: :attr:`identity`) every
    bin up to the mask's top bin gets the model's value as is and every bin above it the
    extension. Otherwise the mask is interpolated linearly in time (frame centres) and frequency;
    a mask that reaches the model's Nyquist (the seed's) is kept up to :data:`KEEP_FRACTION` of it
    when the output rate is higher, joined linearly to the extension between there and the
    model's Nyquist, and the extension above; a mask that stops below the model's Nyquist
    (Spleeter's 1024 bins) is joined to the extension over its top bin's width.
    """

    def __init__(self, model_mask: ModelMask, sample_rate: int, n_fft: int, hop_length: int, hard_mask: bool = False):
        cfg = model_mask.config
        self.model_mask = model_mask
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.hard_mask = hard_mask
        self.identity = sample_rate == cfg.sample_rate and n_fft == cfg.n_fft and hop_length == cfg.hop_length
        top = model_mask.top_bin
        ext = top + 1  # column of the extension value
        nyq = cfg.n_bins - 1
        n_out = n_fft // 2 + 1
        if self.identity:
            self.col0 = np.minimum(np.arange(n_out), ext)
            self.col1 = self.col0
            self.frac = np.zeros(n_out, dtype=np.float32)
            # The seed's case: every column is a bin, taken as is.
            self.plain = top == nyq
        else:
            self.plain = False
            # Output bin m sits at model-bin position m * (sample_rate / n_fft) / (sr_m / n_fft_m).
            pos = np.arange(n_out, dtype=np.float64) * (sample_rate / n_fft) / (cfg.sample_rate / cfg.n_fft)
            if top < nyq:
                col0 = np.minimum(np.floor(pos), ext).astype(np.int64)
                col1 = np.minimum(col0 + 1, ext)
                frac = np.clip(pos - col0, 0.0, 1.0)
                frac[col0 == ext] = 0.0
            elif sample_rate > cfg.sample_rate:
                keep, _, _ = _band_columns(top)
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
        """The mapped vocals mask of output frames ``start..stop-1``: float32 ``[n, n_fft//2 + 1]``
        for a one-channel mask, ``[channels, n, n_fft//2 + 1]`` for more."""
        values = self.model_mask.values
        if values.shape[0] == 1:
            values = values[0]
        last = values.shape[-2] - 1
        if self.identity:
            idx = np.minimum(np.arange(start, stop), last)
            out = values[..., idx, :-1] if self.plain else values[..., idx, :][..., self.col0]
        else:
            u = np.arange(start, stop, dtype=np.float64) * self.frame_scale
            t0 = np.minimum(np.floor(u).astype(np.int64), last)
            t1 = np.minimum(t0 + 1, last)
            a = np.clip(u - t0, 0.0, 1.0).astype(np.float32)[:, None]
            r = values[..., t0, :] * (1.0 - a) + values[..., t1, :] * a
            out = r[..., self.col0] * (1.0 - self.frac) + r[..., self.col1] * self.frac
        if self.hard_mask:
            return (out > 0.5).astype(np.float32)
        return np.ascontiguousarray(out, dtype=np.float32)
