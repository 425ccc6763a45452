"""Which torch device a process uses: the one resolver of training and separation.

``resolve_device(None | "auto" | "cpu" | "cuda" | "cuda:N" | "mps", local_rank)`` returns a
``torch.device``. ``auto`` (and None) picks CUDA when this torch build sees a GPU, else Apple's
MPS when available, else the CPU; a bare ``cuda`` under ``torchrun`` means the process's
``LOCAL_RANK`` GPU (modulo the GPUs visible), so one command line serves every rank.
"""

from __future__ import annotations

from stemforge.core.errors import StemforgeError

#: What ``resolve_device`` accepts (besides ``cuda:N``).
DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: "str | object | None" = None, local_rank: int = 0):
    """The ``torch.device`` for ``device``.

    Args:
        device: None or ``"auto"`` (CUDA if available, else MPS if available, else CPU),
            ``"cpu"``, ``"cuda"`` (GPU ``local_rank``), ``"cuda:N"``, ``"mps"``, or a
            ``torch.device``.
        local_rank: the process's GPU index on its machine (``LOCAL_RANK`` under torchrun).

    Raises:
        StemforgeError: a name that is not a device, or CUDA/MPS asked for and absent.
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif _mps_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise StemforgeError(f"--device {device!r}: not a device (one of {', '.join(DEVICE_NAMES)}, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StemforgeError(f"--device {device}: CUDA is not available (this torch build or machine has no GPU)")
        count = torch.cuda.device_count()
        if dev.index is None:
            dev = torch.device("cuda", local_rank % max(1, count))
        elif dev.index >= count:
            raise StemforgeError(f"--device {device}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not _mps_available():
            raise StemforgeError(f"--device {device}: MPS is not available (not an Apple GPU, or this torch build lacks it)")
    elif dev.type != "cpu":
        raise StemforgeError(f"--device {device!r}: not supported for training (one of {', '.join(DEVICE_NAMES)}, cuda:N)")
    return dev


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
