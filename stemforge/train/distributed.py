"""Several training processes (``torchrun``): where this one stands, the process group, the
collectives the loop needs, and Ctrl-C, on which every process must agree.

A run under ``torchrun --nproc-per-node N -m stemforge train ...`` reads ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` (:func:`distributed_env`), joins a process group (NCCL on CUDA, Gloo on the CPU:
:func:`process_group`) and wraps the model in DistributedDataParallel (:meth:`ProcessGroup.wrap`).
A single process is rank 0 of 1: every function here is then a no-op.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stemforge.core.errors import StemforgeError


@dataclass(frozen=True)
class DistributedEnv:
    """The process's place in a ``torchrun`` job (rank 0 of 1 when not launched by one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_env(environ: dict[str, str] | None = None) -> DistributedEnv:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``)."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise StemforgeError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise StemforgeError(f"bad distributed environment: RANK={rank} WORLD_SIZE={world}")
    return DistributedEnv(rank, world, local)


class ProcessGroup:
    """What :func:`process_group` yields: wraps the model for the job."""

    def __init__(self, env: DistributedEnv, device: torch.device):
        self.env = env
        self.device = device

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel when there are several processes, else itself.
        The caller must drop every reference to the wrapper before the ``process_group`` block
        ends (see :func:`process_group`)."""
        if not self.env.is_distributed:
            return model
        device = self.device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def process_group(env: DistributedEnv, device: torch.device) -> Iterator[ProcessGroup]:
    """The process group of the job for the block (joined here unless it already exists; left
    at the end if joined here). Nothing happens for a single process.

    The teardown rule: every DistributedDataParallel wrapper (:meth:`ProcessGroup.wrap`) must be
    freed while the group is still registered, so that the group's last reference is the
    registry's. Freeing the wrapper's C++ Reducer holds the GIL; if it dropped the group's last
    reference, Gloo's destructor would join a worker thread that may still need the GIL to free
    a finished all-reduce's tensors (a deadlock, seen once in six loaded test runs);
    ``destroy_process_group`` releases the GIL while it waits. So the block's owner drops its
    wrapper before the block ends, and a garbage collection here frees whatever cycle still
    holds one before the group is destroyed.
    """
    joined = False
    if env.is_distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        joined = True
    try:
        yield ProcessGroup(env, device)
    finally:
        if joined:
            gc.collect()
            dist.destroy_process_group()


def any_rank(flag: bool, env: DistributedEnv, device: torch.device) -> bool:
    """Whether ``flag`` is set on any process (a collective: every process calls it at the same
    step, so that all stop at the same step)."""
    if not env.is_distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(value: torch.Tensor, env: DistributedEnv) -> torch.Tensor:
    """``value`` (a tensor, changed in place) averaged over the processes (a collective)."""
    if env.is_distributed:
        dist.all_reduce(value)
        value /= env.world_size
    return value


class StopFlag:
    """Set by SIGINT (Ctrl-C) while training; a second Ctrl-C raises KeyboardInterrupt at once.
    Outside the main thread no handler is installed (the flag then stays unset)."""

    def __init__(self) -> None:
        self.set = False
        self._previous = None

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
