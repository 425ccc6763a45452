"""Peak resident memory of a process tree, sampled from /proc (Linux)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


class PeakRSS:
    """Context manager sampling the RSS of this process and its descendants every ``interval`` s.

    ``peak_total_mb``: peak of the sum over the tree; ``peak_process_mb``: peak of any single process.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        self.pid = pid or os.getpid()
        self.interval = interval
        self.peak_total_mb = 0.0
        self.peak_process_mb = 0.0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = [_rss_kb(p) for p in tree(self.pid)]
            self.peak_total_mb = max(self.peak_total_mb, sum(sizes) / 1024)
            self.peak_process_mb = max(self.peak_process_mb, max(sizes, default=0) / 1024)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
