"""stemforge: turn singing-voice corpora into training data, train a U-Net, separate songs.

The stable programmatic surface is re-exported here lazily, so that ``import stemforge`` stays
cheap (no torch, no h5py until a name is used)::

    from stemforge import DataDir, Separator, SpectrogramConfig

Packages, in the order the data flows (each imports only some of those before it: the edges
of ``tests/unit/contracts/test_layers.py``): ``core`` (errors, config, audio, dsp), ``store`` and ``recipes`` (and
``karaoke``, ``synth``), ``ingest``, ``augment``, ``model``, ``train``, ``separate``, ``evaluate``, ``serve``,
``demo``, and the thin ``cli`` on top.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SpectrogramConfig": "stemforge.core.config",
    "StemforgeError": "stemforge.core.errors",
    "DataDir": "stemforge.store",
    "TrackSource": "stemforge.recipes.base",
    "Separator": "stemforge.separate.separator",
    "UNet": "stemforge.model.unet",
    "UNetConfig": "stemforge.model.config",
    "TrainConfig": "stemforge.train.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stemforge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
