"""Separate songs into vocals and accompaniment with a U-Net mask (the seed's method, full band).

The seed multiplies the mixture's STFT magnitude by the U-Net mask and keeps the mixture's
phase; the accompaniment gets ``1 - mask``. stemforge does the same, in three layers:

1. **The mask, at the model's STFT** (16 kHz mono, n_fft 1024, hop 512: the checkpoint's
   :class:`~stemforge.core.config.SpectrogramConfig`). The input is downmixed (channel mean) and
   resampled (soxr HQ) to that rate. Magnitudes are divided by **one number per song, the maximum
   of the whole song's mixture magnitude** (as in training), found by a first cheap pass over the
   16 kHz STFT. The network sees bins 1..512 and the DC bin gets mask 0. A checkpoint trained on
   ``accompaniment`` gives ``1 - its mask`` for the vocals (DC still 0 for the vocals).
   Long songs go through the network in windows of ``window_frames`` frames whose starts are
   multiples of 64 frames (the U-Net's six stride-2 levels make it shift-equivariant only for such
   shifts); consecutive windows overlap by ``overlap_frames``: the outer quarter of the overlap on
   each side is dropped (the frames nearest a window's edge, where zero padding changes the
   output) and the middle half is a linear crossfade. Away from the song's ends the windowed mask
   equals the whole-song mask to float rounding once the dropped margin (``overlap / 4``) covers the
   U-Net's edge effect (measured: zero beyond 128 frames, below 1e-4 beyond 64 frames).

2. **The mask, mapped onto the output's STFT.** The output keeps the input's sample rate and
   channels by default. Each channel is transformed at its own rate with a Hann STFT whose
   ``n_fft`` is the smallest power of two at least as long as the model's window (64 ms: 4096 at
   44.1 and 48 kHz, 2048 at 32 kHz) and ``hop = n_fft / 4``. The 16 kHz mask is
   interpolated linearly in time (frame centres) and in frequency. Above the model's band it is
   extended from the top band: the 16 kHz signal holds little above 7.5 kHz (soxr HQ's passband
   ends at about 0.94 of Nyquist), so when the output rate exceeds the model's, the mask is used
   up to ``KEEP_FRACTION`` (7.5 kHz), and at and above the model's Nyquist (8 kHz) every bin gets
   the frame's *top-band value*: the mixture-magnitude-weighted mean of the mask over
   ``EXTEND_BAND`` (6 to 7.5 kHz); between 7.5 and 8 kHz the two are joined linearly. When the
   output STFT is the model's own (``output_sample_rate`` = 16000 and mono), the mask is used as
   is: the seed's 16 kHz output.

3. **Stems.** vocals = iSTFT(mask * X) (weighted overlap-add, Hann synthesis window, divided by
   the window's sum of squares, as ``librosa.istft``), and accompaniment = input - vocals, so the
   two add up to the input to float rounding (the iSTFT reconstructs perfectly, so this is also
   ``iSTFT((1 - mask) * X)``). ``hard_mask`` replaces the mapped mask by ``mask > 0.5`` (as the
   seed offers).

Memory: the full-band STFT is never held whole. It is computed in blocks on a global frame grid
(frame ``i`` centred at sample ``i * hop``), so blockwise output equals whole-signal output
exactly. :meth:`Separator.separate_file` also streams the decoding (twice: once for the 16 kHz
mono copy, once for the full band) and the writing, so a 30-minute song needs only its 16 kHz
mono copy and its 16 kHz mask in memory (about 230 MB).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import AudioError, StemforgeError

STEMS = ("vocals", "accompaniment")

#: Fraction of the model's Nyquist up to which the mask is used as is when the output rate is
#: higher than the model's (7.5 kHz for a 16 kHz model: where soxr HQ's passband ends).
KEEP_FRACTION = 0.9375
#: Band (fractions of the model's Nyquist) whose magnitude-weighted mean mask extends the mask
#: above the model's band: 6 to 7.5 kHz for a 16 kHz model.
EXTEND_BAND = (0.75, 0.9375)
#: Window starts must be multiples of this many frames (six stride-2 levels of the U-Net).
FRAME_MULTIPLE = 64

#: Default model window (frames of the model's STFT: 2048 frames = 65.5 s at 16 kHz / hop 512).
DEFAULT_WINDOW_FRAMES = 2048
#: Default overlap of consecutive windows (frames).
DEFAULT_OVERLAP_FRAMES = 256
#: Default number of windows per forward pass.
DEFAULT_BATCH_SIZE = 2
#: Samples per block of the full-band STFT and of streamed decoding.
BLOCK_SAMPLES = 1 << 18

MaskFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[float], None]


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> str:
    """``"auto"``/None -> ``"cuda"`` when available else ``"cpu"``; other names pass through."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise StemforgeError(f"device {device!r} requested but CUDA is not available")
    return str(device)


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


def _window(name: str, n_fft: int) -> np.ndarray:
    from scipy.signal import get_window

    return get_window(name, n_fft, fftbins=True).astype(np.float32)


