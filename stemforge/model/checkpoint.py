"""The stemforge checkpoint: one torch file holding the U-Net weights (one net, or a vocals net
and an accompaniment net) and what is needed to use or resume them.

A checkpoint is a dict written by ``torch.save`` and read back with ``torch.load(...,
weights_only=True)``: it holds only tensors and plain Python values (dict, list, tuple, str,
int, float, bool, None), never pickled classes, so loading a checkpoint runs no foreign code.
Configurations are stored as plain dicts (with their hashes); numpy arrays and scalars given in
``rng_state``/``extra`` are turned into lists and Python numbers on save.

Format version 1 holds one net (what ``stemforge train`` and ``import-chainer`` write). Its
top-level keys::

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

Format version 2 holds two nets, one per target (Jansson et al. train one per target; Spleeter
ships two), written by ``import-spleeter`` and ``combine`` (:func:`save_nets_checkpoint`,
:func:`combine_checkpoints`); it is for separation and ``--init``, not for resuming::

    format, format_version 2, stemforge_version, spectrogram_config, spectrogram_config_hash,
    manifest_hash (None), extra
    nets                     {"vocals": NET, "accompaniment": NET}, NET being
                             {"unet_config", "unet_config_hash", "target", "step", "model_state"}

Format version 3 holds an ensemble: two or more nets of one target whose masks are averaged
(:class:`~stemforge.model.ensemble.MaskEnsemble`), written by ``stemforge ensemble``
(:func:`save_ensemble_checkpoint`, :func:`ensemble_checkpoints`); for separation only, like
version 2::

    format, format_version 3, stemforge_version, spectrogram_config, spectrogram_config_hash,
    manifest_hash (None), extra
    target                   "vocals" | "accompaniment"
    members                  [NET, NET, ...], NET as in version 2 (its target the ensemble's)

Every version may also hold ``inference``, the separation defaults a user fixed for this
checkpoint (``stemforge defaults``, :func:`set_inference_defaults`): ``{"mask_power": P}``,
which separate, evaluate and serve use when given no ``--mask-power`` (without the Wiener
filter). A checkpoint without it separates with the Separator's own defaults; a reader that
predates the key ignores it.

Both nets (every member) see the same magnitudes (one spectrogram configuration, the same
``n_bins`` and ``channels``). A writer uses the lowest version that holds what it writes, so one-net checkpoints
stay readable by earlier stemforge versions. Loading refuses weights that are not finite numbers
(NaN or inf): a net with them would write NaN audio.

Every checkpoint written by this version also holds ``checksum`` (both formats): ``"sha256:"``
and the SHA-256 of everything else it holds, as loaded (:func:`payload_checksum`: every tensor's
dtype, shape and bytes, every plain value, every key, in order). :func:`load_checkpoint` checks
it before anything else is read from the file, so bytes damaged on disk or in a copy are refused
in one line (:class:`~stemforge.core.errors.CheckpointError`) instead of loading altered weights
(torch's zip reader does not check its own CRC-32s). A checkpoint without the key (written before
checksums existed, or by hand) loads as before, unchecked.

Writes are atomic: the file is written under a temporary name in the same folder, flushed to
disk and renamed over ``path``; a killed process never leaves a partial checkpoint at ``path``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from stemforge import __version__
from stemforge.core.config import SpectrogramConfig, check_config
from stemforge.core.errors import CheckpointError, StemforgeError
from stemforge.core.files import atomic_open, regular_file_problem
from stemforge.model.config import TARGETS, UNetConfig
from stemforge.model.ensemble import MaskEnsemble, check_members, members_problem
from stemforge.model.unet import UNet, count_parameters, non_finite_parameters

FORMAT_NAME = "stemforge-checkpoint"
#: The version of one-net checkpoints.
FORMAT_VERSION = 1
#: The version of two-net checkpoints.
NETS_FORMAT_VERSION = 2
#: The version of ensemble checkpoints.
ENSEMBLE_FORMAT_VERSION = 3
#: Versions this stemforge reads.
READ_VERSIONS = (FORMAT_VERSION, NETS_FORMAT_VERSION, ENSEMBLE_FORMAT_VERSION)
#: The key of the checksum in a checkpoint, and the prefix of its value (the algorithm).
CHECKSUM_KEY = "checksum"
CHECKSUM_PREFIX = "sha256:"

_REQUIRED_KEYS = (
    "format_version",
    "unet_config",
    "spectrogram_config",
    "target",
    "step",
    "model_state",
)
_REQUIRED_NETS_KEYS = ("format_version", "spectrogram_config", "nets")
_REQUIRED_ENSEMBLE_KEYS = ("format_version", "spectrogram_config", "target", "members")
_REQUIRED_NET_KEYS = ("unet_config", "target", "step", "model_state")
#: The optional key of separation defaults, and the defaults it may hold.
INFERENCE_KEY = "inference"
INFERENCE_FIELDS = ("mask_power",)


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the file it was read from.
        model: the :class:`UNet` with the stored weights, in eval mode; in a two-net checkpoint,
            the first net of :attr:`nets` (the vocals net); in an ensemble, the
            :class:`~stemforge.model.ensemble.MaskEnsemble` of its members.
        unet_config: its :class:`UNetConfig` (an ensemble's: its first member's).
        spectrogram_config: the :class:`SpectrogramConfig` of the data it was trained on (the
            separator must compute magnitudes the same way).
        target: ``"vocals"`` or ``"accompaniment"``: what ``model``'s mask extracts.
        step: optimizer steps taken (by ``model``; an ensemble's: its first member's).
        raw: the whole stored dict (see the module docstring), for resuming.
        nets: every net by target, in :data:`~stemforge.model.config.TARGETS` order: one entry
            (``{target: model}``) or two (``{"vocals": UNet, "accompaniment": UNet}``). Each
            maps magnitudes ``[batch, channels, n_bins, n_frames]`` to its target's mask of the
            same shape (see :class:`~stemforge.model.unet.UNet`); with ``v = mask_v * x`` and
            ``a = mask_a * x`` a separator combines two nets as Spleeter does: vocals mask
            ``(v**2 + eps/2) / (v**2 + a**2 + eps)``, accompaniment its complement.
        steps: optimizer steps of each net, by target.
        member_steps: an ensemble's optimizer steps of each member, in order; empty otherwise.
    """

    path: Path
    model: UNet
    unet_config: UNetConfig
    spectrogram_config: SpectrogramConfig
    target: str
    step: int
    raw: dict[str, Any] = field(repr=False)
    nets: dict[str, UNet] = field(default_factory=dict, repr=False)
    steps: dict[str, int] = field(default_factory=dict)
    member_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.nets:
            self.nets = {self.target: self.model}
        if not self.steps:
            self.steps = {self.target: self.step}

    @property
    def targets(self) -> tuple[str, ...]:
        """Targets of the nets held: ``("vocals",)``, ``("accompaniment",)`` or both."""
        return tuple(self.nets)

    @property
    def members(self) -> int:
        """Nets averaged into the mask: 1, or an ensemble's members."""
        return max(1, len(self.member_steps))

    def net(self, target: str) -> UNet:
        """The net whose mask extracts ``target``; CheckpointError when the checkpoint has none."""
        if target not in self.nets:
            raise CheckpointError(f"{self.path}: holds no {target} net (it holds {' and '.join(self.targets)})")
        return self.nets[target]

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

    @property
    def inference(self) -> dict[str, float]:
        """The separation defaults stored with it (``{"mask_power": P}``), ``{}`` when none."""
        return dict(self.raw.get(INFERENCE_KEY) or {})

    def check_spectrogram_config(self, expected: SpectrogramConfig) -> None:
        """Raise :class:`~stemforge.core.errors.ConfigMismatchError` unless the checkpoint was trained
        on magnitudes computed with ``expected`` (a DataDir's config, say)."""
        check_config(
            f"checkpoint {self.path}", expected, self.spectrogram_config.hash, self.spectrogram_config.to_dict()
        )

    def summary(self) -> dict[str, Any]:
        """Plain facts for a terminal table or a log line (``target`` is ``vocals+accompaniment``
        for a two-net checkpoint; ``members`` is an ensemble's nets, else 1; ``mask_power`` the
        stored separation default or None; ``parameters`` counts every net)."""
        return {
            "path": str(self.path),
            "target": "+".join(self.targets),
            "targets": list(self.targets),
            "step": self.step,
            "variant": self.unet_config.variant,
            "kernel_size": self.unet_config.kernel_size,
            "width": self.unet_config.width,
            "n_bins": self.unet_config.n_bins,
            "channels": self.unet_config.channels,
            "members": self.members,
            "mask_power": self.inference.get("mask_power"),
            "parameters": sum(count_parameters(net) for net in self.nets.values()),
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


def save_nets_checkpoint(
    path: str | os.PathLike,
    nets: Mapping[str, nn.Module],
    spectrogram_config: SpectrogramConfig,
    steps: Mapping[str, int] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a two-net checkpoint (format version 2) atomically and return its path.

    Args:
        path: destination file; missing parent folders are created.
        nets: ``{"vocals": UNet, "accompaniment": UNet}``, each net's ``config.target`` its key.
            Both must see the same magnitudes: equal ``n_bins`` and ``channels``.
        spectrogram_config: how the magnitudes both nets see are computed.
        steps: optimizer steps of each net (0 when not given).
        extra: plain values (see :func:`save_checkpoint`).

    Raises:
        StemforgeError: the nets are not one per target or do not fit together.
        CheckpointError: a value cannot be stored, or the file cannot be written.
    """
    path = Path(path)
    if set(nets) != set(TARGETS):
        raise StemforgeError(f"save_nets_checkpoint: needs one net per target {TARGETS}, got {sorted(nets)}")
    steps = dict(steps or {})
    entries: dict[str, Any] = {}
    first: UNetConfig | None = None
    for target in TARGETS:
        model = _unwrap(nets[target])
        if not isinstance(model, UNet):
            raise StemforgeError(f"save_nets_checkpoint: the {target} net is a {type(model).__name__}, not a UNet")
        config = model.config
        if config.target != target:
            raise StemforgeError(f"save_nets_checkpoint: the {target} net's config has target {config.target!r}")
        if first is not None and (config.n_bins, config.channels) != (first.n_bins, first.channels):
            raise StemforgeError(
                f"save_nets_checkpoint: the nets see different inputs: vocals {first.n_bins} bins x "
                f"{first.channels} channels, accompaniment {config.n_bins} bins x {config.channels} channels"
            )
        first = first or config
        entries[target] = _net_entry(model, steps.get(target, 0), f"save_nets_checkpoint: the {target} net")
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": NETS_FORMAT_VERSION,
        "stemforge_version": __version__,
        "spectrogram_config": spectrogram_config.to_dict(),
        "spectrogram_config_hash": spectrogram_config.hash,
        "nets": entries,
        "manifest_hash": None,
        "extra": _plain(extra, path, "extra"),
    }
    _atomic_torch_save(payload, path)
    return path


def _net_entry(model: UNet, step: Any, what: str) -> dict[str, Any]:
    """The stored form of one net of a version-2 or version-3 checkpoint (NET in the module
    docstring); StemforgeError naming ``what`` for a bad step."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise StemforgeError(f"{what}: step must be a non-negative int, got {step!r}")
    config = model.config
    return {
        "unet_config": config.to_dict(),
        "unet_config_hash": config.hash,
        "target": config.target,
        "step": step,
        "model_state": OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items()),
    }


def save_ensemble_checkpoint(
    path: str | os.PathLike,
    members: list[nn.Module],
    spectrogram_config: SpectrogramConfig,
    steps: list[int] | None = None,
    extra: dict | None = None,
) -> Path:
    """Write an ensemble checkpoint (format version 3) atomically and return its path.

    Args:
        path: destination file; missing parent folders are created.
        members: two or more :class:`UNet` of one target that see the same magnitudes
            (:data:`~stemforge.model.ensemble.SHARED_FIELDS` equal); their masks are averaged.
        spectrogram_config: how the magnitudes they see are computed.
        steps: optimizer steps of each member (0 when not given).
        extra: plain values (see :func:`save_checkpoint`).

    Raises:
        StemforgeError: a member is not a UNet, or the members do not fit together.
        CheckpointError: a value cannot be stored, or the file cannot be written.
    """
    path = Path(path)
    nets = [_unwrap(m) for m in members]
    check_members(nets, "save_ensemble_checkpoint")
    steps = list(steps) if steps is not None else [0] * len(nets)
    if len(steps) != len(nets):
        raise StemforgeError(f"save_ensemble_checkpoint: {len(steps)} steps for {len(nets)} members")
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": ENSEMBLE_FORMAT_VERSION,
        "stemforge_version": __version__,
        "spectrogram_config": spectrogram_config.to_dict(),
        "spectrogram_config_hash": spectrogram_config.hash,
        "target": nets[0].config.target,
        "members": [_net_entry(m, s, f"save_ensemble_checkpoint: member {i}") for i, (m, s) in enumerate(zip(nets, steps), start=1)],
        "manifest_hash": None,
        "extra": _plain(extra, path, "extra"),
    }
    _atomic_torch_save(payload, path)
    return path


