"""Training: the U-Net (:mod:`.model`), the checkpoint format (:mod:`.checkpoint`) and the import
of the seed's Chainer weights (:mod:`.chainer`). The training data and loop live in ``data`` and
``loop``."""

from stemforge.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from stemforge.train.loop import TrainConfig, TrainResult, train
from stemforge.train.model import UNet, UNetConfig, count_parameters, loss_fn, pad_frames

__all__ = [
    "Checkpoint",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "UNetConfig",
    "count_parameters",
    "load_checkpoint",
    "loss_fn",
    "pad_frames",
    "save_checkpoint",
    "train",
]