#: Threads of the batched FFTs (scipy.fft ``workers``).
FFT_WORKERS = max(1, min(4, os.cpu_count() or 1))


def _rfft(frames: np.ndarray) -> np.ndarray:
    import scipy.fft

    return scipy.fft.rfft(frames, axis=-1, workers=FFT_WORKERS)


def _irfft(spec: np.ndarray, n: int) -> np.ndarray:
    import scipy.fft

    return scipy.fft.irfft(spec, n=n, axis=-1, workers=FFT_WORKERS)


def frame_spectra(x: np.ndarray, start: int, stop: int, n_fft: int, hop_length: int, window: np.ndarray) -> np.ndarray:
    """STFT frames ``start..stop-1`` of ``x [..., samples]`` on the global grid, zero padded.

    Frame ``i`` covers samples ``[i*hop - n_fft//2, i*hop + n_fft//2)`` (``center=True`` with
    zero padding, as ``librosa.stft``); samples outside ``x`` are zeros. Returns complex64
    ``[..., stop - start, n_fft // 2 + 1]``.
    """
    half = n_fft // 2
    lo = start * hop_length - half
    hi = (stop - 1) * hop_length + n_fft - half
    n = x.shape[-1]
    if lo >= 0 and hi <= n:
        seg = x[..., lo:hi]
    else:
        seg = np.zeros(x.shape[:-1] + (hi - lo,), dtype=np.float32)
        a, b = max(lo, 0), min(hi, n)
        if b > a:
            seg[..., a - lo : b - lo] = x[..., a:b]
    frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft, axis=-1)[..., ::hop_length, :]
    return _rfft(frames * window).astype(np.complex64, copy=False)


def overlap_add(frames: np.ndarray, hop_length: int) -> np.ndarray:
    """Overlap-add ``frames [..., n_frames, n_fft]`` at ``hop_length`` -> ``[..., (n-1)*hop + n_fft]``."""
    *lead, n_frames, n_fft = frames.shape
    length = (n_frames - 1) * hop_length + n_fft
    if n_fft % hop_length == 0:
        # Split every frame into n_fft / hop blocks of one hop: block r of frame i lands on
        # output block i + r, so the sum is n_fft / hop strided additions without copies.
        ratio = n_fft // hop_length
        blocks = np.zeros(tuple(lead) + (n_frames + ratio - 1, hop_length), dtype=np.float32)
        parts = frames.reshape(tuple(lead) + (n_frames, ratio, hop_length))
        for r in range(ratio):
            blocks[..., r : r + n_frames, :] += parts[..., :, r, :]
        return blocks.reshape(tuple(lead) + (length,))
    out = np.zeros(tuple(lead) + (length,), dtype=np.float32)
    for i in range(n_frames):
        out[..., i * hop_length : i * hop_length + n_fft] += frames[..., i, :]
    return out


def window_envelope(window_sq: np.ndarray, n_frames: int, hop_length: int) -> np.ndarray:
    """Overlap-added squared window of ``n_frames`` frames: ``[(n-1)*hop + n_fft]`` float32."""
    n_fft = window_sq.shape[0]
    if n_fft % hop_length == 0:
        ratio = n_fft // hop_length
        blocks = np.zeros((n_frames + ratio - 1, hop_length), dtype=np.float32)
        parts = window_sq.reshape(ratio, hop_length)
        for r in range(ratio):
            blocks[r : r + n_frames] += parts[r]
        return blocks.reshape(-1)
    return overlap_add(np.broadcast_to(window_sq, (n_frames, n_fft)), hop_length)


# ------------------------------------------------------------------------------------------
# Model windows
# ------------------------------------------------------------------------------------------


