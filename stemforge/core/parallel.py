"""An ordered, bounded parallel map over worker processes (or inline with one worker).

Results come back in input order, with at most ``2 * workers`` items in flight, so memory stays
bounded and what is written downstream does not depend on which worker finished first.

No worker outlives the map (docs/reliability.md, "No process outlives its command"): each
worker ties itself to the process that runs the map (:func:`stemforge.core.lifeline.bind`),
so it dies soon after that process, however it ends (SIGKILL included); and every way out of
the map other than its normal end (an exception in the caller's loop, Ctrl-C, SIGTERM, closing
the generator) cancels the items not started and stops and reaps the workers before it returns.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import pickle
import signal
from typing import Any, Callable, Iterable, Iterator, TypeVar

from stemforge.core import lifeline

T = TypeVar("T")

#: Seconds a worker has to exit after SIGTERM when the map is abandoned, before SIGKILL.
STOP_TIMEOUT_S = 5.0


def map_ordered(
    fn: Callable[..., Any],
    items: Iterable[T],
    args: tuple = (),
    workers: int = 1,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[tuple[T, Any, BaseException | None]]:
    """Yield ``(item, fn(item, *args), None)`` or ``(item, None, exception)`` in input order.

    ``workers`` <= 1 runs inline (``initializer`` is then called once in this process).
    Worker processes start with the ``forkserver`` method (no inherited locks or handles);
    ``fn``, its arguments and results must be picklable (``initializer`` and ``initargs`` by
    plain pickle: tensors among them travel by value, not as shared memory). An exception of one item never stops
    the others; a worker that dies raises ``BrokenProcessPool`` for the items in flight.

    A caller that may stop before the end (its loop can raise) should close the generator
    (``with contextlib.closing(map_ordered(...)) as results:``) so that the workers are stopped
    at once, not when the generator is garbage-collected. Workers ignore SIGINT (Ctrl-C reaches
    the whole process group; this process decides what it means).
    """
    items = list(items)
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            try:
                yield item, fn(item, *args), None
            except Exception as exc:  # reported per item; the batch goes on
                yield item, None, exc
        return
    ctx = multiprocessing.get_context("forkserver")
    # Takes effect when this process starts its fork server (the first pool); the fork server
    # then dies with this process too (lifeline.bind_forkserver).
    ctx.set_forkserver_preload(["__main__", lifeline.FORKSERVER_PRELOAD])
    # The initializer and its arguments go to each worker as plain pickle bytes: sent as they are,
    # multiprocessing's pickler turns every torch tensor into a shared-memory file descriptor, and a
    # new worker can be handed only about 250 (a two-net separator's 158 tensors failed every
    # `evaluate --workers 2` with "too many fds").
    pool = cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_start_worker, initargs=(pickle.dumps((initializer, initargs)),)
    )
    finished = False
    try:
        window = 2 * workers
        futures: dict[int, cf.Future] = {}
        nxt = 0
        for i, item in enumerate(items):
            while len(futures) < window and nxt < len(items):
                futures[nxt] = pool.submit(fn, items[nxt], *args)
                nxt += 1
            fut = futures.pop(i)
            try:
                yield item, fut.result(), None
            except cf.process.BrokenProcessPool:
                raise
            except Exception as exc:
                yield item, None, exc
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            stop_pool(pool)


def _start_worker(packed: bytes) -> None:
    """The first thing each pool worker runs: die with the owner, leave Ctrl-C to it, then the
    caller's ``initializer`` (``packed``: the pickled ``(initializer, initargs)``)."""
    lifeline.bind()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer, initargs = pickle.loads(packed)
    if initializer is not None:
        initializer(*initargs)


def stop_pool(pool: cf.ProcessPoolExecutor, timeout: float = STOP_TIMEOUT_S) -> None:
    """Abandon ``pool`` now: cancel the items not started, stop the workers (SIGTERM, SIGKILL
    after ``timeout`` s) whatever they are doing, and reap them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    if not hasattr(pool, "_processes") and hasattr(pool, "terminate_workers"):  # should the private name go
        pool.terminate_workers()
    for proc in processes:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
    pool.shutdown(wait=True)
