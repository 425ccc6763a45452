"""Worker processes that die with the command that started them, and SIGTERM as an interruption.

A worker process (a pool worker, a training loader) that outlives its command is worse than
useless: it keeps memory and CPU, and it holds the command's stdout and stderr open, so a parent
reading them (a job scheduler, a notebook cell, a CI step) waits for ever. Orderly exits shut
the workers down (``map_ordered`` and the loaders close their pools), but a command killed with
SIGKILL (a scheduler's time limit, the OOM killer) runs no code at all. So each worker ties
itself to its *owner*, the process that created it, as its first act:

* :func:`bind`: the one call a worker's entry point makes. It starts a watchdog thread that
  waits on the owner (a ``pidfd`` on Linux: woken the moment the owner exits, no polling; else a
  poll every :data:`POLL_S` seconds) and kills the worker when the owner is gone. When the worker's
  parent is not the owner but a fork server between them (multiprocessing's ``forkserver``, a
  single-threaded process that lives as long as the owner), it also asks the kernel for SIGKILL
  when that parent dies (Linux ``PR_SET_PDEATHSIG``), which works even while the worker is busy
  in code that holds the GIL. It checks for the race of an owner that died before the worker
  got that far (the worker then exits at once).
* :data:`FORKSERVER_PRELOAD`: a module for ``multiprocessing.set_forkserver_preload``; the fork
  server imports it and ties itself to its parent (the command) the same way, so that its
  children get their parent-death signal when the command dies.

``PR_SET_PDEATHSIG`` is not used for a worker whose parent is the owner itself: the kernel sends
it when the *thread* that started the worker ends, and a worker started from a short-lived thread
would die with the thread. The watchdog has no such catch.

:func:`interrupt_on_sigterm` makes SIGTERM raise :class:`Terminated` (a ``KeyboardInterrupt``) in
the main thread, so that a terminated command unwinds like an interrupted one: ``finally``
blocks run, pools are cancelled and their workers reaped, committed work stays; and
:func:`redeliver_lost_interrupts` keeps a Ctrl-C or SIGTERM that lands in a finalizer from being
lost. The CLI installs both (exit codes 130 and 143); library code never does.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

#: Seconds between two looks at the owner where no pidfd is available.
POLL_S = 0.5
#: The module the fork server preloads (see :func:`bind_forkserver`).
FORKSERVER_PRELOAD = "stemforge.core.forkserver_lifeline"

_PR_SET_PDEATHSIG = 1
#: ``(this process, its owner)`` once bound (a forked child inherits it, hence the pid).
_bound: tuple[int, int] | None = None


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM (raised in the main thread by :func:`interrupt_on_sigterm`).

    A ``KeyboardInterrupt``, so that every clean-up written for Ctrl-C also runs on SIGTERM."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


def interrupt_on_sigterm() -> bool:
    """Make SIGTERM raise :class:`Terminated` in the main thread; True when installed.

    Does nothing (False) outside the main thread, or when SIGTERM is ignored or handled already
    (a caller's own choice stays)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _raise_terminated)
    return True


def redeliver_lost_interrupts() -> None:
    """Make a Ctrl-C or SIGTERM that lands in a finalizer count.

    A signal handler runs at the next bytecode of the main thread, which may be inside a
    ``__del__`` or a weakref callback (h5py and the garbage collector run them anywhere); the
    ``KeyboardInterrupt`` it raises there is printed as "Exception ignored" and lost, and the
    command goes on as if nothing happened. This hook (``sys.unraisablehook``) has a helper thread
    deliver such a signal again (``_thread.interrupt_main``) a moment later, when the finalizer
    has returned, so that its handler runs once more in the main code (should it land in a
    finalizer again, the same happens again); other unraisable exceptions go to the previous
    hook. Idempotent."""
    previous = sys.unraisablehook
    if getattr(previous, "_stemforge_redeliver", False):
        return

    def hook(unraisable) -> None:
        exc_type = unraisable.exc_type
        if exc_type is None or not issubclass(exc_type, KeyboardInterrupt):
            previous(unraisable)
            return
        signum = signal.SIGTERM if issubclass(exc_type, Terminated) else signal.SIGINT
        try:
            threading.Thread(target=_redeliver, args=(signum,), name="stemforge-redeliver", daemon=True).start()
        except RuntimeError:  # the interpreter is shutting down: the command is ending anyway
            pass

    hook._stemforge_redeliver = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _redeliver(signum: int) -> None:
    import _thread

    time.sleep(0.01)  # let the main thread leave the finalizer first
    _thread.interrupt_main(signum)


def bind(owner: int | None = None) -> None:
    """Tie this worker process to ``owner``: it is killed (SIGKILL) soon after ``owner`` exits,
    however ``owner`` ends. Call it first thing in the worker's entry point.

    ``owner`` defaults to the process that created this one (``multiprocessing.parent_process()``:
    the command, also for a worker forked by a fork server), else the parent process. If the
    owner is gone already, the worker exits here (status 1). Calling it again is a no-op.
    """
    global _bound
    if owner is None:
        owner = _creator_pid()
    if _bound == (os.getpid(), owner):
        return
    pidfd = _open_pidfd(owner)
    if os.getppid() != owner:
        _set_parent_death_signal(signal.SIGKILL)  # the fork server: single-threaded, lives as long as the owner
    if not _owner_alive(owner, pidfd) or not _descends_from(owner):
        os._exit(1)  # the owner died before we could tie ourselves to it
    _bound = (os.getpid(), owner)
    threading.Thread(target=_watch, args=(owner, pidfd), name="stemforge-lifeline", daemon=True).start()


def bind_forkserver() -> None:
    """Tie a multiprocessing fork server to the command that started it (its parent).

    Called by :data:`FORKSERVER_PRELOAD` when the fork server imports it; a watchdog thread only
    (the fork server forks from its main thread, so this thread is never in a child), no
    parent-death signal (the command may have started the fork server from a thread that ends
    before it). The fork server would stop by itself once the command and all its workers are
    gone; this makes it stop with the command, so its children get their parent-death signal
    even when busy."""
    owner = os.getppid()
    if owner == 1:
        return  # the command is gone already: the fork server sees its "alive" pipe close and stops
    bind(owner)


def _creator_pid() -> int:
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None and parent.pid else os.getppid()


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux >= 5.3), None where there is none; exits when ``pid`` is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except ProcessLookupError:
        os._exit(1)
    except OSError:  # ENOSYS on an old kernel, EPERM in some sandboxes
        return None


def _set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` on Linux; False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _state(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` of ``pid`` from /proc, None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _owner_alive(owner: int, pidfd: int | None) -> bool:
    if pidfd is not None:
        return not _exited(pidfd, 0)
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = _state(owner)
    return state is None or state[0] not in "ZX"


def _exited(pidfd: int, timeout_ms: int | None) -> bool:
    """Whether the process of ``pidfd`` has exited (a pidfd polls readable then), waiting up to
    ``timeout_ms`` (None: until it has)."""
    import select

    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


def _descends_from(owner: int) -> bool:
    """Whether ``owner`` is this process's parent or grandparent (through a fork server). False
    when the chain was broken: an ancestor died before this process was tied to it."""
    parent = os.getppid()
    if parent == owner:
        return True
    state = _state(parent)
    if state is None:  # no /proc: the watchdog's first look decides
        return True
    return state[1] == owner


def _watch(owner: int, pidfd: int | None) -> None:
    """Block until ``owner`` exits, then kill this process."""
    if pidfd is not None:
        while not _exited(pidfd, None):
            pass
    else:
        direct = os.getppid() == owner
        while _owner_alive(owner, None) and (not direct or os.getppid() == owner):
            time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)
