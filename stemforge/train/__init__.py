"""Training: the U-Net (:mod:`.model`), the checkpoint format (:mod:`.checkpoint`) and the import
of the seed's Chainer weights (:mod:`.chainer`). The training data and loop live in ``data``,
``batches`` and ``loop``.

Exports are lazy (as the package root's), so that importing a torch-free module of ``train``
(``loop``'s TrainConfig, for the CLI's help) does not import torch.
"""

import importlib

_EXPORTS = {
    "TrainConfig": "stemforge.train.loop",
    "TrainResult": "stemforge.train.loop",
    "train": "stemforge.train.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stemforge.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
