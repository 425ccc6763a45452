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

Where each part lives: the model windows (1) in :mod:`stemforge.separate.windows`, the mask
and its mapping (2) in :mod:`stemforge.separate.mapping`, the streaming masker (3) in
:mod:`stemforge.separate.masker`, the inference copy of the network in
:mod:`stemforge.separate.inference`; every STFT is :func:`stemforge.core.dsp.stft_frames` (the
one ingest and training use), and decoding, resampling and writing are
:mod:`stemforge.core.audio`'s. This module is the API on top: :class:`Separator`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from stemforge.core import audio as audio_io
from stemforge.core import dsp
from stemforge.core.audio import BLOCK_SAMPLES
from stemforge.core.config import SpectrogramConfig
from stemforge.core.device import resolve_device
from stemforge.core.errors import AudioError, StemforgeError
from stemforge.separate.inference import inference_net
from stemforge.separate.mapping import MaskMapper, ModelMask, output_stft_size, top_band_value
from stemforge.separate.masker import StreamingMasker
from stemforge.separate.windows import FRAME_MULTIPLE, plan_windows, window_weights

#: The two stems a separation gives (vocals + accompaniment = the input).
STEMS = ("vocals", "accompaniment")

#: Default model window (frames of the model's STFT: 2048 frames = 65.5 s at 16 kHz / hop 512).
DEFAULT_WINDOW_FRAMES = 2048
#: Default overlap of consecutive windows (frames).
DEFAULT_OVERLAP_FRAMES = 256
#: Default number of windows per forward pass.
DEFAULT_BATCH_SIZE = 2


MaskFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[float], None]


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------


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
        self.device = resolve_device(device if model is not None else "cpu")  # a torch.device
        if model is not None:
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
        window = dsp.window(cfg)
        values = np.zeros((n_frames, cfg.n_bins + 1), dtype=np.float32)
        if self.mask_fn is not None:
            mask = np.asarray(self.mask_fn(x), dtype=np.float32)
            if mask.shape != (n_frames, cfg.n_bins):
                raise StemforgeError(f"mask_fn returned shape {mask.shape}, expected {(n_frames, cfg.n_bins)}")
            values[:, :-1] = mask
            mag = np.abs(self._spectra(x, 0, n_frames, window))
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

    def _spectra(self, x: np.ndarray, start: int, stop: int, window: np.ndarray) -> np.ndarray:
        """Frames ``start..stop-1`` of ``x [samples]`` at the model's STFT: ``[n, n_bins]`` complex64."""
        cfg = self.config
        return dsp.stft_frames(x, start, stop, cfg.n_fft, cfg.hop_length, window, workers=dsp.FFT_WORKERS)

    def _max_magnitude(self, x: np.ndarray, n_frames: int, window: np.ndarray, chunk: int = 4096) -> float:
        cfg = self.config
        peak = 0.0
        for f0 in range(0, n_frames, chunk):
            f1 = min(n_frames, f0 + chunk)
            mag = np.abs(self._spectra(x, f0, f1, window))
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
                    mag = np.abs(self._spectra(x, start, start + valid, window))
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
        rs = audio_io.StreamResampler(1, in_rate, cfg.sample_rate, cfg.resample_quality)
        parts: list[np.ndarray] = []
        n_in = 0
        for block in audio_io.decode_blocks(src, block_samples):
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
        writers = {stem: audio_io.AudioWriter(p, out_rate, out_ch, subtype) for stem, p in outputs.items()}
        try:
            masker = self._masker(mm, out_rate, out_ch)
            rs2 = audio_io.StreamResampler(out_ch, in_rate, out_rate, cfg.resample_quality)
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

            for block in audio_io.decode_blocks(src, block_samples):
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
