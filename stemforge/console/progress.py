"""Progress on stderr, one convention for every command and for scripts that call the library: a
live bar on a terminal, plain log lines otherwise.

The library reports progress through callbacks and never prints; these are the callbacks that
draw it (the CLI passes them, a script may too). On a terminal a tqdm bar is
drawn; where stderr is a file or a pipe (``nohup``, a job scheduler, ``> log.txt 2>&1``) no
``\r`` is ever written: plain lines, flushed at once, which is what a job log needs.

* :class:`TrainProgress` (``stemforge train``, ``stemforge demo``) renders
  :class:`~stemforge.train.config.TrainEvent` values: off a terminal, one line per log step
  (``--log-every``) and one per validation::

    train: step 20/100 (20%)  loss 0.00512  val 0.00498  51.3 patches/s  elapsed 0:00:25  left 0:01:40

* :class:`Progress` (``ingest``, ``augment``, ``separate``, ``evaluate``, ``synth``) counts the
  items of a batch: off a terminal, a line when it starts, one every :data:`LINE_INTERVAL_S`
  seconds while it runs and one when it ends::

    ingest mir1k: 120/1000 tracks (12%)  elapsed 0:00:30  left 0:03:40
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Callable

from stemforge.core.text import printable

#: Seconds between two plain progress lines of a batch command (off a terminal): a 10-minute
#: ingest writes about 20 lines to its log, a short one two.
LINE_INTERVAL_S = 30.0


#: Size of the bar's screen where the terminal does not say its own.
FALLBACK_COLUMNS = 100
FALLBACK_ROWS = 24
#: Seconds between two plain lines while the data are loaded (no terminal).
LOADING_EVERY_S = 10.0


def _bar(stream: IO[str], **options):
    """A tqdm bar on ``stream``. A terminal that reports no size (a pseudo-terminal nobody sized:
    0 x 0, as under some job runners and `ssh -T`) makes tqdm draw nothing at all (it takes the
    bar for one below the screen): there it is drawn at a fixed size."""
    from tqdm import tqdm

    sized = _columns(stream) > 0
    return tqdm(file=stream, dynamic_ncols=sized, ncols=None if sized else FALLBACK_COLUMNS,
                nrows=None if sized else FALLBACK_ROWS, mininterval=0.2, **options)


def _write_line(bar, stream: IO[str], text: str) -> None:
    """One line on ``stream`` that does not disturb ``bar`` (None: no bar); file names that are
    not UTF-8 escaped (:func:`~stemforge.core.text.printable`)."""
    if bar is not None:
        bar.write(printable(text), file=stream)
    else:
        stream.write(printable(text) + "\n")
    stream.flush()


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class TrainProgress:
    """Renders training events on ``stream`` (stderr by default).

    Args:
        stream: where to write.
        tty: draw a live bar (True) or write plain lines (False); None: a bar when ``stream``
            is a terminal.
        label: the word lines start with (``train``).

    Call :meth:`close` when the run is over (it ends the bar).
    """

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None, label: str = "train"):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty) if tty is not None else _isatty(self.stream)
        self.label = label
        self.bar = None
        self.loss: float | None = None
        self.val: float | None = None
        self.best: float | None = None
        self.rate: float | None = None
        self._t0: float | None = None  # wall clock at the start of the session
        self._step0 = 0
        self._loading = None  # the loading bar (terminal)
        self._loading_t0 = self._loading_said = 0.0  # when loading started, when a line last said so

    # -- output ----------------------------------------------------------------------------

    def line(self, text: str) -> None:
        """One line that does not disturb the bar."""
        _write_line(self.bar, self.stream, text)

    def _left(self, step: int, total: int) -> float | None:
        if self._t0 is None or step <= self._step0:
            return None
        per_step = (time.monotonic() - self._t0) / (step - self._step0)
        return per_step * (total - step)

    def _postfix(self) -> dict[str, str]:
        shown = {}
        if self.loss is not None:
            shown["loss"] = f"{self.loss:.5f}"
        if self.val is not None:
            shown["val"] = f"{self.val:.5f}"
        if self.rate is not None:
            shown["patches/s"] = f"{self.rate:.1f}"
        return shown

    # -- events ----------------------------------------------------------------------------

    def __call__(self, event) -> None:
        kind = event.kind
        if kind == "warning":
            self.line(f"WARNING: {event.message}")
        elif kind == "loading":
            self._load(event)
        elif kind == "note":
            self.line(f"note: {event.message}")
        elif kind == "data":
            self.line(f"data: {event.message}")
        elif kind == "start":
            self._start(event)
        elif kind == "step":
            self._step(event)
        elif kind == "validation":
            self._validation(event)
        elif kind == "schedule":
            self.line(f"{self.label}: step {event.step}/{event.total_steps}  {event.message}")
        elif kind == "checkpoint":
            if not self.tty:
                self.line(f"{self.label}: step {event.step}/{event.total_steps}  wrote {event.path}")
        elif kind == "interrupted":
            what = "terminated (SIGTERM)" if event.message == "SIGTERM" else "interrupted"
            self.line(f"{self.label}: {what} at step {event.step}: wrote {event.path}")
        # "done": the bar stays until close(), so that a resumed session (the demo's) moves it on

    def _load(self, event) -> None:
        """Reading the data before training: a bar on a terminal; in a log, a line when it
        starts, one every :data:`LOADING_EVERY_S` seconds and one when it is done."""
        now = time.monotonic()
        if event.done == 0:
            self._loading_t0 = self._loading_said = now
            self.line(f"{self.label}: loading {event.message}")
            if self.tty and event.total > 0:
                self._loading = _bar(self.stream, total=event.total, unit="track", desc="loading", leave=False)
            return
        if self._loading is not None:
            self._loading.update(event.done - self._loading.n)
        finished = event.done >= event.total
        if finished:
            if self._loading is not None:
                self._loading.close()
                self._loading = None
            self.line(f"{self.label}: loaded {event.total:,} tracks in {_clock(now - self._loading_t0)}")
        elif not self.tty and now - self._loading_said >= LOADING_EVERY_S:
            self._loading_said = now
            self.line(f"{self.label}: loading: {event.done:,}/{event.total:,} tracks "
                      f"({100 * event.done / max(1, event.total):.0f}%)  elapsed {_clock(now - self._loading_t0)}")

    def _start(self, event) -> None:
        self._t0, self._step0 = time.monotonic(), event.step
        if not self.tty:
            self.line(f"{self.label}: from step {event.step} to {event.total_steps}")
            return
        if self.bar is None:
            self.bar = _bar(self.stream, total=event.total_steps, initial=event.step, unit="step", desc=self.label,
                            miniters=1, smoothing=0.1, leave=True)
        else:  # another session of the same run (the demo resumes with more steps)
            self.bar.total = event.total_steps
            self.bar.n = event.step
            self.bar.refresh()
        if self._postfix():
            self.bar.set_postfix(self._postfix(), refresh=True)

    def _step(self, event) -> None:
        logged = event.train_loss is not None
        if logged:
            self.loss = event.train_loss
            self.rate = event.patches_per_s
        if self.tty:
            if self.bar is None:
                return
            if logged:
                self.bar.set_postfix(self._postfix(), refresh=False)
            self.bar.update(event.step - self.bar.n)
            return
        if not logged:
            return
        total = event.total_steps
        parts = [f"{self.label}: step {event.step}/{total} ({100 * event.step / max(1, total):.0f}%)"]
        parts.append(f"loss {self.loss:.5f}")
        if self.val is not None:
            parts.append(f"val {self.val:.5f}")
        if self.rate is not None:
            parts.append(f"{self.rate:.1f} patches/s")
        parts.append(f"elapsed {_clock(event.elapsed_s)}")
        parts.append(f"left {_clock(self._left(event.step, total))}")
        self.line("  ".join(parts))

    def _validation(self, event) -> None:
        self.val = event.val_loss
        sdr = event.val_sdr
        if sdr is None:
            better = self.best is None or event.val_loss < self.best
            if better:
                self.best = event.val_loss
        else:  # select "sdr": the run says which validation was best
            better = event.best
        if self.tty and self.bar is not None:
            self.bar.set_postfix(self._postfix(), refresh=True)
            return
        if sdr is None:
            what = "untrained model" if event.step == 0 else ("best so far" if better else f"best {self.best:.5f}")
            self.line(f"{self.label}: step {event.step}/{event.total_steps}  validation loss {event.val_loss:.5f} ({what})")
            return
        what = "untrained model" if event.step == 0 else ("best so far" if better else "not the best")
        scores = "  ".join(f"{stem} {v:.2f} dB" for stem, v in sdr.items())
        self.line(f"{self.label}: step {event.step}/{event.total_steps}  validation loss {event.val_loss:.5f}  "
                  f"GNSDR {scores} ({what})")

    def close(self) -> None:
        if self._loading is not None:
            self._loading.close()
            self._loading = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _amount(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


class Progress:
    """The progress of a batch command on ``stream`` (stderr by default).

    Args:
        label: the words lines start with (``ingest mir1k``, ``separate``).
        total: how many items (or seconds of audio) there are to do; None until known
            (:meth:`set_total`).
        unit: what is counted, plural (``tracks``, ``remixes``, ``s of audio``).
        tty: draw a live bar (True) or write plain lines (False); None: a bar when ``stream``
            is a terminal.
        interval_s: seconds between two plain lines (:data:`LINE_INTERVAL_S`).
        decimals: decimals of the counts (1 for seconds of audio).
        clock: the monotonic clock (a test's fake one).

    :meth:`update` / :meth:`advance_to` move it, :meth:`note` names the current item (the bar's
    postfix; appended to plain lines), :meth:`line` writes a line that does not disturb the bar
    (a failure, a warning), :meth:`close` ends it (off a terminal: the last line, with the
    total time). Also a context manager that closes.
    """

    def __init__(
        self,
        label: str,
        total: float | None = None,
        unit: str = "items",
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        interval_s: float = LINE_INTERVAL_S,
        decimals: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty) if tty is not None else _isatty(self.stream)
        self.label, self.unit, self.decimals = label, unit, decimals
        self.interval_s = float(interval_s)
        self.clock = clock
        self.total = total
        self.done: float = 0
        self.current = ""
        self.bar = None
        self._t0 = clock()
        self._last_line: float | None = None
        self._closed = False
        if total is not None:
            self._begin()

    def _begin(self) -> None:
        if not self.tty:
            self._plain()
            return
        self.bar = _bar(self.stream, total=self.total, desc=self.label, unit=f" {self.unit}", leave=True)

    def set_total(self, total: float) -> None:
        """The total, once known (starts the bar, or the plain lines)."""
        started = self.total is not None
        self.total = total
        if not started:
            self._begin()
        elif self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: float = 1) -> None:
        """``n`` more items done."""
        self.advance_to(self.done + n)

    def advance_to(self, done: float) -> None:
        """``done`` items done in all."""
        step = done - self.done
        self.done = done
        if self.bar is not None:
            if step:
                self.bar.update(round(step, self.decimals) if self.decimals else step)
            return
        if self.total is not None and (self._last_line is None or self.clock() - self._last_line >= self.interval_s):
            self._plain()

    def note(self, text: str) -> None:
        """Name the current item: the bar's postfix, or part of the next plain line."""
        self.current = text
        if self.bar is not None:
            self.bar.set_postfix_str(text[:40], refresh=False)

    def line(self, text: str) -> None:
        """One line that does not disturb the bar (file names not UTF-8 escaped)."""
        _write_line(self.bar, self.stream, text)

    def _plain(self, final: bool = False) -> None:
        now = self.clock()
        self._last_line = now
        elapsed = now - self._t0
        total = self.total if self.total is not None else self.done
        parts = [f"{self.label}: {_amount(self.done, self.decimals)}/{_amount(total, self.decimals)} {self.unit}"]
        if total:
            parts[0] += f" ({100 * min(self.done, total) / total:.0f}%)"
        if final:
            parts.append(f"done in {_clock(elapsed)}")
        else:
            if self.current:
                parts.append(self.current[:60])
            parts.append(f"elapsed {_clock(elapsed)}")
            left = elapsed / self.done * (total - self.done) if self.done > 0 and total >= self.done else None
            parts.append(f"left {_clock(left)}")
        self.line("  ".join(parts))

    def close(self) -> None:
        """End the bar; off a terminal, the last line (unless nothing was started)."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.total is not None:
            self._plain(final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _columns(stream) -> int:
    """The terminal's width in columns (0 when unknown or reported as 0)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
