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
to one onto this module's ``state_dict``, see :mod:`stemforge.model.chainer`):

* encoder block i: ``LeakyReLU(0.2)(BatchNorm(Conv2d(k, stride 2)))``, 16, 32, ..., 512 channels;
* decoder block i: ``ReLU(Dropout(BatchNorm(ConvTranspose2d(k, stride 2))))`` with dropout in the
  first three only; the input of decoder blocks 2..6 is ``concat(previous decoder output, encoder
  output of the same size)`` along channels (decoder first, as in the Chainer code); the last
  block has no BatchNorm and ends in a sigmoid. Padding is symmetric (see
  :attr:`UNetConfig.padding`).

``variant="spleeter"`` (names ``conv1..conv6``, ``norm1..norm5``, ``deconv1..deconv6``,
``denorm1..denorm6``, ``mask_conv``; see :mod:`stemforge.model.spleeter` for the import):

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

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stemforge.core.errors import StemforgeError
from stemforge.model.config import FRAME_MULTIPLE, LOSSES, UNetConfig

#: Decoder blocks (1-based) followed by dropout during training.
DROPOUT_BLOCKS = (1, 2, 3)
#: Negative slope of the encoder's LeakyReLU (Chainer's ``F.leaky_relu`` default).
LEAKY_SLOPE = 0.2

