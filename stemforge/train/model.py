"""The U-Net of Jansson et al. (ISMIR 2017) in two layer orders: the seed article's Chainer code
and Spleeter's.

The network maps magnitudes to a soft mask of the same shape::

    input  x     [batch, channels, n_bins, n_frames]   (stored bins first_bin..first_bin+n_bins-1)
    output mask  [batch, channels, n_bins, n_frames]   values in (0, 1)

``channels`` is 1 (mono) or 2 (stereo: one mask per channel). Frequency is axis 2 and time axis
3 in every variant. ``n_frames`` and ``n_bins`` must be multiples of 64 (six stride-2 halvings);
:func:`pad_frames` pads a spectrogram to that. Three configurations are named
(:meth:`UNetConfig.preset`):

* ``seed``: ``variant="chainer"``, 4x4 kernels: the seed article's code (512 bins of a 1024-point
  STFT at 16 kHz, mono, 128-frame patches).
* ``paper``: ``variant="chainer"``, 5x5 kernels: Jansson et al.'s paper.
* ``spleeter``: ``variant="spleeter"``, 5x5 kernels: Deezer's Spleeter (1024 bins of a
  4096-point STFT at 44.1 kHz, stereo, 512-frame patches).

``variant="chainer"`` (layer names ``conv1..conv6``, ``norm1..norm6``, ``deconv1..deconv6``,
``denorm1..denorm5``, those of the Chainer ``UNet`` chain so that its ``save_npz`` weights map one
to one onto this module's ``state_dict``, see :mod:`stemforge.train.chainer`):

* encoder block i: ``LeakyReLU(0.2)(BatchNorm(Conv2d(k, stride 2)))``, 16, 32, ..., 512 channels;
* decoder block i: ``ReLU(Dropout(BatchNorm(ConvTranspose2d(k, stride 2))))`` with dropout in the
  first three only; the input of decoder blocks 2..6 is ``concat(previous decoder output, encoder
  output of the same size)`` along channels (decoder first, as in the Chainer code); the last
  block has no BatchNorm and ends in a sigmoid. Padding is symmetric (see
  :attr:`UNetConfig.padding`).

``variant="spleeter"`` (names ``conv1..conv6``, ``norm1..norm5``, ``deconv1..deconv6``,
``denorm1..denorm6``, ``mask_conv``; see :mod:`stemforge.train.spleeter` for the import):

* encoder block i: ``Conv2d(k, stride 2)`` on the input padded as TensorFlow's ``'same'``
  (``(k-2)//2`` zeros before and the rest of ``k-2`` after, in both axes: 1 and 2 for k=5), then
  ``LeakyReLU(0.2)(BatchNorm(.))`` feeding the next block. The skips and the bottleneck are the
  convolutions' outputs *before* BatchNorm (Spleeter computes ``norm6`` and never uses it, so the
  module has no ``norm6``);
* decoder block i: ``Dropout(BatchNorm(ReLU(crop(ConvTranspose2d(k, stride 2)))))``, the crop
  removing what TensorFlow's ``'same'`` transposed convolution does (the same counts as the
  padding), dropout in the first three; the input of blocks 2..6 is ``concat(encoder conv output,
  previous decoder output)`` (encoder first, as Spleeter);
* ``mask_conv``: ``Conv2d(1 -> channels, 4x4, dilation 2, padding 3)`` and a sigmoid: one mask
  per input channel, at the input's size.

BatchNorm ``eps``/``momentum`` are configuration: Chainer's defaults (``2e-5``, decay 0.9 i.e.
PyTorch ``momentum=0.1``) for the seed, Keras's (``1e-3``, decay 0.99 i.e. ``momentum=0.01``) for
Spleeter, so that imported weights give the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stemforge.core.config import _Config
from stemforge.core.errors import StemforgeError

#: Channel counts of the seed's network (width 1.0).
BASE_ENCODER_CHANNELS = (16, 32, 64, 128, 256, 512)
BASE_DECODER_CHANNELS = (256, 128, 64, 32, 16, 1)
#: Decoder blocks (1-based) followed by dropout during training.
DROPOUT_BLOCKS = (1, 2, 3)
#: Negative slope of the encoder's LeakyReLU (Chainer's ``F.leaky_relu`` default).
LEAKY_SLOPE = 0.2
#: Six stride-2 levels: frames and bins must be multiples of 2**6.
FRAME_MULTIPLE = 64

TARGETS = ("vocals", "accompaniment")
#: Layer orders: the seed's Chainer code and Spleeter's TensorFlow code.
VARIANTS = ("chainer", "spleeter")
#: Spleeter's output convolution: kernel, dilation (TensorFlow 'same': padding 3 each side).
MASK_CONV_KERNEL = 4
MASK_CONV_DILATION = 2


@dataclass(frozen=True)
class UNetConfig(_Config):
    """Hyper-parameters of :class:`UNet`; stored in every checkpoint (with its hash).

    Attributes:
        variant: the layer order, ``"chainer"`` (the seed's code) or ``"spleeter"`` (see the
            module docstring).
        kernel_size: square kernel of every (transposed) convolution. 4 is the seed's Chainer
            code; 5 is the paper's 5x5 and Spleeter's. With ``variant="chainer"`` padding is
            chosen so every encoder block halves and every decoder block doubles the size: even
            k -> padding (k-2)/2; odd k -> padding (k-1)/2 and ``output_padding`` 1 on the
            transposed convolutions. With ``variant="spleeter"`` it is TensorFlow's ``'same'``
            (:attr:`same_padding`).
        width: multiplier on the channel counts (``max(1, round(c * width))``; the last decoder
            always has 1 channel). 1.0 is the seed's network; 0.25 is a narrow, fast CPU model.
        dropout: dropout probability in decoder blocks 1-3 (training only).
        bn_eps: BatchNorm epsilon (Chainer default 2e-5).
        bn_momentum: BatchNorm running-average momentum in PyTorch's sense (Chainer decay 0.9).
        n_bins: frequency bins the network sees (512 = bins 1..512 of a 1024-point STFT; Spleeter:
            1024 of a 4096-point STFT); a multiple of 64.
        first_bin: the first stored STFT bin the network sees: it sees bins ``first_bin ..
            first_bin + n_bins - 1``. 1 for the seed (the DC bin is dropped and gets mask 0);
            0 for Spleeter (its nets were trained on bins 0..1023). Training cuts its crops and
            the Separator feeds the model at these bins.
        target: what the mask extracts, ``"vocals"`` or ``"accompaniment"``.
        channels: input channels = mask channels, 1 (mono) or 2 (stereo): the spectrogram
            configuration's ``channels``.
        patch_frames: frames of the patches the network is trained on (and the Separator's
            natural window): 128 for the seed (about 4.1 s at 16 kHz, hop 512), 512 for Spleeter
            (about 11.9 s at 44.1 kHz, hop 1024); a multiple of 64. The network itself accepts
            any multiple of 64.

    ``variant``, ``channels``, ``patch_frames`` and ``first_bin`` enter the hash only when they
    differ from their defaults, so configurations recorded before they existed keep their hashes
    (a checkpoint without ``first_bin`` is read as 1, what every model before it saw).
    """

    _HASH_IF_SET: ClassVar[tuple[str, ...]] = ("variant", "channels", "patch_frames", "first_bin")

    kernel_size: int = 4
    width: float = 1.0
    dropout: float = 0.5
    bn_eps: float = 2e-5
    bn_momentum: float = 0.1
    n_bins: int = 512
    target: str = "vocals"
    variant: str = "chainer"
    channels: int = 1
    patch_frames: int = 128
    first_bin: int = 1

    def __post_init__(self) -> None:
        # Normalize numeric types so that the hash does not depend on 1 vs 1.0.
        for name in ("width", "dropout", "bn_eps", "bn_momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StemforgeError(f"UNetConfig: {name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("kernel_size", "n_bins", "channels", "patch_frames", "first_bin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise StemforgeError(f"UNetConfig: {name} must be an integer, got {value!r}")
        if self.kernel_size < 2:
            raise StemforgeError(f"UNetConfig: kernel_size must be >= 2, got {self.kernel_size}")
        if not (self.width > 0 and math.isfinite(self.width)):
            raise StemforgeError(f"UNetConfig: width must be positive, got {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise StemforgeError(f"UNetConfig: dropout must be in [0, 1), got {self.dropout}")
        if not self.bn_eps > 0:
            raise StemforgeError(f"UNetConfig: bn_eps must be positive, got {self.bn_eps}")
        if not 0.0 < self.bn_momentum <= 1.0:
            raise StemforgeError(f"UNetConfig: bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if self.n_bins <= 0 or self.n_bins % FRAME_MULTIPLE:
            raise StemforgeError(f"UNetConfig: n_bins must be a positive multiple of {FRAME_MULTIPLE}, got {self.n_bins}")
        if self.target not in TARGETS:
            raise StemforgeError(f"UNetConfig: target must be one of {TARGETS}, got {self.target!r}")
        if self.variant not in VARIANTS:
            raise StemforgeError(f"UNetConfig: variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.channels not in (1, 2):
            raise StemforgeError(f"UNetConfig: channels must be 1 or 2, got {self.channels}")
        if self.first_bin not in (0, 1):
            raise StemforgeError(f"UNetConfig: first_bin must be 0 or 1, got {self.first_bin}")
        if self.patch_frames <= 0 or self.patch_frames % FRAME_MULTIPLE:
            raise StemforgeError(
                f"UNetConfig: patch_frames must be a positive multiple of {FRAME_MULTIPLE}, got {self.patch_frames}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "UNetConfig":
        """A named configuration (``seed``, ``paper``, ``spleeter``; see :data:`PRESETS`) with
        ``overrides`` (``width``, ``target``...) applied."""
        if name not in PRESETS:
            raise StemforgeError(f"UNetConfig: unknown preset {name!r}; presets are {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Output channels of ``conv1..conv6``."""
        return tuple(self._scale(c) for c in BASE_ENCODER_CHANNELS)

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Output channels of ``deconv1..deconv6``. The last is the mask's ``channels`` with
        ``variant="chainer"``; 1 with ``variant="spleeter"`` (``mask_conv`` then makes one mask
        per channel)."""
        last = self.channels if self.variant == "chainer" else 1
        return tuple(self._scale(c) for c in BASE_DECODER_CHANNELS[:-1]) + (last,)

    @property
    def decoder_in_channels(self) -> tuple[int, ...]:
        """Input channels of ``deconv1..deconv6``: skip concatenations included."""
        enc, dec = self.encoder_channels, self.decoder_channels
        return (enc[5],) + tuple(dec[i - 1] + enc[5 - i] for i in range(1, 6))

    @property
    def padding(self) -> int:
        """Symmetric padding of every (transposed) convolution (``variant="chainer"``)."""
        return (self.kernel_size - 1) // 2 if self.kernel_size % 2 else (self.kernel_size - 2) // 2

    @property
    def output_padding(self) -> int:
        """``output_padding`` of the transposed convolutions (1 for odd kernels;
        ``variant="chainer"``)."""
        return self.kernel_size % 2

    @property
    def same_padding(self) -> tuple[int, int]:
        """TensorFlow ``'same'`` padding of a stride-2 convolution of an even size, ``(before,
        after)`` in each axis (``(1, 2)`` for k=5); also what is cropped from each side of a
        stride-2 transposed convolution's full output (``variant="spleeter"``)."""
        total = self.kernel_size - 2
        return total // 2, total - total // 2

    @property
    def architecture(self) -> dict[str, Any]:
        """The fields that decide the weights' shapes and meaning (what ``--init`` must match):
        every field but ``target`` and ``patch_frames`` (the net is fully convolutional: it
        can be trained on patches of another length)."""
        data = self.to_dict()
        del data["target"], data["patch_frames"]
        return data

    def _scale(self, channels: int) -> int:
        return max(1, int(round(channels * self.width)))


