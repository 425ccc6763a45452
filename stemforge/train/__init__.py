"""Training: how a run is asked for (:mod:`.config`, torch-free: what the CLI imports), what it
is (:mod:`.setup`: new, resumed or fine-tuned, checked), where it writes (:mod:`.rundir`), its
batches (:mod:`.sampling` decides the crops, :mod:`.resident` and :mod:`.streaming` cut them,
:mod:`.batches` opens one), how it is scored (:mod:`.validation`), its learning rate
(:mod:`.schedule`), several processes (:mod:`.distributed`) and the step loop (:mod:`.loop`). The
model itself is :mod:`stemforge.model`.

Exports are lazy (as the package root's), so that importing a torch-free module of ``train``
(:mod:`.config`, for the CLI's help) does not import torch.
"""

import importlib

_EXPORTS = {
    "TrainConfig": "stemforge.train.config",
    "TrainEvent": "stemforge.train.config",
    "TrainResult": "stemforge.train.config",
    "RunSpec": "stemforge.train.setup",
    "resolve_run": "stemforge.train.setup",
    "run": "stemforge.train.loop",
    "train": "stemforge.train.loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stemforge.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