#: Spleeter's output convolution: kernel, dilation (TensorFlow 'same': padding 3 each side).
MASK_CONV_KERNEL = 4
MASK_CONV_DILATION = 2


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
        self.check_input(x)
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
        # The inference copy (polyphase upsampling: for_inference) computes the activations in
        # place: the same values, less memory traffic; the module as trained does not.
        inplace = isinstance(self.deconv1, PolyphaseDeconv)
        before, after = self.config.same_padding
        h = x
        skips = []
        for i in range(1, 7):
            conv = getattr(self, f"conv{i}")(F.pad(h, (before, after, before, after)))
            skips.append(conv)
            if i < 6:
                h = F.leaky_relu(getattr(self, f"norm{i}")(conv), LEAKY_SLOPE, inplace=inplace)
        h = skips.pop()
        for i in range(1, 7):
            if i > 1:
                h = torch.cat((skips.pop(), h), dim=1)
            h = self._upsample_same(getattr(self, f"deconv{i}"), h)
            h = getattr(self, f"denorm{i}")(F.relu(h, inplace=inplace))
            if i in DROPOUT_BLOCKS:
                h = self._dropout(h, generator)
        return torch.sigmoid(self.mask_conv(h))

    def _upsample_same(self, deconv: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """A stride-2 transposed convolution cropped as TensorFlow's ``'same'`` (Spleeter's
        decoder): ``[B, c_in, H, W] -> [B, c_out, 2H, 2W]``. A :class:`PolyphaseDeconv` (what
        :meth:`for_inference` puts in place of a 5x5 ``deconv{i}``) computes the cropped output
        itself."""
        if isinstance(deconv, PolyphaseDeconv):
            return deconv(h)
        before, after = self.config.same_padding
        h = deconv(h)
        return h[:, :, before : h.shape[2] - after, before : h.shape[3] - after]

    def _dropout(self, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        p = self.config.dropout
        if not self.training or p == 0.0:
            return h
        if generator is None:
            return F.dropout(h, p, training=True)
        keep = torch.empty_like(h).bernoulli_(1.0 - p, generator=generator)
        return h * keep / (1.0 - p)

    def check_input(self, x: torch.Tensor) -> None:
        """StemforgeError unless ``x`` is ``[batch, channels, n_bins, n_frames]`` with the
        config's ``channels`` and ``n_bins`` and ``n_frames`` a positive multiple of 64."""
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

    # -- inference ---------------------------------------------------------------------------

    def for_inference(self) -> "UNet":
        """An inference copy: eval mode, no gradients, channels-last memory format (about a third
        less CPU time for the full-width U-Net), computing the same function to float rounding
        with faster layers:

        * ``variant="chainer"``: each BatchNorm folded into the (transposed) convolution before
          it (``conv{i}``/``norm{i}`` for i=1..6, ``deconv{i}``/``denorm{i}`` for i=1..5; the
          folded norms become identities);
        * ``variant="spleeter"`` (whose BatchNorms follow the ReLUs and cannot be folded) with
          5x5 kernels: each ``deconv{i}`` becomes a :class:`PolyphaseDeconv`, an ordinary
          convolution plus a pixel shuffle (oneDNN's fast path on the CPU).

        The copy's ``state_dict`` is not a checkpoint's: keep the original for saving."""
        net = copy.deepcopy(self).eval()
        with torch.no_grad():
            if net.config.variant == "chainer":
                for conv, norm, transpose in [(f"conv{i}", f"norm{i}", False) for i in range(1, 7)] + [
                    (f"deconv{i}", f"denorm{i}", True) for i in range(1, 6)
                ]:
                    if isinstance(getattr(net, norm), nn.BatchNorm2d):
                        setattr(net, conv, fuse_conv_bn_eval(getattr(net, conv), getattr(net, norm), transpose=transpose))
                        setattr(net, norm, nn.Identity())
            elif net.config.kernel_size == 5:
                for i in range(1, 7):
                    setattr(net, f"deconv{i}", PolyphaseDeconv(getattr(net, f"deconv{i}")))
        for p in net.parameters():
            p.requires_grad_(False)
        return net.to(memory_format=torch.channels_last)


class PolyphaseDeconv(nn.Module):
    """Spleeter's decoder upsampling, ``ConvTranspose2d(c_in, c_out, 5, stride=2)`` (no padding)
    cropped as TensorFlow's 'same' does (1 before, 2 after in each axis), computed as
    ``pixel_shuffle(conv(x), 2)`` with ``conv`` the ordinary ``Conv2d(c_in, 4 * c_out, 3,
    padding=1)`` of :func:`polyphase_conv`: ``[B, c_in, H, W] -> [B, c_out, 2H, 2W]``, the same
    sums (rounding aside). :meth:`UNet._upsample_same` is the function it must equal."""

    def __init__(self, deconv: nn.ConvTranspose2d):
        super().__init__()
        self.conv = polyphase_conv(deconv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


def polyphase_conv(deconv: nn.ConvTranspose2d) -> nn.Conv2d:
    """A ``Conv2d(c_in, 4 * c_out, 3, padding=1)`` whose output, ``pixel_shuffle``-d by 2, equals
    ``deconv`` (``ConvTranspose2d(c_in, c_out, 5, stride=2)``, no padding) cropped as TensorFlow's
    'same' does (1 before, 2 after in each axis): ``[B, c_in, H, W] -> [B, c_out, 2H, 2W]``.

    Output position ``q`` of the crop is full-output position ``q + 1``: an even ``q = 2p`` takes
    kernel taps 3 and 1 on inputs ``p - 1`` and ``p``, an odd ``q = 2p + 1`` taps 4, 2 and 0 on
    inputs ``p - 1 .. p + 1``; both are 3-tap windows of the input padded by one, so the four
    output phases are four kernel sets of one ordinary stride-1 convolution. The sums are the
    same (rounding aside); the ordinary convolution takes oneDNN's fast path on the CPU, where
    PyTorch's transposed convolution does not (measured: the three largest levels 40-60 % faster).
    """
    w = deconv.weight.detach()  # [c_in, c_out, 5, 5]
    c_in, c_out = w.shape[:2]
    taps = {0: {0: 3, 1: 1}, 1: {0: 4, 1: 2, 2: 0}}  # phase -> {window tap: kernel index}
    k = torch.zeros(c_out, 2, 2, c_in, 3, 3, dtype=w.dtype, device=w.device)
    for rh, th in taps.items():
        for rw, tw in taps.items():
            for jh, kh in th.items():
                for jw, kw in tw.items():
                    k[:, rh, rw, :, jh, jw] = w[:, :, kh, kw].T
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(k.reshape(4 * c_out, c_in, 3, 3))
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros(c_out, dtype=w.dtype, device=w.device)
        conv.bias.copy_(bias.repeat_interleave(4))
    return conv


def inference_net(model: nn.Module) -> nn.Module:
    """The network as the Separator runs it: its ``for_inference()`` copy for a stemforge
    :class:`UNet` or :class:`~stemforge.model.ensemble.MaskEnsemble`; any other module (a test's
    stand-in) copied, in eval mode, without gradients and channels-last."""
    if callable(getattr(model, "for_inference", None)):
        return model.for_inference()
    net = copy.deepcopy(model).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)


def non_finite_parameters(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` (a state_dict) holding NaN or inf."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def loss_fn(mask: torch.Tensor, mixture: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """The training loss of ``error = mask * mixture - target``, a mean over all elements:
    ``l1`` = ``mean(|error|)`` (the seed's), ``l2`` = ``mean(error ** 2)`` (errors weighted by
    their energy, as SDR weights them).

    Args:
        mask: ``[batch, channels, n_bins, n_frames]`` network output.
        mixture: same shape, normalized mixture magnitudes (the network input).
        target: same shape, normalized magnitudes of the target stem.
        kind: one of :data:`LOSSES`.

    Returns:
        scalar tensor.
    """
    if mask.shape != mixture.shape or mask.shape != target.shape:
        raise StemforgeError(
            f"loss_fn: shapes differ: mask {tuple(mask.shape)}, mixture {tuple(mixture.shape)}, target {tuple(target.shape)}"
        )
    error = mask * mixture - target
    if kind == "l1":
        return error.abs().mean()
    if kind == "l2":
        return error.square().mean()
    raise StemforgeError(f"loss_fn: kind must be one of {LOSSES}, got {kind!r}")


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