def plan_windows(n_frames: int, window_frames: int | None, overlap_frames: int) -> list[tuple[int, int]]:
    """Model windows ``[(start, stop), ...]`` covering ``pad64(n_frames)`` frames.

    Starts are multiples of 64; every window is ``window_frames`` long except the last, which
    ends at ``pad64(n_frames)`` (where the whole-song input ends too, so its zero padding is the
    same). ``window_frames`` None gives one window: the whole song.
    """
    total = max(FRAME_MULTIPLE, -(-n_frames // FRAME_MULTIPLE) * FRAME_MULTIPLE)
    if window_frames is None or window_frames >= total:
        return [(0, total)]
    step = window_frames - overlap_frames
    out = []
    start = 0
    while True:
        stop = min(start + window_frames, total)
        out.append((start, stop))
        if stop == total:
            return out
        start += step


def window_weights(windows: list[tuple[int, int]], overlap_frames: int) -> list[np.ndarray]:
    """Crossfade weight ``[stop - start]`` of every window; they sum to 1 on every frame.

    In the overlap of window k and k+1 (``[start_{k+1}, start_{k+1} + overlap)``), the first
    and last quarter belong wholly to window k and k+1 respectively and the middle half is a
    linear crossfade.
    """
    q = overlap_frames // 4
    fade = overlap_frames - 2 * q
    ramp = _ramp(fade)
    out = []
    for k, (start, stop) in enumerate(windows):
        w = np.ones(stop - start, dtype=np.float32)
        if k > 0:
            w[:q] = 0.0
            seg = w[q : q + fade]
            seg *= ramp[: seg.shape[0]]
        if k + 1 < len(windows):
            nxt = windows[k + 1][0] - start
            seg = w[nxt + q : nxt + q + fade]
            seg *= 1.0 - ramp[: seg.shape[0]]
            w[nxt + q + fade :] = 0.0
        out.append(w)
    return out


def _ramp(n: int) -> np.ndarray:
    """Linear ramp of ``n`` values strictly inside (0, 1): ``(j + 0.5) / n``."""
    return ((np.arange(n, dtype=np.float32) + 0.5) / max(n, 1)).astype(np.float32)


# ------------------------------------------------------------------------------------------
# The mask at the model's STFT, and its mapping onto an output STFT
# ------------------------------------------------------------------------------------------


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


class StreamingMasker:
    """Blockwise ``vocals = iSTFT(mask * STFT(x))`` over a signal given in blocks.

    Frames lie on the global grid of :func:`frame_spectra` (frame ``i`` centred at sample
    ``i * hop``; ``1 + n // hop`` frames for ``n`` samples, as ``librosa.stft(center=True)``),
    so the output does not depend on the block sizes and equals the whole-signal computation.
    ``push`` returns the ``(input, vocals)`` samples that became final, in order; ``finish``
    the rest. Memory: one block plus ``n_fft`` samples per channel.
    """

    def __init__(self, mapper: MaskMapper, channels: int, window_name: str = "hann", max_frames: int = 2048):
        self.mapper = mapper
        self.n_fft = mapper.n_fft
        self.hop = mapper.hop_length
        self.half = self.n_fft // 2
        self.window = _window(window_name, self.n_fft)
        self.window_sq = (self.window * self.window).astype(np.float32)
        self.channels = channels
        self.max_frames = max_frames
        self.buf = np.zeros((channels, self.half), dtype=np.float32)
        self.buf_pos = -self.half  # global sample index of buf[:, 0]
        self.n_in = 0
        self.next_frame = 0
        self.acc = np.zeros((channels, 0), dtype=np.float32)
        self.acc_den = np.zeros(0, dtype=np.float32)
        self.acc_pos = -self.half  # global sample index of acc[:, 0]
        self.emitted = 0
        self.finished = False

    def push(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed ``block [channels, n]``; return final ``(input, vocals)`` ``[channels, m]``."""
        if self.finished:
            raise StemforgeError("StreamingMasker: push after finish")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise StemforgeError(f"StreamingMasker: expected [{self.channels}, n] blocks, got {block.shape}")
        self.buf = np.concatenate([self.buf, block], axis=1)
        self.n_in += block.shape[1]
        last = (self.n_in - self.half) // self.hop  # frames fully inside the received samples
        self._frames_until(last + 1)
        return self._emit(self.next_frame * self.hop - self.half)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """No more input: process the last frames (zero padded) and return the rest."""
        if self.finished:
            raise StemforgeError("StreamingMasker: finish called twice")
        self.finished = True
        n_total = self.n_in
        n_frames = 1 + n_total // self.hop
        need = (n_frames - 1) * self.hop + self.n_fft - self.half  # one past the last sample read
        have = self.buf_pos + self.buf.shape[1]
        if need > have:
            self.buf = np.concatenate([self.buf, np.zeros((self.channels, need - have), np.float32)], axis=1)
        self._frames_until(n_frames)
        return self._emit(n_total)

    def _frames_until(self, stop: int) -> None:
        while self.next_frame < stop:
            f0 = self.next_frame
            f1 = min(stop, f0 + self.max_frames)
            lo = f0 * self.hop - self.half
            seg = self.buf[:, lo - self.buf_pos : lo - self.buf_pos + (f1 - f0 - 1) * self.hop + self.n_fft]
            frames = np.lib.stride_tricks.sliding_window_view(seg, self.n_fft, axis=-1)[:, :: self.hop, :]
            spec = _rfft(frames * self.window)
            spec *= self.mapper.rows(f0, f1)
            y = _irfft(spec, self.n_fft).astype(np.float32, copy=False)
            y *= self.window
            ola = overlap_add(y, self.hop)
            den = window_envelope(self.window_sq, f1 - f0, self.hop)
            end = lo + ola.shape[1]
            acc_end = self.acc_pos + self.acc.shape[1]
            if end > acc_end:
                self.acc = np.concatenate([self.acc, np.zeros((self.channels, end - acc_end), np.float32)], axis=1)
                self.acc_den = np.concatenate([self.acc_den, np.zeros(end - acc_end, np.float32)])
            o = lo - self.acc_pos
            self.acc[:, o : o + ola.shape[1]] += ola
            self.acc_den[o : o + den.shape[0]] += den
            self.next_frame = f1

    def _emit(self, upto: int) -> tuple[np.ndarray, np.ndarray]:
        upto = min(upto, self.n_in)
        start = self.emitted
        if upto <= start:
            empty = np.zeros((self.channels, 0), np.float32)
            self._trim()
            return empty, empty
        a = start - self.acc_pos
        num = self.acc[:, a : a + upto - start]
        den = self.acc_den[a : a + upto - start]
        tiny = np.finfo(np.float32).tiny
        ok = den > tiny
        vocals = np.where(ok, num / np.where(ok, den, 1.0), num).astype(np.float32)
        b = start - self.buf_pos
        x = self.buf[:, b : b + upto - start].copy()
        self.emitted = upto
        self._trim()
        return x, vocals

    def _trim(self) -> None:
        keep_from = min(self.emitted, self.next_frame * self.hop - self.half)
        cut = keep_from - self.buf_pos
        if cut > 0:
            self.buf = self.buf[:, cut:]
            self.buf_pos = keep_from
        cut = keep_from - self.acc_pos
        if cut > 0:
            self.acc = self.acc[:, cut:]
            self.acc_den = self.acc_den[cut:]
            self.acc_pos = keep_from


def inference_net(model: Any) -> Any:
    """An inference copy of ``model``: BatchNorm folded into the preceding (transposed)
    convolution for a stemforge :class:`~stemforge.train.model.UNet` in eval mode (the same
    function to float rounding), and channels-last memory format (about a third less CPU time
    for the full-width U-Net). Other modules are only copied and made channels-last."""
    import copy

    import torch
    from torch import nn

    from stemforge.train.model import UNet

    net = copy.deepcopy(model).eval()
    if isinstance(net, UNet):
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        with torch.no_grad():
            for i in range(1, 7):
                conv, norm = getattr(net, f"conv{i}"), getattr(net, f"norm{i}")
                if isinstance(norm, nn.BatchNorm2d):
                    setattr(net, f"conv{i}", fuse_conv_bn_eval(conv, norm))
                    setattr(net, f"norm{i}", nn.Identity())
            for i in range(1, 6):
                conv, norm = getattr(net, f"deconv{i}"), getattr(net, f"denorm{i}")
                if isinstance(norm, nn.BatchNorm2d):
                    setattr(net, f"deconv{i}", fuse_conv_bn_eval(conv, norm, transpose=True))
                    setattr(net, f"denorm{i}", nn.Identity())
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------
# Streamed decoding
# ------------------------------------------------------------------------------------------


def _interleave(x: np.ndarray) -> np.ndarray:
    """``[channels, n]`` -> C-contiguous ``[n, channels]`` (per-channel copies: several times
    faster than a generic transpose copy for two channels)."""
    out = np.empty((x.shape[1], x.shape[0]), dtype=np.float32)
    for c in range(x.shape[0]):
        out[:, c] = x[c]
    return out


def _deinterleave(x: np.ndarray) -> np.ndarray:
    """``[n, channels]`` -> C-contiguous ``[channels, n]``."""
    out = np.empty((x.shape[1], x.shape[0]), dtype=np.float32)
    for c in range(x.shape[1]):
        out[c] = x[:, c]
    return out


def _decode_blocks(path: Path, block_samples: int) -> Iterator[np.ndarray]:
    """Yield float32 ``[channels, n]`` blocks of ``path`` at its native rate (stream 0)."""
    from stemforge.core import audio

    suffix = path.suffix.lower()
    if suffix in audio.PYAV_EXTENSIONS:
        yield from _decode_blocks_pyav(path, block_samples)
        return
    import soundfile as sf

    try:
        f = sf.SoundFile(str(path))
    except Exception as exc:
        raise AudioError(path, f"not a readable audio file ({_short(exc)})") from None
    with f:
        while True:
            try:
                data = f.read(block_samples, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioError(path, f"decoding failed ({_short(exc)})") from None
            if data.shape[0] == 0:
                return
            yield _deinterleave(data)


def _decode_blocks_pyav(path: Path, block_samples: int) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise AudioError(path, f"not a readable audio file ({_short(exc)})") from None
    with container:
        streams = list(container.streams.audio)
        if not streams:
            raise AudioError(path, "container holds no audio stream")
        s = streams[0]
        s.thread_type = "AUTO"
        channels = int(s.channels)
        resampler = av.AudioResampler(format="fltp", layout=s.layout, rate=s.rate)
        pending: list[np.ndarray] = []
        n_pending = 0

        def fix(a: np.ndarray) -> np.ndarray:
            a = a.astype(np.float32, copy=False)
            if a.shape[0] != channels and a.shape[0] == 1 and channels > 1:
                a = np.repeat(a, channels, axis=0)
            return a

        try:
            for frame in container.decode(s):
                for out in resampler.resample(frame):
                    a = fix(out.to_ndarray())
                    pending.append(a)
                    n_pending += a.shape[1]
                    if n_pending >= block_samples:
                        yield np.concatenate(pending, axis=1)
                        pending, n_pending = [], 0
            for out in resampler.resample(None):
                a = fix(out.to_ndarray())
                pending.append(a)
                n_pending += a.shape[1]
        except AudioError:
            raise
        except Exception as exc:
            raise AudioError(path, f"decoding failed ({_short(exc)})") from None
        if pending:
            yield np.concatenate(pending, axis=1)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


class _Resampler:
    """Streamed soxr resampling of ``[channels, n]`` blocks (identity when rates are equal)."""

    def __init__(self, channels: int, orig_rate: int, target_rate: int, quality: str):
        self.identity = orig_rate == target_rate
        self.channels = channels
        if not self.identity:
            import soxr

            self.stream = soxr.ResampleStream(orig_rate, target_rate, channels, dtype="float32", quality=quality)

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self.identity:
            return block
        out = self.stream.resample_chunk(_interleave(block), last=last)
        return _deinterleave(np.asarray(out, dtype=np.float32).reshape(-1, self.channels))

    def flush(self) -> np.ndarray:
        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


# ------------------------------------------------------------------------------------------
# The Separator
# ------------------------------------------------------------------------------------------


@dataclass
class FileSeparation:
    """What :meth:`Separator.separate_file` did.

    Attributes:
        path: the input file.
        outputs: stem name -> written file.
        input_sample_rate, input_channels: as decoded.
        sample_rate, channels: of the written stems.
        n_samples: samples per channel written.
        seconds: wall-clock time, decode to files written.
    """

    path: Path
    outputs: dict[str, Path]
    input_sample_rate: int
    input_channels: int
    sample_rate: int
    channels: int
    n_samples: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate if self.sample_rate else 0.0

    @property
    def speed(self) -> float:
        """Seconds of audio per second of wall-clock time (x real time)."""
        return self.duration_s / self.seconds if self.seconds > 0 else float("inf")


class Separator:
    """Vocals/accompaniment separation with a U-Net mask (or any mask function).

    Args:
        model: a :class:`~stemforge.train.model.UNet` (any ``nn.Module`` mapping
            ``[batch, 1, 512, n_frames]`` normalized magnitudes to a mask in (0, 1) of the same
            shape), or None with ``mask_fn``.
        spectrogram_config: the STFT the model was trained on.
        target: what the model's mask extracts, ``"vocals"`` or ``"accompaniment"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        hard_mask: binarize the mask (``> 0.5``) after mapping it to the output STFT.
        window_frames: model window in frames (multiple of 64), None for the whole song at once.
        overlap_frames: overlap of consecutive windows (multiple of 64, at most half a window).
        batch_size: windows per forward pass.
        mask_fn: instead of a model, ``fn(mixture [samples] float32 at the config's rate) ->
            vocals mask [n_frames, n_bins]`` (the whole song at once, all bins used as given):
            oracle masks for tests and references.

    The model is put in eval mode and moved to ``device``; inference runs under
    ``torch.inference_mode()``.
    """

    def __init__(
        self,
        model: Any,
        spectrogram_config: SpectrogramConfig | None = None,
        target: str = "vocals",
        device: str = "auto",
        *,
        hard_mask: bool = False,
        window_frames: int | None = DEFAULT_WINDOW_FRAMES,
        overlap_frames: int = DEFAULT_OVERLAP_FRAMES,
        batch_size: int = DEFAULT_BATCH_SIZE,
        mask_fn: MaskFn | None = None,
    ):
        self.config = spectrogram_config if spectrogram_config is not None else SpectrogramConfig()
        if not isinstance(self.config, SpectrogramConfig):
            raise StemforgeError(f"Separator: spectrogram_config must be a SpectrogramConfig, got {type(self.config).__name__}")
        if self.config.pad_mode != "constant" or not self.config.center:
            raise StemforgeError(f"Separator: only centred, zero-padded STFTs are supported, got {self.config.describe()}")
        if target not in STEMS:
            raise StemforgeError(f"Separator: target must be one of {STEMS}, got {target!r}")
        if (model is None) == (mask_fn is None):
            raise StemforgeError("Separator: give exactly one of model and mask_fn")
        if window_frames is not None:
            if window_frames <= 0 or window_frames % FRAME_MULTIPLE:
                raise StemforgeError(f"Separator: window_frames must be a positive multiple of {FRAME_MULTIPLE}, got {window_frames}")
            if overlap_frames < 0 or overlap_frames % FRAME_MULTIPLE or 2 * overlap_frames > window_frames:
                raise StemforgeError(
                    f"Separator: overlap_frames must be a multiple of {FRAME_MULTIPLE} between 0 and window_frames/2, got {overlap_frames}"
                )
        if batch_size < 1:
            raise StemforgeError(f"Separator: batch_size must be >= 1, got {batch_size}")
        self.target = target
        self.hard_mask = bool(hard_mask)
        self.window_frames = window_frames
        self.overlap_frames = overlap_frames
        self.batch_size = batch_size
        self.mask_fn = mask_fn
        self.model = model
        self.device = "cpu"
        if model is not None:
            self.device = resolve_device(device)
            n_bins = getattr(getattr(model, "config", None), "n_bins", self.config.n_bins - 1)
            if n_bins != self.config.n_bins - 1:
                raise StemforgeError(
                    f"Separator: the model sees {n_bins} bins but the STFT gives {self.config.n_bins - 1} above DC"
                )
            self.model = model.to(self.device).eval()
            self._net = inference_net(self.model)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", **options: Any) -> "Separator":
        """Load a checkpoint (:func:`stemforge.train.checkpoint.load_checkpoint`) and wrap it.

        ``options`` are the keyword arguments of :class:`Separator` (``hard_mask``,
        ``window_frames``...). Raises :class:`~stemforge.core.errors.CheckpointError` for a bad file.
        """
        from stemforge.train.checkpoint import load_checkpoint

        dev = resolve_device(device)
        ckpt = load_checkpoint(path, map_location=dev)
        sep = cls(ckpt.model, ckpt.spectrogram_config, ckpt.target, dev, **options)
        sep.checkpoint = ckpt
        return sep

    @classmethod
    def from_mask_fn(cls, fn: MaskFn, spectrogram_config: SpectrogramConfig | None = None, **options: Any) -> "Separator":
        """A Separator whose vocals mask comes from ``fn(mixture_16k) -> [n_frames, n_bins]``."""
        return cls(None, spectrogram_config, "vocals", "cpu", mask_fn=fn, **options)

    # -- the mask at the model's STFT ------------------------------------------------------------

    def model_mask(self, mixture: np.ndarray, progress: ProgressFn | None = None) -> ModelMask:
        """The vocals mask of ``mixture [samples]`` (mono, at ``config.sample_rate``).

        Returns a :class:`ModelMask` (``[n_frames, n_bins + 1]``: mask and top-band value).
        ``progress(fraction)`` is called after every batch of windows.
        """
        cfg = self.config
        x = np.ascontiguousarray(mixture, dtype=np.float32)
        if x.ndim != 1:
            raise StemforgeError(f"model_mask: expected a mono signal [samples], got shape {x.shape}")
        n_frames = cfg.n_frames(x.shape[0])
        window = _window(cfg.window, cfg.n_fft)
        values = np.zeros((n_frames, cfg.n_bins + 1), dtype=np.float32)
        if self.mask_fn is not None:
            mask = np.asarray(self.mask_fn(x), dtype=np.float32)
            if mask.shape != (n_frames, cfg.n_bins):
                raise StemforgeError(f"mask_fn returned shape {mask.shape}, expected {(n_frames, cfg.n_bins)}")
            values[:, :-1] = mask
            mag = np.abs(frame_spectra(x, 0, n_frames, cfg.n_fft, cfg.hop_length, window))
            values[:, -1] = top_band_value(mask, mag, cfg)
            return ModelMask(values, cfg, float(mag.max()) if mag.size else 0.0)
        norm = self._max_magnitude(x, n_frames, window)
        if norm <= 0.0 or not np.isfinite(norm):
            # Silence (or garbage): no vocals.
            return ModelMask(values, cfg, 0.0)
        self._run_model(x, n_frames, window, norm, values, progress)
        return ModelMask(values, cfg, norm)

    def estimate_mask(self, mixture: np.ndarray) -> np.ndarray:
        """``[n_frames, n_bins]`` float32 vocals mask of ``mixture [samples]`` at the model's STFT."""
        return np.ascontiguousarray(self.model_mask(mixture).mask)

    def _max_magnitude(self, x: np.ndarray, n_frames: int, window: np.ndarray, chunk: int = 4096) -> float:
        cfg = self.config
        peak = 0.0
        for f0 in range(0, n_frames, chunk):
            f1 = min(n_frames, f0 + chunk)
            mag = np.abs(frame_spectra(x, f0, f1, cfg.n_fft, cfg.hop_length, window))
            peak = max(peak, float(mag.max()))
        return peak

    def _run_model(
        self, x: np.ndarray, n_frames: int, window: np.ndarray, norm: float, values: np.ndarray, progress: ProgressFn | None
    ) -> None:
        import torch

        cfg = self.config
        windows = plan_windows(n_frames, self.window_frames, self.overlap_frames)
        weights = window_weights(windows, self.overlap_frames if len(windows) > 1 else 0)
        inv = np.float32(1.0 / norm)
        # Group windows of equal width into batches (all but the last are full width).
        groups: list[list[int]] = []
        for k, (start, stop) in enumerate(windows):
            if groups and len(groups[-1]) < self.batch_size and (windows[groups[-1][0]][1] - windows[groups[-1][0]][0]) == stop - start:
                groups[-1].append(k)
            else:
                groups.append([k])
        with torch.inference_mode():
            for g, group in enumerate(groups):
                width = windows[group[0]][1] - windows[group[0]][0]
                batch = np.zeros((len(group), 1, cfg.n_bins - 1, width), dtype=np.float32)
                mags = []
                for b, k in enumerate(group):
                    start, stop = windows[k]
                    valid = min(stop, n_frames) - start
                    mag = np.abs(frame_spectra(x, start, start + valid, cfg.n_fft, cfg.hop_length, window))
                    mags.append(mag)
                    batch[b, 0, :, :valid] = (mag[:, 1:] * inv).T
                inp = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
                out = self._net(inp)
                if out.shape != inp.shape:
                    raise StemforgeError(f"the model returned shape {tuple(out.shape)} for input {tuple(inp.shape)}")
                out = out.float().cpu().numpy()
                for b, k in enumerate(group):
                    start, stop = windows[k]
                    valid = min(stop, n_frames) - start
                    m = out[b, 0, :, :valid].T  # [valid, n_bins - 1]
                    if self.target == "accompaniment":
                        m = 1.0 - m
                    full = np.zeros((valid, cfg.n_bins), dtype=np.float32)
                    full[:, 1:] = m
                    w = weights[k][:valid, None]
                    values[start : start + valid, :-1] += w * full
                    values[start : start + valid, -1] += w[:, 0] * top_band_value(full, mags[b], cfg)
                if progress is not None:
                    progress((g + 1) / len(groups))

    # -- separation -------------------------------------------------------------------------------

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        output_sample_rate: int | None = None,
        mono: bool = False,
        progress: ProgressFn | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate ``audio`` (``[samples]`` or ``[channels, samples]`` float, ``sample_rate`` Hz).

        Returns ``{"vocals": array, "accompaniment": array}`` float32 at ``output_sample_rate``
        (default: the input's) with the input's channels (one when ``mono``), shaped like the
        input (1-D in, 1-D out). ``vocals + accompaniment`` equals the (downmixed, resampled)
        input to float rounding. ``progress(fraction)`` (0..1) is called now and then; an
        exception it raises stops the separation.
        """
        from stemforge.core import audio as audio_io

        x = np.asarray(audio)
        if x.ndim not in (1, 2) or x.size == 0:
            raise StemforgeError(f"separate: audio must be a non-empty [samples] or [channels, samples] array, got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise StemforgeError(f"separate: audio must be floating point, got {x.dtype}")
        _check_rate(sample_rate)
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise StemforgeError("separate: audio holds NaN or infinite values")
        one_d = x.ndim == 1
        x2 = x[None, :] if one_d else x
        cfg = self.config
        mix = audio_io.resample(audio_io.to_mono(x2), sample_rate, cfg.sample_rate, cfg.resample_quality)
        note = progress or (lambda _f: None)
        note(0.0)
        mm = self.model_mask(mix, lambda f: note(0.6 * f))
        work = audio_io.to_mono(x2)[None, :] if mono else x2
        out_rate = output_sample_rate or sample_rate
        _check_rate(out_rate)
        work = audio_io.resample(work, sample_rate, out_rate, cfg.resample_quality)
        work = np.ascontiguousarray(work, dtype=np.float32)
        vocals = np.empty_like(work)
        masker = self._masker(mm, out_rate, work.shape[0])
        pos = 0
        for b0 in range(0, work.shape[1], BLOCK_SAMPLES):
            _, v = masker.push(work[:, b0 : b0 + BLOCK_SAMPLES])
            vocals[:, pos : pos + v.shape[1]] = v
            pos += v.shape[1]
            note(0.6 + 0.4 * min(1.0, pos / max(1, work.shape[1])))
        _, v = masker.finish()
        vocals[:, pos : pos + v.shape[1]] = v
        note(1.0)
        acc = work - vocals
        if one_d:
            return {"vocals": vocals[0], "accompaniment": acc[0]}
        return {"vocals": vocals, "accompaniment": acc}

    def _masker(self, mm: ModelMask, sample_rate: int, channels: int) -> StreamingMasker:
        n_fft, hop = output_stft_size(sample_rate, self.config)
        mapper = MaskMapper(mm, sample_rate, n_fft, hop, hard_mask=self.hard_mask)
        return StreamingMasker(mapper, channels, self.config.window)

    def separate_file(
        self,
        path: str | os.PathLike,
        outputs: Mapping[str, str | os.PathLike],
        *,
        output_sample_rate: int | None = None,
        mono: bool = False,
        subtype: str | None = None,
        progress: ProgressFn | None = None,
        block_samples: int = BLOCK_SAMPLES,
    ) -> FileSeparation:
        """Separate an audio file into files, streaming: memory does not grow with the full band.

        Args:
            path: any file :func:`stemforge.core.audio.load` reads (stream 0 of a container).
            outputs: stem name (``"vocals"``, ``"accompaniment"``) -> output path; the format
                follows the suffix (wav: 32-bit float by default; flac: 24-bit, values clipped to
                [-1, 1]). Each is written under a temporary name and renamed when complete.
            output_sample_rate: rate of the stems (default: the input's).
            mono: downmix the stems to one channel.
            subtype: soundfile subtype (e.g. ``"PCM_16"``), default per format.
            progress: called with the fraction done (0..1) now and then.

        Raises:
            AudioError: the input cannot be decoded or is empty; an output cannot be written.
        """
        from stemforge.core import audio as audio_io

        t_start = time.perf_counter()
        src = Path(path)
        unknown = set(outputs) - set(STEMS)
        if unknown or not outputs:
            raise StemforgeError(f"separate_file: outputs must map some of {STEMS} to paths, got {sorted(outputs)}")
        inf = audio_io.info(src)
        in_rate, in_ch = inf.sample_rate, inf.channels
        out_rate = output_sample_rate or in_rate
        _check_rate(out_rate)
        out_ch = 1 if mono else in_ch
        cfg = self.config
        note = progress or (lambda _f: None)
        expected = max(inf.n_samples, 1)
        timings: dict[str, float] = {}

        # Pass 1: 16 kHz mono copy for the mask.
        t0 = time.perf_counter()
        rs = _Resampler(1, in_rate, cfg.sample_rate, cfg.resample_quality)
        parts: list[np.ndarray] = []
        n_in = 0
        for block in _decode_blocks(src, block_samples):
            if block.shape[0] != in_ch:
                raise AudioError(src, f"decoded {block.shape[0]} channels where the header says {in_ch}")
            n_in += block.shape[1]
            parts.append(rs.push(audio_io.to_mono(block)[None, :])[0])
            note(0.1 * min(1.0, n_in / expected))
        if n_in == 0:
            raise AudioError(src, "holds no samples")
        parts.append(rs.flush()[0])
        mix = np.concatenate(parts) if len(parts) > 1 else parts[0]
        del parts
        timings["decode_16k"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mm = self.model_mask(mix, lambda f: note(0.1 + 0.5 * f))
        del mix
        timings["mask"] = time.perf_counter() - t0
        note(0.6)

        # Pass 2: full band, streamed to the writers.
        t0 = time.perf_counter()
        writers = {stem: _StemWriter(Path(p), out_rate, out_ch, subtype) for stem, p in outputs.items()}
        try:
            masker = self._masker(mm, out_rate, out_ch)
            rs2 = _Resampler(out_ch, in_rate, out_rate, cfg.resample_quality)
            n_done = 0
            n_out = 0

            def write(x: np.ndarray, v: np.ndarray) -> None:
                nonlocal n_out
                if x.shape[1] == 0:
                    return
                if "vocals" in writers:
                    writers["vocals"].write(v)
                if "accompaniment" in writers:
                    writers["accompaniment"].write(x - v)
                n_out += x.shape[1]

            for block in _decode_blocks(src, block_samples):
                n_done += block.shape[1]
                work = audio_io.to_mono(block)[None, :] if mono else block
                write(*masker.push(rs2.push(work)))
                note(0.6 + 0.4 * min(1.0, n_done / n_in))
            write(*masker.push(rs2.flush()))
            write(*masker.finish())
            paths = {stem: w.close() for stem, w in writers.items()}
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        timings["fullband_write"] = time.perf_counter() - t0
        note(1.0)
        return FileSeparation(
            path=src,
            outputs=paths,
            input_sample_rate=in_rate,
            input_channels=in_ch,
            sample_rate=out_rate,
            channels=out_ch,
            n_samples=n_out,
            seconds=time.perf_counter() - t_start,
            timings=timings,
        )


def _check_rate(rate: Any) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise StemforgeError(f"sample rate must be a positive integer (Hz), got {rate!r}")


class _StemWriter:
    """Streamed, atomic audio writing: a temporary file in the target folder, renamed on close."""

    def __init__(self, path: Path, sample_rate: int, channels: int, subtype: str | None):
        import soundfile as sf

        self.path = path
        fmt = path.suffix.lower().lstrip(".") or "wav"
        if fmt not in ("wav", "flac"):
            raise AudioError(path, f"cannot write .{fmt}: use .wav or .flac")
        if subtype is None:
            subtype = "FLOAT" if fmt == "wav" else "PCM_24"
        self.clip = not subtype.upper().startswith(("FLOAT", "DOUBLE"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AudioError(path, f"cannot create its folder ({_short(exc)})") from None
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.f = sf.SoundFile(str(self.tmp), "w", samplerate=sample_rate, channels=channels, subtype=subtype, format=fmt.upper())
        except Exception as exc:
            raise AudioError(path, f"cannot write ({_short(exc)})") from None

    def write(self, block: np.ndarray) -> None:
        data = np.clip(block, -1.0, 1.0) if self.clip else block
        try:
            self.f.write(_interleave(data))
        except Exception as exc:
            raise AudioError(self.path, f"cannot write ({_short(exc)})") from None

    def close(self) -> Path:
        try:
            self.f.close()
            os.replace(self.tmp, self.path)
        except Exception as exc:
            self.abort()
            raise AudioError(self.path, f"cannot write ({_short(exc)})") from None
        return self.path

    def abort(self) -> None:
        try:
            if not self.f.closed:
                self.f.close()
        except Exception:
            pass
        Path(self.tmp).unlink(missing_ok=True)
