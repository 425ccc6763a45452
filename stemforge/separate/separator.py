"""Separate songs into vocals and accompaniment with U-Net masks (the seed's method, full band),
at the geometry of the model's checkpoint.

The seed multiplies the mixture's STFT magnitude by the U-Net mask and keeps the mixture's
phase; the accompaniment gets ``1 - mask``. stemforge does the same, at any model geometry, in
three layers:

1. **The mask, at the model's STFT** (the checkpoint's
   :class:`~stemforge.core.config.SpectrogramConfig`: sample rate, ``n_fft``, hop, channels,
   normalization; and its :class:`~stemforge.model.config.UNetConfig`: the bins the net sees,
   ``first_bin .. first_bin + n_bins - 1``, and its channels). The input is resampled (soxr HQ)
   to the model's rate; a mono model gets the channel mean, a stereo model the two channels (a
   mono input duplicated; more than two channels are refused). ``normalization="max_mixture"``
   divides the magnitudes by **one number per song, the maximum of the whole song's mixture
   magnitude over all channels** (as in training), found by a first cheap pass over the model's
   STFT; ``"none"`` (Spleeter's nets) feeds the plain ``|STFT|``. The seed's net sees bins
   1..512 and the DC bin gets mask 0; Spleeter's sees bins 0..1023 (DC included). A one-net
   checkpoint trained on ``accompaniment`` gives ``1 - its mask`` for the vocals. A **two-net**
   checkpoint (a vocals net and an accompaniment net, as Jansson et al. train and Spleeter
   ships) is combined by a ratio mask: with ``v = mask_v * x`` and ``a = mask_a * x`` the two
   nets' masked magnitudes, the vocals mask is ``(v**p + eps/2) / (v**p + a**p + eps)``
   (``eps`` = :data:`RATIO_EPS`, Spleeter's 1e-10; ``p`` = ``mask_power``: Spleeter's is 2,
   stemforge's default :data:`DEFAULT_MASK_POWER` = 1.5 measured 0.1 dB better on real MUSDB18
   tracks, docs/separation.md), the accompaniment's its complement (which ``input - vocals``
   is). A one-net model's mask ``m`` is used as the net gives it, or, with ``mask_power`` p
   other than 1, as the ratio mask of ``m`` and ``1 - m`` at p (:func:`mask_at_power`; 0.5 was
   0.3-0.5 dB better on MIR-1K's validation of an unseen singer, docs/separation.md). Bins
   above the net's extent get one value per frame and channel, the extension
   (:data:`~stemforge.separate.mapping.EXTENSIONS`): by default the *top-band value*, the
   mixture-magnitude-weighted mean of the mask over ``EXTEND_BAND`` of the top bin (6 to
   7.5 kHz for the seed; 8.3 to 10.3 kHz for Spleeter's 11 kHz extent); ``zeros`` and
   ``average`` are Spleeter's two choices (docs/separation.md compares them).
   Long songs go through the network in windows of ``window_frames`` frames whose starts are
   multiples of 64 frames (both layer orders have six stride-2 levels, the seed's symmetric
   padding and Spleeter's TensorFlow 'same' padding alike, so the net is shift-equivariant only
   for such shifts); consecutive windows overlap by ``overlap_frames``: the outer quarter of the
   overlap on each side is dropped (the frames nearest a window's edge, where zero padding
   changes the output) and the middle half is a linear crossfade. Away from the song's ends the
   windowed mask equals the whole-song mask to float rounding once the dropped margin
   (``overlap / 4``) covers the U-Net's edge effect (measured for the seed's net: zero beyond 128
   frames, below 1e-4 beyond 64 frames; docs/separation.md gives Spleeter's).

2. **The mask, mapped onto the output's STFT.** The output keeps the input's sample rate and
   channels by default. Each channel is transformed at its own rate with a Hann STFT. At the
   model's rate that STFT is the model's own and the mask is applied as the net gave it (the
   seed's 16 kHz output; a 44.1 kHz stereo song through Spleeter's 44.1 kHz nets). Elsewhere
   ``n_fft`` is the smallest power of two at least as long as the model's window (64 ms: 4096 at
   44.1 and 48 kHz for the seed, 2048 at 32 kHz) and ``hop = n_fft / 4``; the mask is
   interpolated linearly in time (frame centres) and in frequency. For the 16 kHz seed the
   16 kHz signal holds little above 7.5 kHz (soxr HQ's passband ends at about 0.94 of Nyquist),
   so when the output rate exceeds the model's the mask is used up to ``KEEP_FRACTION`` (7.5
   kHz), every bin at and above the model's Nyquist (8 kHz) gets the extension, and between 7.5
   and 8 kHz the two are joined linearly. A stereo model's masks go one per output channel (their
   mean for a mono output); a mono model's one mask goes to every channel.

3. **Stems.** vocals = iSTFT(mask * X) (weighted overlap-add, Hann synthesis window, divided by
   the window's sum of squares, as ``librosa.istft``), and accompaniment = input - vocals, so the
   two add up to the input to float rounding (the iSTFT reconstructs perfectly, so this is also
   ``iSTFT((1 - mask) * X)``, the two-net ratio mask's complement included). ``hard_mask``
   replaces the mapped mask by ``mask > 0.5`` (as the seed offers). ``wiener_iterations > 0``
   replaces ``mask * X`` by the multichannel Wiener filter's vocals (:mod:`stemforge.separate.wiener`,
   norbert's EM from the soft estimates ``mask * X`` and ``(1 - mask) * X``), on blocks of
   :data:`~stemforge.separate.wiener.WIENER_BLOCK_FRAMES` output frames; the two-net ratio mask
   is then taken at power 1 unless ``mask_power`` says otherwise (norbert's start, the
   magnitude ratio). Non-finite audio is never
   written: a net that gives NaN or inf fails the separation with a reason.

A geometry the Separator cannot apply is refused when it is built (one line naming it): bins the
model's STFT does not have, a net's channels other than its spectrogram configuration's, two nets
that see different inputs, a non-centred or non-zero-padded STFT.

Memory: the full-band STFT is never held whole. It is computed in blocks on a global frame grid
(frame ``i`` centred at sample ``i * hop``), so blockwise output equals whole-signal output
exactly. :meth:`Separator.separate_file` also streams the decoding (twice: once for the model's
copy, once for the full band) and the writing, so a song needs only its copy at the model's
rate and channels and its mask in memory (the seed: about 230 MB for 30 minutes; Spleeter's
44.1 kHz stereo geometry: about 21 MB per minute for the copy and 21 MB per minute for the
1025-column stereo mask, not measured as a peak).

Where each part lives: the model windows (1) in :mod:`stemforge.separate.windows`, the mask
and its mapping (2) in :mod:`stemforge.separate.mapping`, the streaming masker (3) in
:mod:`stemforge.separate.masker`, the inference copy of the network in
:meth:`stemforge.model.unet.UNet.for_inference`; every STFT is :func:`stemforge.core.dsp.stft_frames` (the
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
from stemforge.core.errors import AudioError, CheckpointError, StemforgeError
from stemforge.model.unet import inference_net
from stemforge.separate.mapping import EXTENSIONS, MaskMapper, ModelMask, extension_value, output_stft_size
from stemforge.separate.masker import StreamingMasker
from stemforge.separate.wiener import WIENER_BLOCK_FRAMES
from stemforge.separate.windows import FRAME_MULTIPLE, plan_windows, window_weights

#: The two stems a separation gives (vocals + accompaniment = the input).
STEMS = ("vocals", "accompaniment")

#: Default model window (frames of the model's STFT: 2048 frames = 65.5 s at 16 kHz / hop 512,
#: 47.6 s at 44.1 kHz / hop 1024).
DEFAULT_WINDOW_FRAMES = 2048
#: Default overlap of consecutive windows (frames).
DEFAULT_OVERLAP_FRAMES = 256
#: Default number of windows per forward pass.
DEFAULT_BATCH_SIZE = 2
#: ``eps`` of the two-net ratio mask (Spleeter's ``EPSILON``).
RATIO_EPS = 1e-10
#: Exponent of the two-net ratio mask without the Wiener filter (Spleeter's is 2; 1.5 gave
#: +0.1 dB vocals and accompaniment SDR on 82 and 85 of 94 real MUSDB18 tracks, docs/separation.md).
DEFAULT_MASK_POWER = 1.5
#: Exponent of the two-net ratio mask that starts the Wiener filter (norbert's magnitude ratio).
WIENER_MASK_POWER = 1.0
#: Exponent of a one-net model's (or a mask function's) mask by default: the mask as given.
SINGLE_MASK_POWER = 1.0
#: Largest ratio-mask exponent accepted (beyond it the mask is binary to float precision).
MAX_MASK_POWER = 16.0


MaskFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[float], None]


def ratio_mask(v: Any, a: Any, power: float) -> Any:
    """The vocals mask ``(v**p + eps/2) / (v**p + a**p + eps)`` of non-negative ``v`` and ``a``
    (same shape; numpy or torch), ``eps`` = :data:`RATIO_EPS`, ``p`` = ``power``."""
    v, a = v**power, a**power
    return (v + RATIO_EPS / 2) / (v + a + RATIO_EPS)


def mask_at_power(mask: Any, power: float) -> Any:
    """One mask ``m`` (values in [0, 1], any shape; numpy or torch) at exponent ``power``: the
    :func:`ratio_mask` of ``m`` and its complement, so one net is read as two nets whose
    accompaniment net is ``1 - m``. Power 1 returns ``mask`` itself; below 1 pulls it towards
    0.5 (more of each stem kept: fewer artefacts, more leakage), above 1 towards 0 or 1.
    Symmetric: the complement of ``m`` at ``p`` is the complement of the result, so a net
    trained on the accompaniment gives the same stems."""
    return mask if power == 1.0 else ratio_mask(mask, 1.0 - mask, power)


@dataclass(frozen=True)
class ModelGeometry:
    """What the Separator feeds the net(s): STFT bins ``first_bin .. first_bin + n_bins - 1`` of
    the model's STFT, ``channels`` channels (checked against the spectrogram configuration)."""

    first_bin: int
    n_bins: int
    channels: int

    @property
    def top_bin(self) -> int:
        """The highest STFT bin the net sees."""
        return self.first_bin + self.n_bins - 1