def ensemble_checkpoints(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the ensemble checkpoint ``out`` of the nets in ``paths`` (one-net checkpoints of
    one target, or ensembles, whose members are taken one by one); ``extra`` records
    ``ensemble_of`` (the files' names).

    Raises:
        CheckpointError: a file is unreadable or holds two nets (vocals and accompaniment);
            fewer than two nets in all; the nets extract different targets or see different
            inputs (the file and the values named).
        ConfigMismatchError: two were trained on magnitudes computed differently.
    """
    members: list[UNet] = []
    steps: list[int] = []
    sources: list[Checkpoint] = []
    for path in paths:
        ckpt = load_checkpoint(path)
        if len(ckpt.nets) != 1:
            raise CheckpointError(f"{ckpt.path}: holds {' and '.join(ckpt.targets)} nets; an ensemble takes nets of one target")
        if sources:
            first = sources[0]
            check_config(f"{ckpt.path} against {first.path}", first.spectrogram_config,
                         ckpt.spectrogram_config.hash, ckpt.spectrogram_config.to_dict())
        if isinstance(ckpt.model, MaskEnsemble):
            members += list(ckpt.model.members)
            steps += list(ckpt.member_steps)
        else:
            members.append(ckpt.model)
            steps.append(ckpt.step)
        sources.append(ckpt)
        problem = members_problem([m.config for m in members]) if len(members) > 1 else None
        if problem:
            raise CheckpointError(f"{ckpt.path}: does not fit the nets before it: {problem}")
    if len(members) < 2:
        raise CheckpointError(f"an ensemble needs at least two nets, got {len(members)} (from {', '.join(str(c.path) for c in sources) or 'no file'})")
    return save_ensemble_checkpoint(
        out, members, sources[0].spectrogram_config, steps=steps,
        extra={"ensemble_of": [c.path.name for c in sources]},
    )


def combine_checkpoints(
    vocals: str | os.PathLike, accompaniment: str | os.PathLike, out: str | os.PathLike
) -> Path:
    """Write the two-net checkpoint ``out`` from two one-net checkpoints (``stemforge train
    --target vocals`` and ``--target accompaniment``); ``extra`` records ``combined_from``.

    Raises:
        CheckpointError: a file is unreadable, holds two nets already, or the wrong target.
        ConfigMismatchError: the two were trained on magnitudes computed differently (both
            configurations are named).
        StemforgeError: their nets see different bins or channels.
    """
    loaded = {}
    for target, path in (("vocals", vocals), ("accompaniment", accompaniment)):
        ckpt = load_checkpoint(path)
        if len(ckpt.nets) != 1:
            raise CheckpointError(f"{ckpt.path}: holds {' and '.join(ckpt.targets)} nets already; give one-net checkpoints")
        if ckpt.target != target:
            raise CheckpointError(f"{ckpt.path}: its net extracts {ckpt.target}, not {target} (arguments swapped?)")
        loaded[target] = ckpt
    v, a = loaded["vocals"], loaded["accompaniment"]
    check_config(f"{a.path} (accompaniment) against {v.path} (vocals)", v.spectrogram_config,
                 a.spectrogram_config.hash, a.spectrogram_config.to_dict())
    return save_nets_checkpoint(
        out,
        {t: c.model for t, c in loaded.items()},
        v.spectrogram_config,
        steps={t: c.step for t, c in loaded.items()},
        extra={"combined_from": {t: c.path.name for t, c in loaded.items()}},
    )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, :func:`save_nets_checkpoint` or
    :func:`save_ensemble_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load``; when it is a device (str or ``torch.device``)
            the nets are moved there too.

    Returns:
        a :class:`Checkpoint` whose nets are in eval mode.

    Raises:
        CheckpointError: the file is missing, empty, truncated, of another kind (an npz, an
            HDF5 shard, audio...), a torch file that is not a stemforge checkpoint (a bare
            state_dict, say), of another format version, or inconsistent (weights that do not
            fit the stored config, weights that are not finite). The message names the path
            and says what the file is, in one line.
    """
    path = Path(path)
    raw = read_torch_file(path, "stemforge checkpoint", map_location=map_location)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a stemforge checkpoint: it holds a {type(raw).__name__}, not a dict")
    if raw.get("format") != FORMAT_NAME:
        if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
            what = "a bare state_dict"
        else:
            keys = sorted(map(str, raw))[:8]
            what = f"a dict with keys {keys}"
        raise CheckpointError(f"{path}: not a stemforge checkpoint: it is {what} (no format={FORMAT_NAME!r})")
    check_checksum(raw, path)
    version = raw.get("format_version")
    if version not in READ_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this stemforge reads versions "
            + ", ".join(map(str, READ_VERSIONS))
        )
    required = {FORMAT_VERSION: _REQUIRED_KEYS, NETS_FORMAT_VERSION: _REQUIRED_NETS_KEYS}.get(version, _REQUIRED_ENSEMBLE_KEYS)
    missing = [k for k in required if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint: missing {missing}")
    _check_inference(raw.get(INFERENCE_KEY), path)
    try:
        spectrogram_config = SpectrogramConfig.from_dict(raw["spectrogram_config"])
    except (StemforgeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: stored configuration cannot be read: {exc}") from exc
    if version == ENSEMBLE_FORMAT_VERSION:
        return _load_ensemble(path, raw, spectrogram_config, map_location)
    if version == FORMAT_VERSION:
        entries = {raw.get("target"): raw}
        where = {raw.get("target"): str(path)}
    else:
        entries = raw["nets"]
        if not isinstance(entries, dict) or set(entries) != set(TARGETS):
            found = sorted(map(str, entries)) if isinstance(entries, dict) else type(entries).__name__
            raise CheckpointError(f"{path}: nets must be one per target {list(TARGETS)}, found {found}")
        entries = {t: entries[t] for t in TARGETS}
        where = {t: f"{path} ({t} net)" for t in TARGETS}
    nets: dict[str, UNet] = {}
    steps: dict[str, int] = {}
    for target, entry in entries.items():
        nets[target], steps[target] = _load_net(entry, target, where[target], map_location)
    first = next(iter(nets))
    if len(nets) == 2:
        v, a = (nets[t].config for t in TARGETS)
        if (v.n_bins, v.channels) != (a.n_bins, a.channels):
            raise CheckpointError(
                f"{path}: the nets see different inputs: vocals {v.n_bins} bins x {v.channels} channels, "
                f"accompaniment {a.n_bins} bins x {a.channels} channels"
            )
    return Checkpoint(
        path=path,
        model=nets[first],
        unet_config=nets[first].config,
        spectrogram_config=spectrogram_config,
        target=first,
        step=steps[first],
        raw=raw,
        nets=nets,
        steps=steps,
    )


def _check_inference(value: Any, path: Path) -> None:
    """CheckpointError naming ``path`` unless ``value`` (the ``inference`` key) is None or a dict
    of :data:`INFERENCE_FIELDS` whose mask power is a number above 0 (the Separator checks its
    upper bound)."""
    if value is None:
        return
    if not isinstance(value, dict) or set(value) - set(INFERENCE_FIELDS):
        found = sorted(map(str, value)) if isinstance(value, dict) else type(value).__name__
        raise CheckpointError(f"{path}: separation defaults must be a dict of {list(INFERENCE_FIELDS)}, found {found}")
    power = value.get("mask_power")
    if power is not None and (isinstance(power, bool) or not isinstance(power, (int, float)) or not 0 < power < float("inf")):
        raise CheckpointError(f"{path}: stored mask power must be a number above 0, found {power!r}")


def set_inference_defaults(path: str | os.PathLike, mask_power: float | None, out: str | os.PathLike | None = None) -> Path:
    """Store (or, with ``mask_power`` None, remove) a checkpoint's separation default and return
    the file written: ``out``, or ``path`` itself rewritten atomically. Everything else is kept
    as it was (weights, training state, ``stemforge_version``); any format version.

    Args:
        path: a checkpoint :func:`load_checkpoint` reads.
        mask_power: the mask power ``p`` (see :class:`~stemforge.separate.separator.Separator`)
            that separate, evaluate and serve use when given none; above 0.
        out: where to write; None for ``path``.

    Raises:
        CheckpointError: ``path`` cannot be read, ``mask_power`` is not a number above 0, or the
            file cannot be written.
    """
    path = Path(path)
    raw = load_checkpoint(path).raw  # every check of a readable checkpoint, in one line; raw is the file as read
    payload = {k: v for k, v in raw.items() if k not in (CHECKSUM_KEY, INFERENCE_KEY)}
    if mask_power is not None:
        _check_inference({"mask_power": mask_power}, path)
        payload[INFERENCE_KEY] = {"mask_power": float(mask_power)}
    target = Path(out) if out is not None else path
    _atomic_torch_save(payload, target)
    return target


def _load_net(entry: Any, target: Any, what: str, map_location: Any) -> tuple[UNet, int]:
    """The net (eval mode) and its step stored in ``entry`` (a version-1 checkpoint or a NET of
    version 2 or 3), which must extract ``target``; CheckpointError naming ``what``."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{what}: is a {type(entry).__name__}, not a dict")
    missing = [k for k in _REQUIRED_NET_KEYS if k not in entry]
    if missing:
        raise CheckpointError(f"{what}: incomplete checkpoint: missing {missing}")
    try:
        unet_config = UNetConfig.from_dict(entry["unet_config"])
    except (StemforgeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{what}: stored configuration cannot be read: {exc}") from exc
    step = entry["step"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise CheckpointError(f"{what}: step is {step!r}, not an integer")
    if target != unet_config.target:
        raise CheckpointError(f"{what}: target {target!r} disagrees with unet_config.target {unet_config.target!r}")
    model = UNet(unet_config)
    load_model_state(model, entry["model_state"], what)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), step


def _load_ensemble(path: Path, raw: dict, spectrogram_config: SpectrogramConfig, map_location: Any) -> Checkpoint:
    """The :class:`Checkpoint` of a version-3 ``raw`` read from ``path``."""
    target, entries = raw["target"], raw["members"]
    if target not in TARGETS:
        raise CheckpointError(f"{path}: target {target!r} is not one of {list(TARGETS)}")
    if not isinstance(entries, list) or len(entries) < 2:
        found = f"{len(entries)} net(s)" if isinstance(entries, list) else f"a {type(entries).__name__}"
        raise CheckpointError(f"{path}: an ensemble's members must be a list of two or more nets, found {found}")
    loaded = [_load_net(e, target, f"{path} (member {i})", map_location) for i, e in enumerate(entries, start=1)]
    problem = members_problem([net.config for net, _ in loaded])
    if problem:
        raise CheckpointError(f"{path}: the members do not fit together: {problem}")
    model = MaskEnsemble([net for net, _ in loaded]).eval()
    return Checkpoint(
        path=path,
        model=model,
        unet_config=model.config,
        spectrogram_config=spectrogram_config,
        target=target,
        step=loaded[0][1],
        raw=raw,
        member_steps=tuple(step for _, step in loaded),
    )


def load_model_state(model: UNet, state: Any, what: str) -> None:
    """Load ``state`` into ``model`` strictly; on any mismatch raise :class:`CheckpointError`
    naming ``what`` and listing missing keys, unexpected keys and shape differences, or the
    tensors that are not finite."""
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
    check_finite(state, what)
    model.load_state_dict(state, strict=True)


def check_finite(state: dict[str, Any], what: str) -> None:
    """Raise :class:`CheckpointError` naming ``what`` and the tensors of ``state`` that hold NaN
    or inf (a net with them writes NaN audio)."""
    bad = non_finite_parameters(state)
    if bad:
        shown = ", ".join(bad[:8]) + (f", ... ({len(bad) - 8} more)" if len(bad) > 8 else "")
        raise CheckpointError(f"{what}: weights are not all finite numbers: NaN or inf in {shown}")


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
    """``payload`` with its checksum (:data:`CHECKSUM_KEY`), ``torch.save``-d through
    :func:`stemforge.core.files.atomic_open` (a full disk raises its
    :class:`~stemforge.core.errors.DiskFullError`; any other OSError a CheckpointError)."""
    payload = {**payload, CHECKSUM_KEY: payload_checksum(payload)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot create its folder: {exc}") from exc
    try:
        with atomic_open(path, "wb") as f:
            torch.save(payload, f)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write checkpoint: {exc}") from exc


def payload_checksum(payload: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of a checkpoint's payload (every key but :data:`CHECKSUM_KEY`), as
    loaded: keys and values in order, each tensor by dtype, shape and bytes (wherever it lives),
    each plain value by type and ``repr``. Two payloads that load as the same values have the
    same checksum whatever the bytes of the file around them."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return CHECKSUM_PREFIX + digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        t = t.cpu() if t.device.type != "cpu" else t
        digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, Mapping):
        digest.update(f"D{len(value)};".encode())
        for k, v in value.items():
            _feed(digest, k)
            _feed(digest, v)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)};".encode())
        for v in value:
            _feed(digest, v)
    else:  # str, int, float, bool, None, torch.dtype, torch.device (what _plain lets through)
        digest.update(f"{type(value).__name__}:{value!r};".encode("utf-8", "surrogatepass"))


def check_checksum(raw: Mapping[str, Any], path: Path) -> bool:
    """Check the checksum a checkpoint holds against its contents; False when it holds none
    (written before checksums existed). CheckpointError naming ``path`` when they differ."""
    if CHECKSUM_KEY not in raw:
        return False
    stored = raw[CHECKSUM_KEY]
    if not (isinstance(stored, str) and stored.startswith(CHECKSUM_PREFIX)) or stored != payload_checksum(raw):
        raise CheckpointError(
            f"{path}: damaged: its contents do not match the checksum written with it (changed on disk or in a "
            "copy since); use another copy, or an earlier checkpoint"
        )
    return True


def read_torch_file(path: Path, kind: str, map_location: Any = "cpu", safe_globals: list | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors that say what the file is.

    ``kind`` names what was expected ("stemforge checkpoint"); ``safe_globals`` are extra
    globals the weights-only unpickler may build (``torch.serialization.safe_globals``).

    Raises:
        CheckpointError: missing, a directory, not a regular file (a FIFO, a device: refused
            before it is opened, as opening a FIFO blocks), empty, truncated, another kind of
            file, or a pickle of objects ``weights_only`` refuses.
    """
    problem = regular_file_problem(path, kind=f"{kind} file", missing="no such file")
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    foreign = _sniff(path)
    if foreign:
        raise CheckpointError(f"{path}: not a {kind}: {foreign}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if safe_globals:
                with torch.serialization.safe_globals(safe_globals):
                    return torch.load(path, map_location=map_location, weights_only=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign bytes
        raise CheckpointError(f"{path}: not a {kind}: {_load_failure(exc)}") from None


#: Leading bytes of files people pass by mistake, and what they are.
_MAGIC = (
    (b"\x93NUMPY", "it is a numpy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "it is an HDF5 file (a stemforge shard?)"),
    (b"RIFF", "it is a RIFF (WAV) audio file"),
    (b"ID3", "it is an MP3 audio file"),
    (b"fLaC", "it is a FLAC audio file"),
    (b"OggS", "it is an Ogg audio file"),
    (b"\x1f\x8b", "it is gzip-compressed"),
    (b"{", "it is a text (JSON?) file"),
)
#: First byte of a pickle of protocol 2 or later (torch's legacy format writes protocol 2).
_PICKLE_PROTO = 0x80


def _sniff(path: Path) -> str | None:
    """What ``path`` is when it is plainly not a torch file (None when it may be one)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return f"a zip (torch) file whose index cannot be read: truncated or damaged ({size:,} bytes)"
        if any(n.endswith("data.pkl") for n in names):
            return None
        if names and all(n.endswith(".npy") for n in names):
            return "it is a numpy .npz archive (Chainer weights? use `stemforge import-chainer`)"
        return f"it is a zip archive of {len(names)} files, not a torch file"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "it is an MP4/M4A file"
    if head[0] != _PICKLE_PROTO:
        return "its bytes are not a torch file (not a zip archive nor a pickle)"
    return None


def _load_failure(exc: Exception) -> str:
    """One line, without Python internals, for why ``torch.load`` refused a file that looked
    like a torch file."""
    text = str(exc)
    if "Weights only load failed" in text:
        for line in text.splitlines():
            if "Unsupported global" in line:
                name = line.split("GLOBAL", 1)[-1].split(" was not", 1)[0].strip()
                return f"it holds Python objects a checkpoint never holds ({name})"
        return "it is a Python pickle that is not a torch file, or holds objects a checkpoint never holds"
    if isinstance(exc, EOFError) or "central directory" in text or "PytorchStreamReader" in text or isinstance(exc, OSError):
        return "the file is truncated or damaged (torch cannot read it to the end)"
    if "legacy .tar format" in text:
        return "it is in torch's legacy tar format, which is never a stemforge checkpoint"
    return "torch cannot read it (damaged, or another format)"
