"""Import the seed article's Chainer U-Net weights (``unet.model``, written by
``chainer.serializers.save_npz``) into a stemforge :class:`~stemforge.model.unet.UNet`.

The npz holds one array per parameter and persistent value, named by the Chainer link path::

    conv1/W  [16, 1, k, k]     conv1/b  [16]            (Convolution2D: W is (out, in, kh, kw))
    norm1/gamma  norm1/beta  norm1/avg_mean  norm1/avg_var  [16]   norm1/N  []   (BatchNormalization)
    ...
    deconv1/W  [512, 256, k, k]  deconv1/b  [256]       (Deconvolution2D: W is (in, out, kh, kw))
    denorm1/...  ...  deconv6/W  [32, 1, k, k]  deconv6/b  [1]

possibly under a prefix: ``unet/`` when the training wrapper chain was saved, ``predictor/`` for
a ``L.Classifier``, ``updater/model:main/...`` in a trainer snapshot. The prefix is found from
where ``conv1/W`` sits; keys outside it (optimizer state in a snapshot, say) are ignored.

Both weight layouts are PyTorch's (``Conv2d``: (out, in, kh, kw); ``ConvTranspose2d``: (in, out,
kh, kw)), so the arrays are copied unchanged: ``gamma -> weight``, ``beta -> bias``,
``avg_mean -> running_mean``, ``avg_var -> running_var``, ``N -> num_batches_tracked``. The
kernel size and the channel counts are read from the weight shapes; the channel counts must
follow the U-Net's pattern (16..512 times one width factor). With an odd kernel the transposed
convolutions get ``output_padding`` 1, which matches a Chainer ``Deconvolution2D`` given
``outsize`` = twice its input size.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from stemforge.core.config import SpectrogramConfig
from stemforge.core.errors import CheckpointError, StemforgeError
from stemforge.core.files import regular_file_problem
from stemforge.model.checkpoint import load_model_state, save_checkpoint
from stemforge.model.config import BASE_ENCODER_CHANNELS, UNetConfig
from stemforge.model.unet import UNet

_CONV_PARAMS = ("W", "b")
_BN_PARAMS = ("gamma", "beta", "avg_mean", "avg_var")
_BN_OPTIONAL = ("N",)
_BN_TO_TORCH = {
    "gamma": "weight",
    "beta": "bias",
    "avg_mean": "running_mean",
    "avg_var": "running_var",
    "N": "num_batches_tracked",
}


def chainer_link_names() -> dict[str, str]:
    """Chainer link name -> its kind (``"conv"``, ``"deconv"`` or ``"bn"``), in network order."""
    names: dict[str, str] = {}
    for i in range(1, 7):
        names[f"conv{i}"] = "conv"
        names[f"norm{i}"] = "bn"
    for i in range(1, 7):
        names[f"deconv{i}"] = "deconv"
        if i < 6:
            names[f"denorm{i}"] = "bn"
    return names


def expected_chainer_keys(optional: bool = False) -> list[str]:
    """The npz keys (without prefix) of the seed's network; with ``optional`` also ``*/N``."""
    keys = []
    for name, kind in chainer_link_names().items():
        params = _CONV_PARAMS if kind in ("conv", "deconv") else _BN_PARAMS + (_BN_OPTIONAL if optional else ())
        keys.extend(f"{name}/{p}" for p in params)
    return keys


