"""What a training run is: one function, :func:`resolve_run`, decides it and checks it.

A run is new (a model sized to the DataDir's geometry), resumed (``out_dir/last.pt``: its
configurations, and exactly where it stopped) or a fine-tune (``init``: a checkpoint's net);
the demo's run is a new run. Every rule about what may be combined, every check
of a configuration against the data or a checkpoint, and every default taken from a checkpoint
or the geometry lives here, before anything is written: the CLI, :func:`~stemforge.train.loop.train`
and the demo all call :func:`resolve_run`, and the loop runs the :class:`RunSpec` it returns.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.config import patch_frames as geometry_patch_frames
from stemforge.core.device import resolve_device
from stemforge.core.errors import CheckpointError, ConfigMismatchError, StemforgeError
from stemforge.core.files import regular_file_problem
from stemforge.model.checkpoint import Checkpoint, load_checkpoint
from stemforge.model.config import PRESETS, UNetConfig, geometry_unet_config
from stemforge.store import DataDir
from stemforge.train.config import RESUME_FIXED, TrainConfig, check_epochs
from stemforge.train.distributed import DistributedEnv, distributed_env, launch_command
from stemforge.train.rundir import LAST_NAME, RunDir
from stemforge.train.sampling import PatchSampler

#: SpectrogramConfig fields a model's input depends on (normalization aside: see :func:`plain_input`).
GEOMETRY_FIELDS = ("sample_rate", "n_fft", "hop_length", "window", "center", "pad_mode", "channels")


class RequestError(StemforgeError):
    """Options that cannot go together, or one that names nothing (the CLI's usage error).

    Attributes:
        option: the command-line option at fault (``--init``, ``--variant``, ``--epochs``).
    """

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class RunSpec:
    """A training run, resolved and checked (what :func:`resolve_run` returns).

    Attributes:
        datadir: the DataDir (``train`` rows trained on, ``valid`` rows validate).
        out_dir: the run folder (:class:`~stemforge.train.rundir.RunDir`).
        train_config, unet_config: what is trained, and how (``unet_config.patch_frames`` is
            ``train_config.patch_frames``; its ``target`` the target).
        input_config: the magnitudes the model takes: the DataDir's configuration, or the same
            with normalization ``"none"`` (:func:`plain_input`) for a net trained on plain
            ``|STFT|``; what the checkpoints record.
        env, device: where it runs (this process's place in a torchrun job; its device).
        manifest_hash: the DataDir's manifest, recorded so that a resume checks its data.
        resumed: ``last.pt`` when resuming (the weights, optimizer and schedule to restore).
        init_state: the weights a fine-tune starts from (CPU tensors), None otherwise.
        init_info: what the checkpoints record under ``init`` (path, target, step, hashes).
        warnings: lines for the user before training starts.
        last_stamp: ``(inode, size, mtime_ns)`` of the last.pt resumed from, as it was read: the
            loop checks, once it holds the folder's lock, that no other run replaced it since.
    """

    datadir: DataDir
    out_dir: Path
    train_config: TrainConfig
    unet_config: UNetConfig
    input_config: SpectrogramConfig
    env: DistributedEnv
    device: torch.device
    manifest_hash: str
    resumed: Checkpoint | None = None
    init_state: dict[str, torch.Tensor] | None = None
    init_info: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    last_stamp: tuple[int, int, int] | None = None

    @property
    def start_step(self) -> int:
        """The step this session starts at (0, or the resumed run's)."""
        return self.resumed.step if self.resumed is not None else 0

    def summary_lines(self, init: str | os.PathLike | None = None) -> list[str]:
        """What the run is, said before it starts: its folder (a new run, or resuming at which
        step), the checkpoint ``init`` it fine-tunes from (as the user named it), the model
        (variant, size, what it sees, parameters) and the steps, batch, learning rate, precision
        and seed."""
        from stemforge.model.unet import UNet, count_parameters

        cfg, unet = self.train_config, self.unet_config
        what = f"resuming at step {self.start_step}" if self.resumed is not None else "new run"
        lines = [f"run: {self.out_dir.resolve()} ({what})"]
        if init is not None:
            lines.append(f"init: the {unet.target} net of {init}")
        lines.append(
            f"model: U-Net {unet.variant} width {unet.width:g}, kernel {unet.kernel_size}, target {unet.target}, "
            f"{unet.channels} channel(s) x bins {unet.first_bin}..{unet.first_bin + unet.n_bins - 1} x {unet.patch_frames} frames, "
            f"{count_parameters(UNet(unet)):,} parameters; "
            f"{cfg.steps} steps of {cfg.batch_size} crops x {self.env.world_size} process(es), lr {cfg.lr:g}, {cfg.precision}, "
            f"seed {cfg.seed}"
        )
        return lines

    @property
    def plain(self) -> bool:
        """Whether the model takes plain magnitudes (each track's stored ones times its norm)."""
        return self.input_config != self.datadir.config


def check_request(*, resume: bool = False, init: str | os.PathLike | None = None, variant: str | None = None,
                  epochs: float | None = None, steps_given: bool = False) -> None:
    """The rules on what a run may be asked for, before any file is read (:class:`RequestError`
    naming the option): ``init`` and ``resume`` exclude each other; ``variant`` is a preset and
    comes from the checkpoint with either; ``init`` is a file; ``epochs`` is a positive number
    and excludes ``steps``."""
    if epochs is not None:
        if steps_given:
            raise RequestError("give --steps or --epochs, not both", "--epochs")
        try:
            check_epochs(epochs)
        except StemforgeError as exc:
            raise RequestError(str(exc), "--epochs") from None
    if init is not None and resume:
        raise RequestError("--init starts a new run; --resume continues the run's last.pt: give one", "--init")
    if variant is not None:
        if variant not in PRESETS:
            raise RequestError(f"choose one of {', '.join(PRESETS)}, not {variant!r}", "--variant")
        if init is not None or resume:
            raise RequestError(f"the architecture comes from the checkpoint with {'--init' if init is not None else '--resume'}",
                               "--variant")
    problem = None if init is None else regular_file_problem(init, kind="checkpoint file", missing="no such file")
    if problem:
        raise RequestError(f"{init}: {problem}", "--init")


def resolve_run(
    datadir: DataDir,
    out_dir: str | os.PathLike,
    train_config: TrainConfig | None = None,
    unet_config: UNetConfig | None = None,
    *,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    target: str | None = None,
    variant: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    unet_overrides: Mapping[str, Any] | None = None,
    epochs: float | None = None,
    device: str | torch.device | None = None,
    any_world_size: bool = False,
) -> RunSpec:
    """The run of ``datadir`` into ``out_dir``, resolved and checked; nothing is written.

    The configurations start from ``train_config``/``unet_config`` when given, else from
    ``out_dir/last.pt`` (``resume``), from the checkpoint ``init`` (its net's UNetConfig; a
    TrainConfig with the geometry's crop and ``freeze_bn``) or, for a new run, from the
    geometry's ``variant`` preset (:func:`~stemforge.model.config.geometry_unet_config`; a
    TrainConfig with its crop). Then ``overrides``/``unet_overrides`` (fields; the options a
    user gave) apply, ``epochs`` sets the steps (:func:`steps_for_epochs`), ``target`` the
    target, and the model records the run's ``patch_frames``.

    Checked: the request (:func:`check_request`); with ``init``, the checkpoint's geometry and
    architecture (:func:`init_from_checkpoint`); that the model fits the DataDir
    (:func:`check_model_fits`); that no other run holds ``out_dir``'s lock; with ``resume``,
    that the configuration and the data are the run's (:data:`~stemforge.train.config.RESUME_FIXED`;
    ``steps`` may grow, not under ``cosine``) and so is the number of processes (unless
    ``any_world_size``: the batches of the remaining steps then change); without it, that
    ``out_dir`` holds no run.

    Raises:
        RequestError: options that cannot go together (a StemforgeError).
        RunLockedError: another run is training in ``out_dir``.
        StemforgeError: no UNetConfig for a new run, a model that does not fit, an existing run,
            a resume by another number of processes (the message gives the command that resumes it).
        ConfigMismatchError: another geometry or architecture (init), another configuration or
            other data (resume).
        CheckpointError: last.pt or the init checkpoint missing or unreadable.
    """
    overrides, unet_overrides = dict(overrides or {}), dict(unet_overrides or {})
    check_request(resume=resume, init=init, variant=variant, epochs=epochs, steps_given="steps" in overrides)
    rundir, env = RunDir(out_dir), distributed_env()
    rundir.check_unlocked()
    last_stamp = _stamp(rundir.last) if resume else None
    resumed = _last_checkpoint(rundir) if resume else None
    source = load_checkpoint(init) if init is not None else None
    init_target = target or unet_overrides.get("target") or (unet_config.target if unet_config is not None else None)
    if resumed is not None:
        cfg = train_config or stored_train_config(resumed)
        unet = unet_config or resumed.unet_config
    elif source is not None:
        cfg = train_config or TrainConfig(patch_frames=geometry_patch_frames(datadir.config), freeze_bn=True)
        unet = unet_config or _init_net(source, init_target)[0]
    elif unet_config is None and variant is None:
        raise StemforgeError("train: give a UNetConfig, or a checkpoint to start from (init)")
    else:
        unet = unet_config or geometry_unet_config(datadir.config, variant)
        cfg = train_config or TrainConfig(patch_frames=unet.patch_frames)
    cfg = dataclasses.replace(cfg, **overrides)
    unet = dataclasses.replace(unet, **unet_overrides)
    if epochs is not None:
        steps = steps_for_epochs(datadir, epochs, cfg.batch_size, cfg.patch_frames, env.world_size, cfg.min_vocal_db)
        cfg = dataclasses.replace(cfg, steps=steps)

    init_state, init_info, warnings = None, None, ()
    if source is not None:
        unet, init_state, init_info, warnings = init_from_checkpoint(source, datadir.config, unet, init_target)
    elif target is not None and target != unet.target:
        unet = dataclasses.replace(unet, target=target)
    if unet.patch_frames != cfg.patch_frames:  # the model records the patches it was trained on
        unet = dataclasses.replace(unet, patch_frames=cfg.patch_frames)
    check_model_fits(unet, datadir.config)
    # The magnitudes the model takes: the DataDir's, or plain |STFT| (stored values times the
    # track's norm) for a model trained on normalization "none" (Spleeter's, fine-tuned).
    input_config = datadir.config
    if init_info is not None and init_info.get("normalization") == "none":
        none = dataclasses.replace(datadir.config, normalization="none")
        if plain_input(datadir.config, none):
            input_config = none
    dev = resolve_device(device, env.local_rank)
    manifest_hash = datadir.manifest_hash
    if resumed is not None:
        if plain_input(datadir.config, resumed.spectrogram_config):
            input_config = resumed.spectrogram_config
        _check_resume(resumed, cfg, unet, manifest_hash, input_config)
        if not any_world_size:
            check_world_size(resumed, env, datadir.path, rundir.path)
        init_info = (resumed.extra or {}).get("init")
    elif rundir.holds_run():
        raise existing_run(rundir)
    return RunSpec(datadir, rundir.path, cfg, unet, input_config, env, dev, manifest_hash, resumed, init_state,
                   init_info, tuple(warnings), last_stamp)


def existing_run(rundir: RunDir) -> StemforgeError:
    """The error for a new run into a folder that holds one."""
    return StemforgeError(f"{rundir.path} already holds a run ({LAST_NAME}); continue it with --resume or choose another --out")


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def check_unchanged(spec: RunSpec) -> None:
    """What :func:`resolve_run` saw of the run folder still holds (checked by the loop once it
    holds the folder's lock, so that a run started meanwhile is not overwritten): a new run's
    folder holds no run; a resumed run's last.pt is the one read."""
    rundir = RunDir(spec.out_dir)
    if spec.resumed is None:
        if rundir.holds_run():
            raise existing_run(rundir)
    elif _stamp(rundir.last) != spec.last_stamp:
        raise StemforgeError(f"{rundir.last}: written by another run since it was read; resume again to continue from it")


def check_world_size(ckpt: Checkpoint, env: DistributedEnv, data: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """StemforgeError unless this job has as many processes as the run of ``ckpt`` (its last.pt)
    had: another number changes the effective batch, the crops of every remaining step and the
    epoch count. The message gives the command that resumes the run as it ran."""
    extra = ckpt.extra or {}
    stored = int(extra.get("world_size") or 1)
    if stored == env.world_size:
        return
    command = f"{launch_command(stored, extra.get('local_world_size'))} {data} --out {out_dir} --resume"
    raise StemforgeError(
        f"{ckpt.path}: this run was trained by {stored} process(es), this is {env.world_size}: resuming so would change "
        f"the batches of every remaining step. Resume it as it ran: {command} (or pass --any-world-size to go on with "
        f"{env.world_size})"
    )


def steps_for_epochs(datadir: DataDir, epochs: float, batch_size: int, patch_frames: int = 128, world_size: int = 1,
                     min_vocal_db: float | None = None) -> int:
    """Steps for ``epochs`` passes over the train split, one pass = as many crops (of all ranks
    together) as the split holds non-overlapping crops."""
    check_epochs(epochs)
    sampler = PatchSampler.from_datadir(datadir, patch_frames=patch_frames, min_vocal_db=min_vocal_db)
    return max(1, math.ceil(epochs * sampler.crops_per_epoch / (batch_size * world_size)))


# --------------------------------------------------------------------------------------------
# A resumed run
# --------------------------------------------------------------------------------------------


def _last_checkpoint(rundir: RunDir) -> Checkpoint:
    if not rundir.last.exists():
        raise CheckpointError(f"{rundir.last}: no checkpoint to resume from (train without --resume first)")
    return load_checkpoint(rundir.last)


def resume_configs(out_dir: str | os.PathLike) -> tuple[TrainConfig, UNetConfig, int]:
    """``(TrainConfig, UNetConfig, step)`` stored in ``out_dir/last.pt``: the configuration a
    resumed run defaults to.

    Raises:
        CheckpointError: no last.pt there, or it holds no TrainConfig.
    """
    ckpt = _last_checkpoint(RunDir(out_dir))
    return stored_train_config(ckpt), ckpt.unet_config, ckpt.step


def stored_train_config(ckpt: Checkpoint) -> TrainConfig:
    """The TrainConfig a run checkpoint records; CheckpointError when absent or unreadable."""
    stored = (ckpt.extra or {}).get("train_config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{ckpt.path}: holds no training configuration (not written by `stemforge train`?)")
    try:
        return TrainConfig.from_dict(stored)
    except (StemforgeError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: stored training configuration cannot be read: {exc}") from None


def _check_resume(ckpt: Checkpoint, cfg: TrainConfig, unet_config: UNetConfig, manifest_hash: str,
                  input_config: SpectrogramConfig) -> None:
    path = ckpt.path
    if ckpt.unet_config != unet_config:
        raise ConfigMismatchError(f"{path} (U-Net)", unet_config.describe(), ckpt.unet_config.describe())
    ckpt.check_spectrogram_config(input_config)
    stored_cfg = stored_train_config(ckpt)
    differ = {k: (getattr(cfg, k), getattr(stored_cfg, k)) for k in RESUME_FIXED if getattr(cfg, k) != getattr(stored_cfg, k)}
    if differ:
        expected = ", ".join(f"{k}={v[0]}" for k, v in differ.items())
        found = ", ".join(f"{k}={v[1]}" for k, v in differ.items())
        raise ConfigMismatchError(f"{path} (training configuration)", expected, found)
    if ckpt.manifest_hash and ckpt.manifest_hash != manifest_hash:
        raise ConfigMismatchError(
            f"{path} (training data: the DataDir's manifest changed since this run started)",
            f"manifest {manifest_hash}", f"manifest {ckpt.manifest_hash}",
        )
    if cfg.steps < ckpt.step:
        raise StemforgeError(f"{path} is at step {ckpt.step}; --steps {cfg.steps} is behind it")
    if cfg.lr_schedule == "cosine" and cfg.steps != stored_cfg.steps:
        raise ConfigMismatchError(
            f"{path} (the cosine schedule spans the run's steps: they cannot change on resume)",
            f"steps={cfg.steps}", f"steps={stored_cfg.steps}",
        )


# --------------------------------------------------------------------------------------------
# The model against the data, and a fine-tune's start
# --------------------------------------------------------------------------------------------


def check_model_fits(unet_config: UNetConfig, config: SpectrogramConfig) -> None:
    """StemforgeError unless a model of ``unet_config`` can train on a DataDir of ``config``:
    the same channels, and bins ``first_bin .. first_bin + n_bins - 1`` among the stored ones."""
    if unet_config.channels != config.channels:
        raise StemforgeError(
            f"the U-Net takes {unet_config.channels} channel(s); the DataDir stores {config.channels} ({config.geometry()})"
        )
    a, n = unet_config.first_bin, unet_config.n_bins
    if a + n > config.n_bins:
        raise StemforgeError(
            f"the U-Net sees {n} bins ({a}..{a + n - 1}: --model-bins {n}); the DataDir stores {config.n_bins} "
            f"(0..{config.n_bins - 1}), so at most {(config.n_bins - a) // 64 * 64} bins fit"
        )


def plain_input(config: SpectrogramConfig, model_config: SpectrogramConfig) -> bool:
    """Whether a model of spectrogram config ``model_config`` trains on a DataDir of ``config``
    through plain magnitudes: the model's normalization is ``"none"``, the DataDir's
    ``"max_mixture"``, and nothing else differs (the stored ``norm`` undoes the division)."""
    return (model_config.normalization == "none" and config.normalization == "max_mixture"
            and dataclasses.replace(config, normalization="none").hash == model_config.hash)


def _init_net(ckpt: Checkpoint, target: str | None) -> tuple[UNetConfig, Any]:
    """The UNetConfig (``target`` set) and the net a fine-tune of ``ckpt`` starts from: its one
    net, or the ``target`` net of a two-net checkpoint; CheckpointError for an ensemble."""
    if ckpt.members > 1:
        raise CheckpointError(
            f"{ckpt.path}: an ensemble of {ckpt.members} nets (stemforge ensemble) cannot be fine-tuned: "
            "start from one of its members' own checkpoints"
        )
    if target is None:
        if len(ckpt.targets) > 1:
            raise StemforgeError(f"{ckpt.path} holds {' and '.join(ckpt.targets)} nets: choose one with --target")
        target = ckpt.targets[0]
    net = ckpt.net(target)
    return dataclasses.replace(net.config, target=target), net


def init_from_checkpoint(ckpt: Checkpoint | str | os.PathLike, config: SpectrogramConfig,
                         unet_config: UNetConfig | None = None, target: str | None = None):
    """The start of a fine-tuning run: the net of ``target`` in checkpoint ``ckpt`` (a path or a
    loaded :class:`~stemforge.model.checkpoint.Checkpoint`), checked against the DataDir geometry
    ``config``.

    Refused, with a :class:`ConfigMismatchError` naming both values: another geometry (sample
    rate, n_fft, hop, window, channels: :data:`GEOMETRY_FIELDS`), or, when ``unet_config`` is
    given, another architecture (every :attr:`UNetConfig.architecture` field: variant, kernel,
    width, bins, channels, BatchNorm constants, dropout). ``patch_frames`` may differ (the net is
    fully convolutional). A checkpoint trained on plain ``|STFT|`` (normalization ``"none"``:
    Spleeter's) fine-tuned on a max-normalized DataDir is fed plain magnitudes, each track's
    stored magnitudes times its stored ``norm`` (:func:`plain_input`; Spleeter's BatchNorm
    constants and biases do not survive a 300-fold change of scale); the run then records
    normalization ``"none"``. Any other normalization mismatch is allowed with a warning (the
    DataDir's scale is trained on and recorded).

    Returns:
        ``(unet_config, model_state, info, warnings)``: the UNetConfig to train (the
        checkpoint's, ``target`` set), its state_dict (CPU tensors), what train.json and the
        run's checkpoints record under ``init`` (path, target, step, hashes) and warning lines.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    stored, net = _init_net(ckpt, target if target is not None else (unet_config.target if unet_config else None))
    src = ckpt.spectrogram_config
    differ = [f for f in GEOMETRY_FIELDS if getattr(src, f) != getattr(config, f)]
    if differ:
        raise ConfigMismatchError(
            f"--init {ckpt.path} (geometry: the DataDir's against the checkpoint's)",
            ", ".join(f"{f}={getattr(config, f)}" for f in differ),
            ", ".join(f"{f}={getattr(src, f)}" for f in differ),
        )
    if unet_config is not None:
        given, have = unet_config.architecture, stored.architecture
        bad = [k for k in given if given[k] != have[k]]
        if bad:
            raise ConfigMismatchError(
                f"--init {ckpt.path} (architecture: the asked-for U-Net against the checkpoint's)",
                ", ".join(f"{k}={given[k]}" for k in bad), ", ".join(f"{k}={have[k]}" for k in bad),
            )
        stored = dataclasses.replace(stored, patch_frames=unet_config.patch_frames)
    warnings = []
    if src.normalization != config.normalization and not plain_input(config, src):
        warnings.append(
            f"--init {ckpt.path} was trained on normalization {src.normalization!r} magnitudes; this DataDir holds "
            f"{config.normalization!r} ones: fine-tuning adapts the net to the DataDir's scale, and the new checkpoint "
            f"records the DataDir's configuration (what the Separator then feeds it)"
        )
    info = {
        "path": str(Path(ckpt.path).resolve()), "target": stored.target, "step": ckpt.steps.get(stored.target, ckpt.step),
        "unet_config_hash": net.config.hash, "spectrogram_config_hash": src.hash, "normalization": src.normalization,
    }
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return stored, state, info, warnings
