"""Several training processes (``torchrun``): where this one stands, the process group, the
collectives the loop needs, and Ctrl-C (or SIGTERM), on which every process must agree.

A run under ``torchrun --nproc-per-node N -m stemforge train ...`` reads ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` (:func:`distributed_env`), joins a process group (NCCL on CUDA, Gloo on the CPU:
:func:`process_group`) and wraps the model in DistributedDataParallel (:meth:`ProcessGroup.wrap`).
A single process is rank 0 of 1: every function here is then a no-op.

A collective waits at most the group's timeout (``--dist-timeout``) for the other processes;
when one is frozen or gone, :meth:`ProcessGroup.peer_lost` turns the collective's failure into a
:class:`~stemforge.core.errors.PeerLostError` naming the lost rank where it can be known (each
process's host and pid are exchanged when the group is joined).
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stemforge.core.errors import PeerLostError, StemforgeError

#: Seconds a collective waits for the other processes by default (``--dist-timeout``).
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistributedEnv:
    """The process's place in a ``torchrun`` job (rank 0 of 1 when not launched by one).

    ``local_world_size``: processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; the world
    size when not set: one machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 0

    def __post_init__(self) -> None:
        if self.local_world_size <= 0:
            object.__setattr__(self, "local_world_size", self.world_size)

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
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as exc:
        raise StemforgeError(f"bad RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE in the environment: {exc}") from None
    if world < 1 or not 0 <= rank < world:
        raise StemforgeError(f"bad distributed environment: RANK={rank} WORLD_SIZE={world}")
    return DistributedEnv(rank, world, local, min(max(1, local_world), world))


def launch_command(world_size: int, local_world_size: int | None = None) -> str:
    """How a run of ``world_size`` processes (``local_world_size`` per machine) is started:
    ``stemforge train`` for one process, ``torchrun --nproc-per-node N -m stemforge train`` on
    one machine, the torchrun line to give on each machine for several."""
    local = world_size if not local_world_size or local_world_size <= 0 else min(local_world_size, world_size)
    if world_size <= 1:
        return "stemforge train"
    if local >= world_size:
        return f"torchrun --nproc-per-node {world_size} -m stemforge train"
    nodes = -(-world_size // local)
    return (f"torchrun --nnodes {nodes} --node-rank K --nproc-per-node {local} --master-addr HOST --master-port PORT "
            f"-m stemforge train")


class ProcessGroup:
    """What :func:`process_group` yields: wraps the model for the job, and says which process
    was lost when a collective fails.

    Attributes:
        env, device: the job and this process's device.
        timeout_s: how long a collective waits for the others.
        peers: ``(host, pid, start time)`` of each rank, exchanged when the group was joined
            (empty for a single process, or a group joined elsewhere).
    """

    def __init__(self, env: DistributedEnv, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S,
                 peers: list | None = None):
        self.env = env
        self.device = device
        self.timeout_s = timeout_s
        self.peers = list(peers or [])

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel when there are several processes, else itself.
        The caller must drop every reference to the wrapper before the ``process_group`` block
        ends (see :func:`process_group`)."""
        if not self.env.is_distributed:
            return model
        device = self.device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


    def peer_lost(self, exc: BaseException, step: int) -> PeerLostError | None:
        """The :class:`PeerLostError` for ``exc`` when it is a collective that timed out or lost
        its connection to another process (None otherwise: not a distributed failure), naming
        the lost rank where it can be known: a process of this machine that is stopped or gone,
        or the other process of a two-process job."""
        if not self.env.is_distributed or not _is_collective_failure(exc):
            return None
        text = str(exc)
        timed_out = "timed out" in text.lower() or "timeout" in text.lower()
        who = _lost_ranks(self.env, self.peers)
        # a connection closes while its process is still being torn down: give it a moment
        for _ in range(20 if not timed_out else 0):
            if " gone)" in who or " stopped)" in who:
                break
            time.sleep(0.1)
            who = _lost_ranks(self.env, self.peers)
        if timed_out:
            what = f"no answer from {who or 'another process'} within {self.timeout_s:g} s (--dist-timeout)"
        else:
            reason = next((r for r in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
                           if r.lower() in text.lower()), "its connection failed")
            what = f"lost {who or 'another process'} ({reason})"
        return PeerLostError(
            f"rank {self.env.rank} at step {step}: {what}; stopping (the run folder's last.pt is where --resume "
            f"continues)"
        )


def _is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a collective (or the rendezvous) that failed: torch's
    distributed errors, Gloo's and NCCL's runtime errors (Gloo's timeout inside DDP's buffer
    broadcast says only "Application timeout caused pair closure")."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(mark in text for mark in ("gloo", "Gloo", "NCCL", "c10d", "Connection closed by peer",
                                         "Connection reset by peer", "Timed out waiting",
                                         "caused pair closure"))


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of ``/proc/PID/stat``), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_state(pid: int, start: str | None) -> str | None:
    """``"stopped"`` or ``"gone"`` for a lost process of this machine, None when it seems to run
    (or cannot be looked at)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return "gone"
    except OSError:
        return None
    if start is not None and fields[19] != start:
        return "gone"  # the pid was reused
    return {"T": "stopped", "t": "stopped", "Z": "gone", "X": "gone"}.get(fields[0])


def _lost_ranks(env: DistributedEnv, peers: list) -> str:
    """The lost ranks as words (``rank 1 (pid 4242, stopped)``), or "" when they cannot be known."""
    if len(peers) != env.world_size:
        return ""
    here = socket.gethostname()
    named = []
    for rank, (host, pid, start) in enumerate(peers):
        if rank != env.rank and host == here:
            state = _process_state(pid, start)
            if state is not None:
                named.append(f"rank {rank} (pid {pid}, {state})")
    if named:
        return ", ".join(named)
    if env.world_size == 2:
        rank = 1 - env.rank
        host, pid, _ = peers[rank]
        return f"rank {rank} (pid {pid} on {host})"
    return ""


@contextlib.contextmanager
def process_group(env: DistributedEnv, device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[ProcessGroup]:
    """The process group of the job for the block (joined here unless it already exists; left
    at the end if joined here). Nothing happens for a single process. Every collective (and the
    rendezvous) waits at most ``timeout_s`` seconds for the others; the processes' hosts and
    pids are exchanged (:attr:`ProcessGroup.peers`).

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
    peers: list = []
    if env.is_distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
        joined = True
    try:
        if joined:
            peers = [None] * env.world_size
            dist.all_gather_object(peers, (socket.gethostname(), os.getpid(), _process_start(os.getpid())))
        yield ProcessGroup(env, device, timeout_s, peers)
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


#: The signals that stop training between steps: Ctrl-C, and a scheduler's (or ``kill``'s) SIGTERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Set by SIGINT (Ctrl-C) or SIGTERM while training; a second signal raises KeyboardInterrupt
    at once. ``signal`` names the first (``"SIGINT"``, ``"SIGTERM"``). Outside the main thread no
    handler is installed (the flag then stays unset); the handlers found are put back on exit."""

    def __init__(self) -> None:
        self.set = False
        self.signal: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
