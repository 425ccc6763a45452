"""The stemforge checkpoint: one torch file holding the U-Net weights and what is needed to use
or resume them.

A checkpoint is a dict written by ``torch.save`` and read back with ``torch.load(...,
weights_only=True)``: it holds only tensors and plain Python values (dict, list, tuple, str,
int, float, bool, None), never pickled classes, so loading a checkpoint runs no foreign code.
Configurations are stored as plain dicts (with their hashes); numpy arrays and scalars given in
``rng_state``/``extra`` are turned into lists and Python numbers on save.

Top-level keys (format version 1)::

    format                   "stemforge-checkpoint"
    format_version           1
    stemforge_version        version that wrote it
    unet_config              UNetConfig.to_dict()          unet_config_hash
    spectrogram_config       SpectrogramConfig.to_dict()   spectrogram_config_hash
    target                   "vocals" | "accompaniment"
    step                     optimizer steps taken (0 for an imported or untrained model)
    model_state              UNet state_dict, CPU tensors
    optimizer_state          optimizer.state_dict() or None
    scaler_state             torch.amp.GradScaler.state_dict() or None
    rng_state                RNG states for resume (e.g. torch ByteTensors, numpy
                             ``bit_generator.state`` dicts) or None
    manifest_hash            hash of the training manifest or None
    extra                    free dict (plain values) or None

Writes are atomic: the file is written under a temporary name in the same folder, flushed to
disk and renamed over ``path``; a killed process never leaves a partial checkpoint at ``path``.
"""

from __future__ import annotations

import os
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stemforge import __version__
from stemforge.core.config import SpectrogramConfig, check_config
from stemforge.core.errors import CheckpointError, StemforgeError
from stemforge.train.model import UNet, UNetConfig, count_parameters

FORMAT_NAME = "stemforge-checkpoint"
FORMAT_VERSION = 1