#: The named configurations of :meth:`UNetConfig.preset`.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "paper": {"kernel_size": 5},
    "spleeter": {
        "variant": "spleeter",
        "kernel_size": 5,
        "bn_eps": 1e-3,
        "bn_momentum": 0.01,
        "n_bins": 1024,
        "channels": 2,
        "patch_frames": 512,
        "first_bin": 0,
    },
}


class UNet(nn.Module):
    """Mask-estimating U-Net; see the module docstring for both layer orders.

    ``UNet(config, generator=None)`` initializes weights from ``generator``, or from a fresh
    generator seeded with 0 when none is given: construction never touches torch's global random
    state and is reproducible. ``variant="chainer"`` uses Chainer's init (LeCun normal: std
    ``1/sqrt(fan_in)``), ``variant="spleeter"`` Spleeter's (He uniform: bound
    ``sqrt(6/fan_in)``); biases zero, BatchNorm gamma 1 / beta 0.

    Attributes:
        config: the :class:`UNetConfig` it was built from.
    """

    def __init__(self, config: UNetConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config = config if config is not None else UNetConfig()
        k = config.kernel_size
        enc, dec, dec_in = config.encoder_channels, config.decoder_channels, config.decoder_in_channels
        spleeter = config.variant == "spleeter"
        # Layers are made on the meta device, so that PyTorch's own initialization (which
        # draws from the global generator) does not run; reset_parameters fills them.
        meta = {"device": "meta"}
        eps, momentum = config.bn_eps, config.bn_momentum
        # Spleeter pads explicitly (asymmetric 'same') and crops after the transposed convolutions.
        pad, out_pad = (0, 0) if spleeter else (config.padding, config.output_padding)
        in_ch = config.channels
        for i, out_ch in enumerate(enc, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(in_ch, out_ch, k, stride=2, padding=pad, **meta))
            if i < 6 or not spleeter:
                setattr(self, f"norm{i}", nn.BatchNorm2d(out_ch, eps=eps, momentum=momentum, **meta))
            in_ch = out_ch
        for i, (cin, cout) in enumerate(zip(dec_in, dec), start=1):
            setattr(self, f"deconv{i}", nn.ConvTranspose2d(cin, cout, k, stride=2, padding=pad, output_padding=out_pad, **meta))
            if i < 6 or spleeter:
                setattr(self, f"denorm{i}", nn.BatchNorm2d(cout, eps=eps, momentum=momentum, **meta))
        if spleeter:
            self.mask_conv = nn.Conv2d(
                dec[-1], config.channels, MASK_CONV_KERNEL, dilation=MASK_CONV_DILATION,
                padding=MASK_CONV_DILATION * (MASK_CONV_KERNEL - 1) // 2, **meta,
            )
        # Materialize on the CPU with torch.empty, not Module.to_empty: its empty_like of meta
        # tensors imports torch.fx's symbolic shapes on first use (0.2 s of every `stemforge
        # separate`). reset_parameters fills every parameter and buffer.
        self._apply(lambda t: torch.empty(t.shape, dtype=t.dtype))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialize every weight (the variant's init, see the class docstring) from
        ``generator``.

        ``generator`` must be a CPU generator when the model is on the CPU; when None, a fresh
        CPU generator seeded with 0 is used. Running BatchNorm statistics are reset too.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        he_uniform = self.config.variant == "spleeter"
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                w = module.weight
                # Chainer's fan-in: weight.shape[1] * kh * kw, for Convolution2D (out, in, kh, kw)
                # and Deconvolution2D (in, out, kh, kw) alike; PyTorch's layouts are the same, and
                # Keras computes the same number for Conv2D and Conv2DTranspose kernels.
                fan_in = w.shape[1] * w.shape[2] * w.shape[3]
                if he_uniform:
                    sample = torch.rand(w.shape, generator=generator, device=generator.device, dtype=w.dtype)
                    sample = (2 * sample - 1) * math.sqrt(6.0 / fan_in)
                else:
                    sample = torch.randn(w.shape, generator=generator, device=generator.device, dtype=w.dtype)
                    sample = sample / math.sqrt(fan_in)
                w.copy_(sample.to(w.device))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Estimate the mask.

        Args:
            x: magnitudes ``[batch, channels, n_bins, n_frames]`` (``channels`` and ``n_bins``
                those of the config, ``n_frames`` a multiple of 64), scaled as the spectrogram
                configuration the model was trained on says.
            generator: draws the dropout masks in training mode (on ``x``'s device). When None,
                torch's default generator is used, as ``nn.Dropout`` does; pass one for
                reproducible training. Ignored in eval mode.

        Returns:
            mask ``[batch, channels, n_bins, n_frames]`` in (0, 1): the target's magnitudes are
            estimated by ``mask * x``.
        """
        self._check_input(x)
        if self.config.variant == "spleeter":
            return self._forward_spleeter(x, generator)
        h = x
        skips = []
        for i in range(1, 7):
            h = F.leaky_relu(getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(h)), LEAKY_SLOPE)
            skips.append(h)
        h = skips.pop()
        for i in range(1, 6):
            if i > 1:
                h = torch.cat((h, skips.pop()), dim=1)
            h = getattr(self, f"denorm{i}")(getattr(self, f"deconv{i}")(h))
            if i in DROPOUT_BLOCKS:
                h = self._dropout(h, generator)
            h = F.relu(h)
        h = torch.cat((h, skips.pop()), dim=1)
        return torch.sigmoid(self.deconv6(h))

    def _forward_spleeter(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        before, after = self.config.same_padding
        h = x
        skips = []
        for i in range(1, 7):
            conv = getattr(self, f"conv{i}")(F.pad(h, (before, after, before, after)))
            skips.append(conv)
            if i < 6:
                h = F.leaky_relu(getattr(self, f"norm{i}")(conv), LEAKY_SLOPE)
        h = skips.pop()
        for i in range(1, 7):
            if i > 1:
                h = torch.cat((skips.pop(), h), dim=1)
            h = getattr(self, f"deconv{i}")(h)
            h = h[:, :, before : h.shape[2] - after, before : h.shape[3] - after]
            h = getattr(self, f"denorm{i}")(F.relu(h))
            if i in DROPOUT_BLOCKS:
                h = self._dropout(h, generator)
        return torch.sigmoid(self.mask_conv(h))

    def _dropout(self, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        p = self.config.dropout
        if not self.training or p == 0.0:
            return h
        if generator is None:
            return F.dropout(h, p, training=True)
        keep = torch.empty_like(h).bernoulli_(1.0 - p, generator=generator)
        return h * keep / (1.0 - p)

    def _check_input(self, x: torch.Tensor) -> None:
        channels = self.config.channels
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise StemforgeError(f"UNet: input must be [batch, {channels}, n_bins, n_frames], got {shape}")
        if x.shape[2] != self.config.n_bins:
            raise StemforgeError(f"UNet: input has {x.shape[2]} bins, the model expects {self.config.n_bins}")
        if x.shape[3] == 0 or x.shape[3] % FRAME_MULTIPLE:
            raise StemforgeError(
                f"UNet: n_frames must be a positive multiple of {FRAME_MULTIPLE}, got {x.shape[3]} (use pad_frames)"
            )


def non_finite_parameters(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` (a state_dict) holding NaN or inf."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def loss_fn(mask: torch.Tensor, mixture: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's training loss: ``mean(|mask * mixture - target|)`` (L1, mean over all elements).

    Args:
        mask: ``[batch, channels, n_bins, n_frames]`` network output.
        mixture: same shape, normalized mixture magnitudes (the network input).
        target: same shape, normalized magnitudes of the target stem.

    Returns:
        scalar tensor.
    """
    if mask.shape != mixture.shape or mask.shape != target.shape:
        raise StemforgeError(
            f"loss_fn: shapes differ: mask {tuple(mask.shape)}, mixture {tuple(mixture.shape)}, target {tuple(target.shape)}"
        )
    return (mask * mixture - target).abs().mean()


def pad_frames(x: torch.Tensor, multiple: int = FRAME_MULTIPLE) -> torch.Tensor:
    """Zero-pad the last axis (frames) at the end up to a multiple of ``multiple``.

    Args:
        x: ``[..., n_frames]``, e.g. ``[batch, channels, n_bins, n_frames]``.
        multiple: positive integer.

    Returns:
        ``[..., ceil(n_frames / multiple) * multiple]``; ``x`` itself when already a multiple.
        Crop the result of the network with ``[..., :n_frames]``.
    """
    if multiple <= 0:
        raise StemforgeError(f"pad_frames: multiple must be positive, got {multiple}")
    n_frames = x.shape[-1]
    extra = (-n_frames) % multiple
    if extra == 0:
        return x
    return F.pad(x, (0, extra))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters (elements) of ``model``; BatchNorm running statistics not included."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