def model_geometry(nets: Mapping[str, Any], config: SpectrogramConfig) -> ModelGeometry:
    """The :class:`ModelGeometry` of ``nets`` under ``config``; StemforgeError (one line) when
    the Separator cannot apply it.

    A net with a ``config`` (a stemforge :class:`~stemforge.model.unet.UNet`) gives its
    ``first_bin``, ``n_bins`` and ``channels``; another module is taken to see bins
    ``1..n_bins - 1`` of the STFT (the seed's convention) with the configuration's channels.
    """
    found = {}
    for target, net in nets.items():
        c = getattr(net, "config", None)
        found[target] = ModelGeometry(
            int(getattr(c, "first_bin", 1)),
            int(getattr(c, "n_bins", config.n_bins - 1)),
            int(getattr(c, "channels", config.channels)),
        )
    geoms = set(found.values())
    if len(geoms) > 1:
        parts = ", ".join(f"{t} bins {g.first_bin}..{g.top_bin} x {g.channels} channels" for t, g in found.items())
        raise StemforgeError(f"Separator: the nets see different inputs ({parts})")
    g = geoms.pop()
    if g.first_bin < 0 or g.n_bins <= 0 or g.top_bin >= config.n_bins:
        raise StemforgeError(
            f"Separator: the model sees STFT bins {g.first_bin}..{g.top_bin} but its STFT (n_fft {config.n_fft}) "
            f"has bins 0..{config.n_bins - 1}"
        )
    if g.channels != config.channels:
        raise StemforgeError(
            f"Separator: the model has {g.channels} input channel(s) but its spectrogram configuration "
            f"{config.channels} ({config.geometry()})"
        )
    return g


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
    """Vocals/accompaniment separation with U-Net masks (or any mask function).

    Args:
        model: a :class:`~stemforge.model.unet.UNet` (any ``nn.Module`` mapping magnitudes
            ``[batch, channels, n_bins, n_frames]`` to a mask in (0, 1) of the same shape), or
            ``{"vocals": net, "accompaniment": net}`` (two nets combined by Spleeter's ratio
            mask, see the module docstring), or None with ``mask_fn``.
        spectrogram_config: the STFT the model was trained on.
        target: what a single model's mask extracts, ``"vocals"`` or ``"accompaniment"``
            (ignored for two nets).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        hard_mask: binarize the mask (``> 0.5``) after mapping it to the output STFT.
        window_frames: model window in frames (multiple of 64), None for the whole song at once.
        overlap_frames: overlap of consecutive windows (multiple of 64, at most half a window).
        batch_size: windows per forward pass.
        extension: the mask above the net's bins: ``"top_band"`` (default), ``"zeros"`` or
            ``"average"`` (:data:`~stemforge.separate.mapping.EXTENSIONS`).
        mask_power: the exponent ``p`` of a two-net checkpoint's ratio mask
            ``v**p / (v**p + a**p)``; of one mask ``m`` (a one-net model's, or ``mask_fn``'s)
            the same ratio of ``m`` and ``1 - m`` (:func:`mask_at_power`: below 1 softer, above
            harder). None: :data:`DEFAULT_MASK_POWER` (1.5) for two nets,
            :data:`SINGLE_MASK_POWER` (1: the mask as given) for one, and
            :data:`WIENER_MASK_POWER` (1) with the Wiener filter.
        wiener_iterations: EM iterations of the multichannel Wiener filter applied after the
            mask (0: none, the mask as is). Not with ``hard_mask``.
        wiener_block_frames: frames (of the output STFT) per block of the Wiener filter, each
            with its own spatial model.
        mask_fn: instead of a model, ``fn(mixture) -> vocals mask`` with ``mixture`` float32 at
            the config's rate, ``[samples]`` for a mono config (mask ``[n_frames, n_bins]``) or
            ``[channels, samples]`` for a stereo one (mask ``[channels, n_frames, n_bins]``), the
            whole song at once, every bin used as given: oracle masks for tests and references.

    Raises:
        StemforgeError: a geometry it cannot apply (:func:`model_geometry`), bad options.

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
        extension: str = "top_band",
        mask_fn: MaskFn | None = None,
        mask_power: float | None = None,
        wiener_iterations: int = 0,
        wiener_block_frames: int = WIENER_BLOCK_FRAMES,
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
        if extension not in EXTENSIONS:
            raise StemforgeError(f"Separator: extension must be one of {EXTENSIONS}, got {extension!r}")
        if isinstance(wiener_iterations, bool) or not isinstance(wiener_iterations, (int, np.integer)) or wiener_iterations < 0:
            raise StemforgeError(f"Separator: wiener_iterations must be an integer >= 0, got {wiener_iterations!r}")
        if isinstance(wiener_block_frames, bool) or not isinstance(wiener_block_frames, (int, np.integer)) or wiener_block_frames < 1:
            raise StemforgeError(f"Separator: wiener_block_frames must be a positive integer, got {wiener_block_frames!r}")
        if wiener_iterations and hard_mask:
            raise StemforgeError("Separator: the Wiener filter starts from the soft mask: give hard_mask or wiener_iterations, not both")
        if mask_power is None:
            if wiener_iterations:
                mask_power = WIENER_MASK_POWER
            else:
                mask_power = DEFAULT_MASK_POWER if isinstance(model, Mapping) else SINGLE_MASK_POWER
        if isinstance(mask_power, bool) or not isinstance(mask_power, (int, float, np.floating, np.integer)) or not 0 < mask_power <= MAX_MASK_POWER:
            raise StemforgeError(f"Separator: mask_power must be a number in (0, {MAX_MASK_POWER:g}], got {mask_power!r}")
        self.mask_power = float(mask_power)
        self.wiener_iterations = int(wiener_iterations)
        self.wiener_block_frames = int(wiener_block_frames)
        self.hard_mask = bool(hard_mask)
        self.window_frames = window_frames
        self.overlap_frames = overlap_frames
        self.batch_size = batch_size
        self.extension = extension
        self.mask_fn = mask_fn
        self.device = resolve_device(device if model is not None else "cpu")  # a torch.device
        self.nets: dict[str, Any] = {}
        self._nets: dict[str, Any] = {}
        if isinstance(model, Mapping):
            if set(model) != set(STEMS):
                raise StemforgeError(f"Separator: two nets must be one per stem {STEMS}, got {sorted(model)}")
            self.nets = {t: model[t] for t in STEMS}
        elif model is not None:
            self.nets = {target: model}
        self.target = "+".join(self.nets) if len(self.nets) > 1 else target
        if self.nets:
            self.geometry = model_geometry(self.nets, self.config)
        else:
            self.geometry = ModelGeometry(1, self.config.n_bins - 1, self.config.channels)
        for t, net in self.nets.items():
            self.nets[t] = net.to(self.device).eval()
            self._nets[t] = inference_net(self.nets[t])
        #: The (first) net, for callers that want one module.
        self.model = next(iter(self.nets.values()), None)

    @property
    def post_filter(self) -> str:
        """One line on how the mask is made and applied, e.g. ``ratio mask of the two nets
        (power 1.5)`` or ``... (power 1), multichannel Wiener filter (1 EM iteration, 300-frame
        blocks)``."""
        if len(self.nets) == 2:
            text = f"ratio mask of the two nets (power {self.mask_power:g})"
        else:
            text = "the net's mask" if self.nets else "the given mask"
            if self.mask_power != 1.0:
                text += f" at power {self.mask_power:g}"
        if self.hard_mask:
            text += ", binarized (> 0.5)"
        if self.wiener_iterations:
            its = f"{self.wiener_iterations} EM iteration{'s' if self.wiener_iterations > 1 else ''}"
            text += f", multichannel Wiener filter ({its}, {self.wiener_block_frames}-frame blocks)"
        return text

    @property
    def channels(self) -> int:
        """Channels of the model's input and mask (1 or 2)."""
        return self.geometry.channels

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", **options: Any) -> "Separator":
        """Load a checkpoint (:func:`stemforge.model.checkpoint.load_checkpoint`, one net or two)
        and wrap it.

        ``options`` are the keyword arguments of :class:`Separator` (``hard_mask``,
        ``window_frames``...). Without ``mask_power`` (None) and without the Wiener filter, the
        mask power stored with the checkpoint (``stemforge defaults``,
        :attr:`~stemforge.model.checkpoint.Checkpoint.inference`) is used, if any. Raises :class:`~stemforge.core.errors.CheckpointError` for a bad
        file or a geometry the Separator cannot apply (one line naming the file and why).
        """
        from stemforge.model.checkpoint import load_checkpoint

        dev = resolve_device(device)
        ckpt = load_checkpoint(path, map_location=dev)
        model = dict(ckpt.nets) if len(ckpt.nets) > 1 else ckpt.model
        stored = ckpt.inference.get("mask_power")
        if stored is not None and options.get("mask_power") is None and not options.get("wiener_iterations"):
            options = {**options, "mask_power": stored}
        try:
            sep = cls(model, ckpt.spectrogram_config, ckpt.target, dev, **options)
        except CheckpointError:
            raise
        except StemforgeError as exc:
            raise CheckpointError(f"{ckpt.path}: cannot separate with it: {str(exc).removeprefix('Separator: ')}") from None
        sep.checkpoint = ckpt
        return sep

    @classmethod
    def from_mask_fn(cls, fn: MaskFn, spectrogram_config: SpectrogramConfig | None = None, **options: Any) -> "Separator":
        """A Separator whose vocals mask comes from ``fn(mixture) -> mask`` (see ``mask_fn``)."""
        return cls(None, spectrogram_config, "vocals", "cpu", mask_fn=fn, **options)

    # -- the mask at the model's STFT ------------------------------------------------------------

    def model_input(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """``audio [channels, samples]`` (any rate) as the model takes it: ``[model channels,
        samples']`` float32 at ``config.sample_rate`` (mono: the channel mean; stereo: the two
        channels, a mono input duplicated). StemforgeError for more than two channels into a
        stereo model."""
        cfg = self.config
        return audio_io.resample(self._model_channels(audio), sample_rate, cfg.sample_rate, cfg.resample_quality)

    def _model_channels(self, x2: np.ndarray) -> np.ndarray:
        if self.channels == 1:
            return audio_io.to_mono(x2)[None, :] if x2.shape[0] != 1 else x2
        if x2.shape[0] == 2:
            return x2
        if x2.shape[0] == 1:
            return np.repeat(x2, 2, axis=0)
        raise StemforgeError(f"the model is stereo and the audio has {x2.shape[0]} channels (give mono or stereo)")

    def model_mask(self, mixture: np.ndarray, progress: ProgressFn | None = None) -> ModelMask:
        """The vocals mask of ``mixture`` at ``config.sample_rate``: ``[samples]``, or
        ``[channels, samples]`` with the model's channels (a mono signal is duplicated for a
        stereo model).

        Returns a :class:`ModelMask` (``[channels, n_frames, top_bin + 2]``: the mask at the
        model's STFT bins up to the net's top bin, and the extension value). ``progress(fraction)``
        is called after every batch of windows.

        Raises:
            StemforgeError: bad shapes; the net gave non-finite values.
        """
        cfg = self.config
        x = np.ascontiguousarray(mixture, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] not in (1, self.channels):
            raise StemforgeError(
                f"model_mask: expected [samples] or [{self.channels}, samples] at {cfg.sample_rate} Hz, got shape {x.shape}"
            )
        if x.shape[0] != self.channels:
            x = np.repeat(x, self.channels, axis=0)
        n_frames = cfg.n_frames(x.shape[1])
        window = dsp.window(cfg)
        if self.mask_fn is not None:
            return self._mask_from_fn(x, n_frames, window)
        geo = self.geometry
        values = np.zeros((self.channels, n_frames, geo.top_bin + 2), dtype=np.float32)
        if cfg.normalization == "none":
            norm = 1.0
        else:
            norm = self._max_magnitude(x, n_frames, window)
            if norm <= 0.0 or not np.isfinite(norm):
                # Silence (or garbage): no vocals.
                return ModelMask(values, cfg, 0.0)
        self._run_model(x, n_frames, window, norm, values, progress)
        return ModelMask(values, cfg, norm)

    def _mask_from_fn(self, x: np.ndarray, n_frames: int, window: np.ndarray) -> ModelMask:
        cfg = self.config
        arg = x[0] if cfg.channels == 1 else x
        mask = np.asarray(self.mask_fn(arg), dtype=np.float32)
        want = (n_frames, cfg.n_bins) if cfg.channels == 1 else (cfg.channels, n_frames, cfg.n_bins)
        if mask.shape != want:
            raise StemforgeError(f"mask_fn returned shape {mask.shape}, expected {want}")
        mask = mask_at_power(mask, self.mask_power)
        mask = mask.reshape((x.shape[0] if cfg.channels != 1 else 1, n_frames, cfg.n_bins))
        mag = np.abs(self._spectra(x[: mask.shape[0]], 0, n_frames, window))
        values = np.empty(mask.shape[:-1] + (cfg.n_bins + 1,), dtype=np.float32)
        values[..., :-1] = mask
        values[..., -1] = extension_value(self.extension, mask, mag, 0)
        return ModelMask(values, cfg, float(mag.max()) if mag.size else 0.0)

    def estimate_mask(self, mixture: np.ndarray) -> np.ndarray:
        """The vocals mask of ``mixture`` at the model's STFT: float32 ``[n_frames, top_bin + 1]``
        (mono model) or ``[channels, n_frames, top_bin + 1]`` (stereo); see :meth:`model_mask`."""
        return np.ascontiguousarray(self.model_mask(mixture).mask)

    def _spectra(self, x: np.ndarray, start: int, stop: int, window: np.ndarray) -> np.ndarray:
        """Frames ``start..stop-1`` of ``x [channels, samples]`` at the model's STFT:
        ``[channels, n, n_fft // 2 + 1]`` complex64."""
        cfg = self.config
        return dsp.stft_frames(x, start, stop, cfg.n_fft, cfg.hop_length, window, workers=dsp.FFT_WORKERS)

    def _max_magnitude(self, x: np.ndarray, n_frames: int, window: np.ndarray, chunk: int = 4096) -> float:
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

        geo = self.geometry
        fb, nb, top = geo.first_bin, geo.n_bins, geo.top_bin
        channels = self.channels
        windows = plan_windows(n_frames, self.window_frames, self.overlap_frames)
        weights = window_weights(windows, self.overlap_frames if len(windows) > 1 else 0)
        inv = np.float32(1.0 / norm)
        two = len(self._nets) == 2
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
                batch = np.zeros((len(group), channels, nb, width), dtype=np.float32)
                mags = []
                for b, k in enumerate(group):
                    start, stop = windows[k]
                    valid = min(stop, n_frames) - start
                    mag = np.abs(self._spectra(x, start, start + valid, window))[:, :, : top + 1]  # [C, valid, top + 1]
                    mags.append(mag)
                    batch[b, :, :, :valid] = (mag[:, :, fb:] * inv).transpose(0, 2, 1)
                inp = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
                outs = {}
                for t, net in self._nets.items():
                    out = net(inp)
                    if out.shape != inp.shape:
                        raise StemforgeError(f"the {t} model returned shape {tuple(out.shape)} for input {tuple(inp.shape)}")
                    outs[t] = out.float()
                if two:
                    mask = ratio_mask(outs["vocals"] * inp, outs["accompaniment"] * inp, self.mask_power)
                else:
                    mask = mask_at_power(outs.get("vocals", outs.get("accompaniment")), self.mask_power)
                m_all = mask.cpu().numpy()
                if not np.isfinite(m_all).all():
                    raise StemforgeError("the model gave non-finite mask values (NaN or inf): nothing separated")
                for b, k in enumerate(group):
                    start, stop = windows[k]
                    valid = min(stop, n_frames) - start
                    m = m_all[b, :, :, :valid].transpose(0, 2, 1)  # [C, valid, n_bins]
                    if not two and "accompaniment" in outs:
                        m = 1.0 - m
                    full = np.zeros((channels, valid, top + 1), dtype=np.float32)
                    full[:, :, fb:] = m
                    w = weights[k][:valid, None]
                    values[:, start : start + valid, :-1] += w * full
                    values[:, start : start + valid, -1] += w[:, 0] * extension_value(self.extension, full, mags[b], fb)
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

        Raises:
            StemforgeError: bad input; more than two channels into a stereo model; the
                separation gave non-finite values.
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
        mix = self.model_input(x2, sample_rate)
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
        if not np.isfinite(vocals).all():
            raise StemforgeError("separate: the separation gave non-finite samples (NaN or inf)")
        acc = work - vocals
        if one_d:
            return {"vocals": vocals[0], "accompaniment": acc[0]}
        return {"vocals": vocals, "accompaniment": acc}

    def _masker(self, mm: ModelMask, sample_rate: int, channels: int) -> StreamingMasker:
        if mm.channels > 1 and channels == 1:
            mm = mm.downmixed()
        n_fft, hop = output_stft_size(sample_rate, self.config)
        mapper = MaskMapper(mm, sample_rate, n_fft, hop, hard_mask=self.hard_mask)
        return StreamingMasker(
            mapper, channels, self.config.window, wiener_iterations=self.wiener_iterations, wiener_block_frames=self.wiener_block_frames
        )

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
        limits: audio_io.DecodeLimits = audio_io.DEFAULT_LIMITS,
    ) -> FileSeparation:
        """Separate an audio file into files, streaming: memory does not grow with the full band.

        Args:
            path: any file :func:`stemforge.core.audio.load` reads (stream 0 of a container);
                mono or stereo for a stereo model.
            outputs: stem name (``"vocals"``, ``"accompaniment"``) -> output path; the format
                follows the suffix (wav: 32-bit float by default; flac: 24-bit, values clipped to
                [-1, 1]). Each is written under a temporary name and renamed when complete.
            output_sample_rate: rate of the stems (default: the input's).
            mono: downmix the stems to one channel.
            subtype: soundfile subtype (e.g. ``"PCM_16"``), default per format.
            progress: called with the fraction done (0..1) now and then.
            limits: bounds on the decode (:class:`stemforge.core.audio.DecodeLimits`), checked
                from the header before any output is opened and counted while decoding: the
                mask-rate copy holds at most ``limits.max_seconds x`` the model's rate samples,
                each stem file at most ``limits.max_samples(rate, channels)`` per channel.

        Raises:
            AudioError: the input cannot be decoded or is empty, has more than two channels for
                a stereo model, or its separation gave non-finite values (nothing is written);
                an output cannot be written. DecodeLimitError (an AudioError): the input is over
                ``limits`` (no output is left behind). DiskFullError: an output found the disk or
                the quota full (no output of this file is left behind).
        """
        t_start = time.perf_counter()
        src = Path(path)
        unknown = set(outputs) - set(STEMS)
        if unknown or not outputs:
            raise StemforgeError(f"separate_file: outputs must map some of {STEMS} to paths, got {sorted(outputs)}")
        inf = audio_io.info(src)
        limits.check(src, inf.sample_rate, inf.channels, inf.n_samples)
        in_rate, in_ch = inf.sample_rate, inf.channels
        out_rate = output_sample_rate or in_rate
        _check_rate(out_rate)
        out_ch = 1 if mono else in_ch
        cfg = self.config
        note = progress or (lambda _f: None)
        timings: dict[str, float] = {}

        if self.channels == 2 and in_ch > 2:
            raise AudioError(src, f"has {in_ch} channels and the model is stereo (give mono or stereo audio)")

        # Pass 1: the copy at the model's rate and channels (16 kHz mono for the seed).
        t0 = time.perf_counter()
        decoded = audio_io.decode_resampled(
            src,
            cfg.sample_rate,
            channels=self.channels,
            limits=limits,
            quality=cfg.resample_quality,
            block_samples=block_samples,
            progress=lambda f: note(0.1 * f),
        )
        mix, n_in = decoded.audio, decoded.n_source_samples
        del decoded
        timings["decode_model"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            mm = self.model_mask(mix, lambda f: note(0.1 + 0.5 * f))
        except AudioError:
            raise
        except StemforgeError as exc:
            raise AudioError(src, str(exc)) from None
        del mix
        timings["mask"] = time.perf_counter() - t0
        note(0.6)

        # Pass 2: full band, streamed to the writers.
        t0 = time.perf_counter()
        writers: dict[str, audio_io.AudioWriter] = {}
        paths: dict[str, Path] = {}
        try:
            for stem, p in outputs.items():  # one that cannot be opened (a full disk) drops those opened before
                writers[stem] = audio_io.AudioWriter(p, out_rate, out_ch, subtype)
            n_out = self._write_full_band(
                src, mm, writers, in_rate, out_rate, out_ch, mono=mono, block_samples=block_samples, limits=limits,
                decoded=lambda n: note(0.6 + 0.4 * min(1.0, n / n_in)),
            )
            for stem, w in writers.items():
                paths[stem] = w.close()
        except BaseException:
            for w in writers.values():
                w.abort()
            for done in paths.values():  # a stem renamed before the other failed: not half a result
                done.unlink(missing_ok=True)
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

    def _write_full_band(
        self,
        src: Path,
        mm: ModelMask,
        writers: Mapping[str, audio_io.AudioWriter],
        in_rate: int,
        out_rate: int,
        out_ch: int,
        *,
        mono: bool,
        block_samples: int,
        limits: audio_io.DecodeLimits,
        decoded: Callable[[int], None],
    ) -> int:
        """Pass 2 of :meth:`separate_file`: decode ``src`` again, resample each block from
        ``in_rate`` to ``out_rate`` (``out_ch`` channels: downmixed when ``mono``), mask it and
        write the stems to ``writers`` (which the caller closes or aborts).
        ``decoded(samples so far at in_rate)`` is called after every block. Returns the samples
        per channel written."""
        masker = self._masker(mm, out_rate, out_ch)
        rs = audio_io.StreamResampler(out_ch, in_rate, out_rate, self.config.resample_quality)
        n_done = 0
        n_out = 0

        def write(x: np.ndarray, v: np.ndarray) -> None:
            nonlocal n_out
            if x.shape[1] == 0:
                return
            if not np.isfinite(v).all():
                raise AudioError(src, "the separation gave non-finite samples (NaN or inf); nothing written")
            if "vocals" in writers:
                writers["vocals"].write(v)
            if "accompaniment" in writers:
                writers["accompaniment"].write(x - v)
            n_out += x.shape[1]

        for block in audio_io.decode_blocks(src, block_samples, limits=limits):
            n_done += block.shape[1]
            work = audio_io.to_mono(block)[None, :] if mono else block
            write(*masker.push(rs.push(work)))
            decoded(n_done)
        write(*masker.push(rs.flush()))
        write(*masker.finish())
        return n_out


def _check_rate(rate: Any) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise StemforgeError(f"sample rate must be a positive integer (Hz), got {rate!r}")
