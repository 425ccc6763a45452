"""The U-Net's configuration: :class:`UNetConfig`, its named presets, and the configuration a
DataDir geometry calls for (:func:`geometry_unet_config`). Torch-free, so that the CLI can show
and check these values without importing torch; the network itself is :mod:`stemforge.model.unet`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from stemforge.core.config import PRESETS as GEOMETRY_PRESETS
from stemforge.core.config import SpectrogramConfig, _Config
from stemforge.core.config import patch_frames as geometry_patch_frames
from stemforge.core.errors import StemforgeError

#: Training losses of ``mask * mixture - target`` (``stemforge train --loss``; :func:`~stemforge.model.unet.loss_fn`):
#: ``l1`` (the seed's) and ``l2``.
LOSSES = ("l1", "l2")

#: Channel counts of the seed's network (width 1.0).
BASE_ENCODER_CHANNELS = (16, 32, 64, 128, 256, 512)
BASE_DECODER_CHANNELS = (256, 128, 64, 32, 16, 1)
#: Six stride-2 levels: frames and bins must be multiples of 2**6.
FRAME_MULTIPLE = 64

TARGETS = ("vocals", "accompaniment")
#: Layer orders: the seed's Chainer code and Spleeter's TensorFlow code.
VARIANTS = ("chainer", "spleeter")


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


def default_model_bins(config: SpectrogramConfig) -> int:
    """The bins a model sees by default at ``config`` (a SpectrogramConfig): the preset's
    (512 of 513 at seed and paper, 1024 of 2049 at fullband, Spleeter's) for a preset's frame
    grid, else ``n_fft / 2`` rounded down to a multiple of 64 (bins 1..n_fft/2)."""
    for p in GEOMETRY_PRESETS.values():
        g = p.spectrogram
        if (g.sample_rate, g.n_fft, g.hop_length) == (config.sample_rate, config.n_fft, config.hop_length):
            return p.model_bins
    return max(FRAME_MULTIPLE, (config.n_fft // 2) // FRAME_MULTIPLE * FRAME_MULTIPLE)


def geometry_unet_config(config: SpectrogramConfig, variant: str = "seed", **overrides: Any) -> UNetConfig:
    """The UNetConfig of preset ``variant`` (``seed``, ``paper``, ``spleeter``: the layer order
    and kernels) sized to the DataDir geometry ``config``: its ``channels``, ``n_bins``
    :func:`default_model_bins`, ``patch_frames`` the geometry's training crop
    (:func:`stemforge.core.config.patch_frames`: 128 at seed/paper, 512 at fullband);
    ``first_bin`` is the variant's (1; 0 for ``spleeter``). ``overrides`` (``n_bins``, ``width``,
    ``target``, ...) win."""
    sized = {"channels": config.channels, "n_bins": default_model_bins(config), "patch_frames": geometry_patch_frames(config)}
    return UNetConfig.preset(variant, **{**sized, **overrides})