_REQUIRED_KEYS = (
    "format_version",
    "unet_config",
    "spectrogram_config",
    "target",
    "step",
    "model_state",
)


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the file it was read from.
        model: the :class:`UNet` with the stored weights, in eval mode.
        unet_config: its :class:`UNetConfig`.
        spectrogram_config: the :class:`SpectrogramConfig` of the data it was trained on (the
            separator must compute magnitudes the same way).
        target: ``"vocals"`` or ``"accompaniment"``: what the mask extracts.
        step: optimizer steps taken.
        raw: the whole stored dict (see the module docstring), for resuming.
    """

    path: Path
    model: UNet
    unet_config: UNetConfig
    spectrogram_config: SpectrogramConfig
    target: str
    step: int
    raw: dict[str, Any] = field(repr=False)

    @property
    def optimizer_state(self) -> dict | None:
        return self.raw.get("optimizer_state")

    @property
    def scaler_state(self) -> dict | None:
        return self.raw.get("scaler_state")

    @property
    def rng_state(self) -> Any:
        return self.raw.get("rng_state")

    @property
    def manifest_hash(self) -> str | None:
        return self.raw.get("manifest_hash")

    @property
    def extra(self) -> dict | None:
        return self.raw.get("extra")

    @property
    def stemforge_version(self) -> str | None:
        return self.raw.get("stemforge_version")

    def check_spectrogram_config(self, expected: SpectrogramConfig) -> None:
        """Raise :class:`~stemforge.core.errors.ConfigMismatchError` unless the checkpoint was trained
        on magnitudes computed with ``expected`` (a DataDir's config, say)."""
        check_config(
            f"checkpoint {self.path}", expected, self.spectrogram_config.hash, self.spectrogram_config.to_dict()
        )

    def summary(self) -> dict[str, Any]:
        """Plain facts for a terminal table or a log line."""
        return {
            "path": str(self.path),
            "target": self.target,
            "step": self.step,
            "kernel_size": self.unet_config.kernel_size,
            "width": self.unet_config.width,
            "parameters": count_parameters(self.model),
            "unet_config": self.unet_config.hash,
            "spectrogram_config": self.spectrogram_config.hash,
            "stemforge_version": self.stemforge_version,
        }


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    unet_config: UNetConfig,
    spectrogram_config: SpectrogramConfig,
    target: str,
    step: int,
    optimizer_state: dict | None = None,
    scaler_state: dict | None = None,
    rng_state: Any = None,
    manifest_hash: str | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: destination file (conventionally ``*.pt``); missing parent folders are created.
        model: the :class:`UNet` (a ``torch.compile``-d or ``DataParallel``-wrapped one is
            unwrapped). Its weights are copied to the CPU.
        unet_config: must equal ``model.config``.
        spectrogram_config: how the training magnitudes were computed.
        target: must equal ``unet_config.target``.
        step: optimizer steps taken (>= 0).
        optimizer_state, scaler_state, rng_state, extra: plain values and tensors only (numpy
            arrays and scalars are converted to lists and Python numbers); anything else raises
            :class:`~stemforge.core.errors.CheckpointError` here rather than failing at load time.
        manifest_hash: identifies the training data.

    Raises:
        StemforgeError: the arguments disagree (config, target, model type).
        CheckpointError: a value cannot be stored, or the file cannot be written.
    """
    path = Path(path)
    model = _unwrap(model)
    if not isinstance(model, UNet):
        raise StemforgeError(f"save_checkpoint: expected a UNet, got {type(model).__name__}")
    if model.config != unet_config:
        raise StemforgeError(
            f"save_checkpoint: unet_config {unet_config.describe()} is not the model's {model.config.describe()}"
        )
    if target != unet_config.target:
        raise StemforgeError(f"save_checkpoint: target {target!r} is not unet_config.target {unet_config.target!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise StemforgeError(f"save_checkpoint: step must be a non-negative int, got {step!r}")
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "stemforge_version": __version__,
        "unet_config": unet_config.to_dict(),
        "unet_config_hash": unet_config.hash,
        "spectrogram_config": spectrogram_config.to_dict(),
        "spectrogram_config_hash": spectrogram_config.hash,
        "target": target,
        "step": step,
        "model_state": OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items()),
        "optimizer_state": _plain(optimizer_state, path, "optimizer_state"),
        "scaler_state": _plain(scaler_state, path, "scaler_state"),
        "rng_state": _plain(rng_state, path, "rng_state"),
        "manifest_hash": manifest_hash,
        "extra": _plain(extra, path, "extra"),
    }
    _atomic_torch_save(payload, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``; when it is a device (str or ``torch.device``)
            the model is moved there too.

    Returns:
        a :class:`Checkpoint` whose model is in eval mode.

    Raises:
        CheckpointError: the file is missing, not a torch file, a torch file that is not a
            stemforge checkpoint (a bare state_dict, say), of another format version, or
            inconsistent (weights that do not fit the stored config). The message names the
            path and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign bytes
        raise CheckpointError(f"{path}: not a stemforge checkpoint: {_load_failure(exc)}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a stemforge checkpoint: it holds a {type(raw).__name__}, not a dict")
    if raw.get("format") != FORMAT_NAME:
        if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
            what = "a bare state_dict"
        else:
            keys = sorted(map(str, raw))[:8]
            what = f"a dict with keys {keys}"
        raise CheckpointError(f"{path}: not a stemforge checkpoint: it is {what} (no format={FORMAT_NAME!r})")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this stemforge reads version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint: missing {missing}")
    try:
        unet_config = UNetConfig.from_dict(raw["unet_config"])
        spectrogram_config = SpectrogramConfig.from_dict(raw["spectrogram_config"])
    except (StemforgeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: stored configuration cannot be read: {exc}") from exc
    target, step = raw["target"], raw["step"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise CheckpointError(f"{path}: step is {step!r}, not an integer")
    if target != unet_config.target:
        raise CheckpointError(f"{path}: target {target!r} disagrees with unet_config.target {unet_config.target!r}")
    model = UNet(unet_config)
    load_model_state(model, raw["model_state"], str(path))
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    return Checkpoint(
        path=path,
        model=model,
        unet_config=unet_config,
        spectrogram_config=spectrogram_config,
        target=target,
        step=step,
        raw=raw,
    )


def load_model_state(model: UNet, state: Any, what: str) -> None:
    """Load ``state`` into ``model`` strictly; on any mismatch raise :class:`CheckpointError`
    naming ``what`` and listing missing keys, unexpected keys and shape differences."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what}: model_state is a {type(state).__name__}, not a state_dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
        for k in expected
        if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"shape mismatches [{'; '.join(shapes)}]")
    if problems:
        raise CheckpointError(f"{what}: weights do not fit the U-Net ({model.config.describe()}): " + ", ".join(problems))
    model.load_state_dict(state, strict=True)


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


_LEAVES = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device)


def _plain(value: Any, path: Path, where: str) -> Any:
    """``value`` with numpy arrays/scalars made plain; raise on anything weights_only refuses."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _LEAVES):
        return value
    if isinstance(value, dict):
        out = type(value)() if isinstance(value, OrderedDict) else {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise CheckpointError(f"{path}: cannot store {where}: key {k!r} is a {type(k).__name__}")
            out[k] = _plain(v, path, f"{where}[{k!r}]")
        return out
    if isinstance(value, list):
        return [_plain(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_plain(v, path, f"{where}[{i}]") for i, v in enumerate(value))
    raise CheckpointError(
        f"{path}: cannot store {where}: a {type(value).__name__} is not a tensor or a plain value "
        "(checkpoints are read with weights_only=True)"
    )


def _atomic_torch_save(payload: dict, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot create its folder: {exc}") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write checkpoint: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_failure(exc: Exception) -> str:
    text = str(exc)
    if "Weights only load failed" in text:
        for line in text.splitlines():
            if "WeightsUnpickler error" in line:
                return f"it holds Python objects a checkpoint never holds ({line.strip()})"
        return "it holds Python objects a checkpoint never holds (weights_only load refused)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"torch.load cannot read it ({type(exc).__name__}: {first[:200]})"
