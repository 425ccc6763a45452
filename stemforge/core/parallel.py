"""An ordered, bounded parallel map over worker processes (or inline with one worker).

Results come back in input order, with at most ``2 * workers`` items in flight, so memory stays
bounded and what is written downstream does not depend on which worker finished first.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


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
    ``fn``, its arguments and results must be picklable. An exception of one item never stops
    the others; a worker that dies raises ``BrokenProcessPool`` for the items in flight.
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
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
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