def read_chainer_npz(path: str | os.PathLike) -> tuple[UNetConfig, dict[str, torch.Tensor]]:
    """Read a Chainer U-Net npz into a config (kernel size and width inferred) and a state_dict.

    Returns:
        ``(config, state_dict)``; ``config.target`` is the default ``"vocals"`` (the npz does not
        say; use ``dataclasses.replace``).

    Raises:
        CheckpointError: missing file, not an npz, no U-Net inside (the message lists the
            missing keys and the unexpected ones), shapes that do not form the U-Net.
    """
    path = Path(path)
    arrays = _read_npz(path)
    prefix = _find_prefix(path, arrays)
    sub = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    required = expected_chainer_keys()
    allowed = set(expected_chainer_keys(optional=True))
    missing = [k for k in required if k not in sub]
    unexpected = sorted(k for k in sub if k not in allowed)
    if missing or unexpected:
        raise CheckpointError(_key_report(path, prefix, missing, unexpected))

    config = _infer_config(path, sub)
    state: dict[str, torch.Tensor] = {}
    for key, value in sub.items():
        link, param = key.split("/")
        if chainer_link_names()[link] == "bn":
            name = f"{link}.{_BN_TO_TORCH[param]}"
            tensor = torch.tensor(int(value), dtype=torch.long) if param == "N" else _float(value)
        else:
            name = f"{link}.{'weight' if param == 'W' else 'bias'}"
            tensor = _float(value)
        state[name] = tensor
    # Older Chainer versions do not store N; PyTorch wants num_batches_tracked.
    for link, kind in chainer_link_names().items():
        if kind == "bn":
            state.setdefault(f"{link}.num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return config, state


def import_chainer_npz(path: str | os.PathLike, target: str = "vocals") -> UNet:
    """The Chainer npz at ``path`` as a :class:`UNet` in eval mode (see :func:`read_chainer_npz`).

    In eval mode its output equals the Chainer network's in test mode
    (``chainer.using_config('train', False)``) to float32 rounding: input and output are
    ``[batch, 1, 512, n_frames]``.
    """
    config, state = read_chainer_npz(path)
    try:
        config = dataclasses.replace(config, target=target)
    except StemforgeError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model = UNet(config)
    load_model_state(model, state, str(path))
    return model.eval()


def convert_chainer_npz(
    path: str | os.PathLike,
    out: str | os.PathLike,
    target: str = "vocals",
    spectrogram_config: SpectrogramConfig | None = None,
) -> Path:
    """Write the Chainer npz at ``path`` as a stemforge checkpoint at ``out`` (step 0).

    ``spectrogram_config`` defaults to :class:`SpectrogramConfig` ``()``, the seed's STFT (16 kHz,
    n_fft 1024, hop 512). ``extra`` records ``{"imported_from": <file name>, "source": "chainer"}``.
    """
    model = import_chainer_npz(path, target=target)
    return save_checkpoint(
        out,
        model,
        model.config,
        spectrogram_config or SpectrogramConfig(),
        target,
        0,
        extra={"imported_from": Path(path).name, "source": "chainer"},
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    problem = regular_file_problem(path, kind="Chainer npz file", missing="no such file")
    if problem:  # a FIFO or a device is refused before it is opened (opening a FIFO blocks)
        raise CheckpointError(f"{path}: {problem}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a Chainer npz (numpy cannot read it: {exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: not a Chainer npz: it is a single numpy array (.npy)")
    try:
        with data:
            _check_array_sizes(path, data.zip)
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{path}: not a Chainer npz (numpy cannot read it: {exc})") from exc
    except MemoryError:
        raise CheckpointError(f"{path}: not a Chainer npz: an array is larger than memory (corrupt header?)") from None


def _check_array_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse, before anything is allocated, an array whose header claims more bytes than its
    archive member holds (a corrupt or forged header would otherwise ask for terabytes)."""
    for info in archive.infolist():
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            header = f.tell()
        if dtype.hasobject:
            raise CheckpointError(f"{path}: not a Chainer npz: {info.filename} holds Python objects")
        claimed = math.prod(shape) * dtype.itemsize
        held = info.file_size - header
        if claimed > held:
            raise CheckpointError(
                f"{path}: not a valid npz: {info.filename} claims shape {tuple(shape)} ({claimed:,} bytes) "
                f"but holds {max(held, 0):,} bytes (corrupt or truncated)"
            )


def _find_prefix(path: Path, arrays: dict[str, np.ndarray]) -> str:
    anchor = "conv1/W"
    prefixes = sorted(
        k[: -len(anchor)] for k in arrays if k.endswith(anchor) and (k == anchor or k[: -len(anchor)].endswith("/"))
    )
    if not prefixes:
        raise CheckpointError(_key_report(path, "", expected_chainer_keys(), sorted(arrays)))
    if len(prefixes) > 1:
        raise CheckpointError(f"{path}: several U-Nets in one npz, under prefixes {prefixes}; cannot choose")
    return prefixes[0]


def _key_report(path: Path, prefix: str, missing: list[str], unexpected: list[str]) -> str:
    """All missing keys (at most 68) and the first 40 unexpected ones."""

    def show(keys: list[str], limit: int = 100) -> str:
        head = ", ".join(prefix + k for k in keys[:limit])
        return head + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")

    where = f" under prefix {prefix!r}" if prefix else ""
    parts = [f"{path}: not the seed's Chainer U-Net{where}"]
    if missing:
        parts.append(f"missing keys ({len(missing)}): {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected, 40)}")
    return "; ".join(parts)


def _infer_config(path: Path, sub: dict[str, np.ndarray]) -> UNetConfig:
    def shape(key: str) -> tuple[int, ...]:
        return tuple(int(n) for n in np.shape(sub[key]))

    w1 = shape("conv1/W")
    if len(w1) != 4 or w1[2] != w1[3] or w1[1] != 1:
        raise CheckpointError(f"{path}: conv1/W has shape {w1}; expected (channels, 1, k, k)")
    kernel_size = w1[2]
    top = shape("conv6/W")[0] if len(shape("conv6/W")) == 4 else 0
    width = top / BASE_ENCODER_CHANNELS[-1]
    try:
        config = UNetConfig(kernel_size=kernel_size, width=width)
    except StemforgeError as exc:
        raise CheckpointError(f"{path}: weights give an invalid U-Net: {exc}") from exc
    # Compare every array with the shape the inferred config gives.
    expected = _expected_shapes(config)
    wrong = []
    for key, want in expected.items():
        if key in sub and shape(key) != want:
            wrong.append(f"{key}: {shape(key)} (expected {want})")
    if wrong:
        raise CheckpointError(
            f"{path}: weight shapes do not form the U-Net (kernel {kernel_size}, encoder channels "
            f"{config.encoder_channels}): " + "; ".join(wrong)
        )
    return config


def _expected_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    k = config.kernel_size
    shapes: dict[str, tuple[int, ...]] = {}
    cin = 1
    for i, c in enumerate(config.encoder_channels, start=1):
        shapes[f"conv{i}/W"] = (c, cin, k, k)
        shapes[f"conv{i}/b"] = (c,)
        for p in _BN_PARAMS:
            shapes[f"norm{i}/{p}"] = (c,)
        shapes[f"norm{i}/N"] = ()
        cin = c
    for i, (ci, co) in enumerate(zip(config.decoder_in_channels, config.decoder_channels), start=1):
        shapes[f"deconv{i}/W"] = (ci, co, k, k)
        shapes[f"deconv{i}/b"] = (co,)
        if i < 6:
            for p in _BN_PARAMS:
                shapes[f"denorm{i}/{p}"] = (co,)
            shapes[f"denorm{i}/N"] = ()
    return shapes


def _float(value: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
