"""The network as the Separator runs it: BatchNorm folded, channels-last, no gradients."""

from __future__ import annotations

from typing import Any


def inference_net(model: Any) -> Any:
    """An inference copy of ``model``: BatchNorm folded into the preceding (transposed)
    convolution for a stemforge :class:`~stemforge.train.model.UNet` in eval mode (the same
    function to float rounding), and channels-last memory format (about a third less CPU time
    for the full-width U-Net); for Spleeter's layer order (whose BatchNorms follow the ReLUs and
    cannot be folded) the transposed convolutions become ordinary ones (:func:`polyphase_conv`,
    the same function to float rounding, faster on the CPU). Other modules are only copied and
    made channels-last."""
    import copy

    import torch
    from torch import nn

    from stemforge.train.model import UNet

    net = copy.deepcopy(model).eval()
    # Spleeter's layer order (skips before BatchNorm, BatchNorm after ReLU) cannot be folded.
    if isinstance(net, UNet) and net.config.variant == "chainer":
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
    if isinstance(net, UNet) and net.config.variant == "spleeter" and net.config.kernel_size == 5:
        net = _spleeter_net(net).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------
# Spleeter's layer order: the same function, computed with faster CPU kernels
# ------------------------------------------------------------------------------------------


def polyphase_conv(deconv: Any) -> Any:
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
    import torch
    from torch import nn

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


def _spleeter_net(model: Any) -> Any:
    """The inference copy of a ``variant="spleeter"`` :class:`~stemforge.train.model.UNet`
    with 5x5 kernels: the same layers and order as ``UNet._forward_spleeter`` in eval mode,
    the transposed convolutions computed by :func:`polyphase_conv`, ReLUs in place. Input and
    output as the UNet's: ``[batch, channels, n_bins, n_frames] -> mask`` of the same shape."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from stemforge.train.model import LEAKY_SLOPE

    class _SpleeterNet(nn.Module):
        def __init__(self, unet: Any):
            super().__init__()
            self.config = unet.config
            self.pad = unet.config.same_padding
            for i in range(1, 7):
                setattr(self, f"conv{i}", getattr(unet, f"conv{i}"))
                if i < 6:
                    setattr(self, f"norm{i}", getattr(unet, f"norm{i}"))
                setattr(self, f"deconv{i}", polyphase_conv(getattr(unet, f"deconv{i}")))
                setattr(self, f"denorm{i}", getattr(unet, f"denorm{i}"))
            self.mask_conv = unet.mask_conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            unet_check(x)
            before, after = self.pad
            h = x
            skips = []
            for i in range(1, 7):
                conv = getattr(self, f"conv{i}")(F.pad(h, (before, after, before, after)))
                skips.append(conv)
                if i < 6:
                    h = F.leaky_relu(getattr(self, f"norm{i}")(conv), LEAKY_SLOPE, inplace=True)
            h = skips.pop()
            for i in range(1, 7):
                if i > 1:
                    h = torch.cat((skips.pop(), h), dim=1)
                h = F.pixel_shuffle(getattr(self, f"deconv{i}")(h), 2)
                h = getattr(self, f"denorm{i}")(F.relu(h, inplace=True))
            return torch.sigmoid(self.mask_conv(h))

    unet_check = model._check_input
    return _SpleeterNet(model)
