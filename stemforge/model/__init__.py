"""The model: the U-Net and what reads and writes it, shared by training and separation.

* :mod:`.config`: :class:`UNetConfig` (torch-free), its presets, the configuration a DataDir
  geometry calls for;
* :mod:`.unet`: :class:`UNet` in both layer orders (the seed's Chainer code and Spleeter's), the
  loss, and the inference copy the Separator runs (:meth:`UNet.for_inference`: BatchNorm folded,
  Spleeter's transposed convolutions as polyphase ones), next to the forward it must equal;
* :mod:`.checkpoint`: the checkpoint format (one net or two; read with ``weights_only``);
* :mod:`.chainer`, :mod:`.spleeter`: the importers of the seed's and Spleeter's weights.

``train`` and ``separate`` both import this package, never each other. Exports are lazy, so
that ``from stemforge.model import UNetConfig`` does not import torch.
"""

import importlib

_EXPORTS = {
    "PRESETS": "stemforge.model.config",
    "TARGETS": "stemforge.model.config",
    "UNetConfig": "stemforge.model.config",
    "geometry_unet_config": "stemforge.model.config",
    "UNet": "stemforge.model.unet",
    "count_parameters": "stemforge.model.unet",
    "inference_net": "stemforge.model.unet",
    "loss_fn": "stemforge.model.unet",
    "pad_frames": "stemforge.model.unet",
    "Checkpoint": "stemforge.model.checkpoint",
    "load_checkpoint": "stemforge.model.checkpoint",
    "save_checkpoint": "stemforge.model.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stemforge.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
