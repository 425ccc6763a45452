"""The U-Net of Jansson et al. (ISMIR 2017), as in the seed article's Chainer code.

The network maps normalized mixture magnitudes to a soft mask of the same shape::

    input  x     [batch, 1, n_bins=512, n_frames]   (bins 1..512; the DC bin is dropped)
    output mask  [batch, 1, n_bins=512, n_frames]   values in (0, 1)

``n_frames`` must be a multiple of 64 (six stride-2 halvings); :func:`pad_frames` pads a
spectrogram to that. The layer names (``conv1..conv6``, ``norm1..norm6``, ``deconv1..deconv6``,
``denorm1..denorm5``) are those of the Chainer ``UNet`` chain so that its ``save_npz`` weights map
one to one onto this module's ``state_dict`` (see :mod:`stemforge.train.chainer`).

Encoder block i: ``LeakyReLU(0.2)(BatchNorm(Conv2d(k, stride 2)))``, 16, 32, ..., 512 channels.
Decoder block i: ``ReLU(Dropout(BatchNorm(ConvTranspose2d(k, stride 2))))`` with dropout in the
first three only; the input of decoder blocks 2..6 is ``concat(previous decoder output, encoder
output of the same size)`` along channels (decoder first, as in the Chainer code). The last block
has no BatchNorm and ends in a sigmoid.

BatchNorm uses Chainer's defaults (``eps=2e-5``, running-average decay 0.9 i.e. PyTorch
``momentum=0.1``) so that imported Chainer weights give the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class UNetConfig(_Config):
    """Hyper-parameters of :class:`UNet`; stored in every checkpoint (with its hash).

    Attributes:
        kernel_size: square kernel of every (transposed) convolution. 4 is the seed's Chainer
            code; 5 is the paper's 5x5. Padding is chosen so every encoder block halves and every
            decoder block doubles the size: even k -> padding (k-2)/2; odd k -> padding (k-1)/2
            and ``output_padding`` 1 on the transposed convolutions.
        width: multiplier on the channel counts (``max(1, round(c * width))``; the last decoder
            always has 1 channel). 1.0 is the seed's network; 0.25 is a narrow, fast CPU model.
        dropout: dropout probability in decoder blocks 1-3 (training only).
        bn_eps: BatchNorm epsilon (Chainer default 2e-5).
        bn_momentum: BatchNorm running-average momentum in PyTorch's sense (Chainer decay 0.9).
        n_bins: frequency bins the network sees (512 = bins 1..512 of a 1024-point STFT).
        target: what the mask extracts, ``"vocals"`` or ``"accompaniment"``.
    """

    kernel_size: int = 4
    width: float = 1.0
    dropout: float = 0.5
    bn_eps: float = 2e-5
    bn_momentum: float = 0.1
    n_bins: int = 512
    target: str = "vocals"

    def __post_init__(self) -> None:
        # Normalize numeric types so that the hash does not depend on 1 vs 1.0.
        for name in ("width", "dropout", "bn_eps", "bn_momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise StemforgeError(f"UNetConfig: {name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("kernel_size", "n_bins"):
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

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Output channels of ``conv1..conv6``."""
        return tuple(self._scale(c) for c in BASE_ENCODER_CHANNELS)

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Output channels of ``deconv1..deconv6`` (the last is always 1: the mask)."""
        return tuple(self._scale(c) for c in BASE_DECODER_CHANNELS[:-1]) + (1,)

    @property
    def decoder_in_channels(self) -> tuple[int, ...]:
        """Input channels of ``deconv1..deconv6``: skip concatenations included."""
        enc, dec = self.encoder_channels, self.decoder_channels
        return (enc[5],) + tuple(dec[i - 1] + enc[5 - i] for i in range(1, 6))

    @property
    def padding(self) -> int:
        """Padding of every (transposed) convolution."""
        return (self.kernel_size - 1) // 2 if self.kernel_size % 2 else (self.kernel_size - 2) // 2

    @property
    def output_padding(self) -> int:
        """``output_padding`` of the transposed convolutions (1 for odd kernels)."""
        return self.kernel_size % 2

    def _scale(self, channels: int) -> int:
        return max(1, int(round(channels * self.width)))


class UNet(nn.Module):
    """Mask-estimating U-Net; see the module docstring for the architecture.

    ``UNet(config, generator=None)`` initializes weights as Chainer does (LeCun normal: normal
    with std ``1/sqrt(fan_in)``, biases zero, BatchNorm gamma 1 / beta 0) from ``generator``, or
    from a fresh generator seeded with 0 when none is given: construction never touches torch's
    global random state and is reproducible.

    Attributes:
        config: the :class:`UNetConfig` it was built from.
    """

    def __init__(self, config: UNetConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config = config if config is not None else UNetConfig()
        k, pad, out_pad = config.kernel_size, config.padding, config.output_padding
        enc, dec, dec_in = config.encoder_channels, config.decoder_channels, config.decoder_in_channels
        # Layers are made on the meta device, so that PyTorch's own initialization (which
        # draws from the global generator) does not run; reset_parameters fills them.
        meta = {"device": "meta"}
        eps, momentum = config.bn_eps, config.bn_momentum
        in_ch = 1
        for i, out_ch in enumerate(enc, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(in_ch, out_ch, k, stride=2, padding=pad, **meta))
            setattr(self, f"norm{i}", nn.BatchNorm2d(out_ch, eps=eps, momentum=momentum, **meta))
            in_ch = out_ch
        for i, (cin, cout) in enumerate(zip(dec_in, dec), start=1):
            setattr(self, f"deconv{i}", nn.ConvTranspose2d(cin, cout, k, stride=2, padding=pad, output_padding=out_pad, **meta))
            if i < 6:
                setattr(self, f"denorm{i}", nn.BatchNorm2d(cout, eps=eps, momentum=momentum, **meta))
        self.to_empty(device="cpu")
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialize every weight (Chainer's LeCun normal init) from ``generator``.

        ``generator`` must be a CPU generator when the model is on the CPU; when None, a fresh
        CPU generator seeded with 0 is used. Running BatchNorm statistics are reset too.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                w = module.weight
                # Chainer's fan-in: weight.shape[1] * kh * kw, for Convolution2D (out, in, kh, kw)
                # and Deconvolution2D (in, out, kh, kw) alike; PyTorch's layouts are the same.
                fan_in = w.shape[1] * w.shape[2] * w.shape[3]
                sample = torch.randn(w.shape, generator=generator, device=generator.device, dtype=w.dtype)
                w.copy_(sample.to(w.device) / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Estimate the mask.

        Args:
            x: normalized magnitudes ``[batch, 1, n_bins, n_frames]``, ``n_bins == config.n_bins``
                and ``n_frames`` a multiple of 64.
            generator: draws the dropout masks in training mode (on ``x``'s device). When None,
                torch's default generator is used, as ``nn.Dropout`` does; pass one for
                reproducible training. Ignored in eval mode.

        Returns:
            mask ``[batch, 1, n_bins, n_frames]`` in (0, 1).
        """
        self._check_input(x)
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

    def _dropout(self, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        p = self.config.dropout
        if not self.training or p == 0.0:
            return h
        if generator is None:
            return F.dropout(h, p, training=True)
        keep = torch.empty_like(h).bernoulli_(1.0 - p, generator=generator)
        return h * keep / (1.0 - p)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise StemforgeError(f"UNet: input must be [batch, 1, n_bins, n_frames], got {shape}")
        if x.shape[2] != self.config.n_bins:
            raise StemforgeError(f"UNet: input has {x.shape[2]} bins, the model expects {self.config.n_bins}")
        if x.shape[3] == 0 or x.shape[3] % FRAME_MULTIPLE:
            raise StemforgeError(
                f"UNet: n_frames must be a positive multiple of {FRAME_MULTIPLE}, got {x.shape[3]} (use pad_frames)"
            )


def loss_fn(mask: torch.Tensor, mixture: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The seed's training loss: ``mean(|mask * mixture - target|)`` (L1, mean over all elements).

    Args:
        mask: ``[batch, 1, n_bins, n_frames]`` network output.
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
        x: ``[..., n_frames]``, e.g. ``[batch, 1, n_bins, n_frames]``.
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
