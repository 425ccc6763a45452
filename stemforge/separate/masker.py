"""Blockwise full-band mask application: ``vocals = iSTFT(mask * STFT(x))`` over a signal
that arrives in blocks, on :mod:`stemforge.core.dsp`'s global frame grid (optionally through the
multichannel Wiener filter, :mod:`stemforge.separate.wiener`, on fixed blocks of that grid)."""

from __future__ import annotations

import numpy as np

from stemforge.core import dsp
from stemforge.core.errors import StemforgeError
from stemforge.separate.mapping import MaskMapper
from stemforge.separate.wiener import WIENER_BLOCK_FRAMES, wiener_vocals


class StreamingMasker:
    """Blockwise ``vocals = iSTFT(mask * STFT(x))`` over a signal given in blocks.

    Frames lie on the global grid of :func:`stemforge.core.dsp.stft_frames` (frame ``i`` centred at sample
    ``i * hop``; ``1 + n // hop`` frames for ``n`` samples, as ``librosa.stft(center=True)``),
    so the output does not depend on the block sizes and equals the whole-signal computation.
    ``push`` returns the ``(input, vocals)`` samples that became final, in order; ``finish``
    the rest. Memory: one block plus ``n_fft`` samples per channel.

    With ``wiener_iterations > 0`` the vocals' STFT is not ``mask * STFT(x)`` but the
    multichannel Wiener filter's estimate (:func:`~stemforge.separate.wiener.wiener_vocals`, EM
    from the soft mask) computed on blocks of ``wiener_block_frames`` frames that start at
    multiples of it on the global grid (each block its own spatial model), so the output still
    does not depend on how the input is cut; memory: one such block (300 frames x 2049 bins x 2
    channels: 10 MB per complex array) plus the input block.
    """

    def __init__(
        self,
        mapper: MaskMapper,
        channels: int,
        window_name: str = "hann",
        max_frames: int = 2048,
        *,
        wiener_iterations: int = 0,
        wiener_block_frames: int = WIENER_BLOCK_FRAMES,
    ):
        if wiener_iterations < 0 or wiener_block_frames < 1:
            raise StemforgeError(f"StreamingMasker: wiener_iterations >= 0 and wiener_block_frames >= 1, got {wiener_iterations}, {wiener_block_frames}")
        if wiener_iterations and mapper.hard_mask:
            raise StemforgeError("StreamingMasker: the Wiener filter needs the soft mask, not hard_mask")
        self.wiener_iterations = wiener_iterations
        if wiener_iterations:
            max_frames = wiener_block_frames
        self.mapper = mapper
        self.n_fft = mapper.n_fft
        self.hop = mapper.hop_length
        self.half = self.n_fft // 2
        self.window = dsp.get_window(window_name, self.n_fft)
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
        stop = last + 1
        if self.wiener_iterations:  # only whole blocks of the grid until the end
            stop = stop // self.max_frames * self.max_frames
        self._frames_until(stop)
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
            # seg starts at frame f0's first sample: its frames 0.. are frames f0.. of the grid
            spec = dsp.stft_frames(seg, 0, f1 - f0, self.n_fft, self.hop, self.window, center=False, workers=dsp.FFT_WORKERS)
            if self.wiener_iterations:
                spec = wiener_vocals(self.mapper.rows(f0, f1), spec, self.wiener_iterations)
            else:
                spec *= self.mapper.rows(f0, f1)
            ola = dsp.overlap_add(dsp.synthesis_frames(spec, self.n_fft, self.window, workers=dsp.FFT_WORKERS), self.hop)
            den = dsp.window_envelope(self.window_sq, f1 - f0, self.hop)
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
