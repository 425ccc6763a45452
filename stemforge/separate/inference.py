"""The network as the Separator runs it: BatchNorm folded, channels-last, no gradients."""

from __future__ import annotations

from typing import Any


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
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)
