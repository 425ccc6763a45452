"""Patches per second of a training session, as the step loop measures it.

Two figures: the rate of each log interval (shown while training) and the rate of the whole
session (:attr:`~stemforge.train.loop.TrainResult.patches_per_s`). Both leave out the time spent
in validation, checkpoints and plots (:meth:`Throughput.paused`); the session figure also leaves
out the first steps (:data:`WARMUP_STEPS` at most, a tenth of a short run: cudnn autotuning,
torch.compile, allocator warm-up). The device is synchronized only where a figure needs it (at
the start of timing, around pauses, at the end), never at an ordinary step.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

#: Steps at the start of a session left out of the session's throughput (at most).
WARMUP_STEPS = 10


class Throughput:
    """The clock of one session of the step loop.

    Args:
        start_step: the step the session starts at (0, or the resumed step).
        total_steps: the step it runs up to.
        patches_per_step: crops of one step, all processes together (batch x world size).
        synchronize: waits for the device's queued work (a no-op on the CPU).
        clock: seconds (``time.perf_counter``).
    """

    def __init__(self, start_step: int, total_steps: int, patches_per_step: int,
                 synchronize: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter):
        self.patches_per_step = int(patches_per_step)
        self.start_step = start_step
        self.timed_from = start_step + min(WARMUP_STEPS, max(1, (total_steps - start_step) // 10))
        self._sync = synchronize
        self._clock = clock
        self._start: float | None = None  # after the warm-up steps
        self._end: float | None = None
        self._paused = 0.0  # pauses after the start: left out of the session figure
        self._paused_all = 0.0  # every pause of the session (for a session too short for the above)
        self._interval_t = self._t0 = clock()
        self._interval_steps = 0

    def stepped(self, step: int) -> None:
        """Step ``step`` (1-based: steps done so far) is done."""
        self._interval_steps += 1
        if step == self.timed_from:
            self._sync()
            self._start = self._clock()

    def interval_rate(self) -> float:
        """Patches/s since the previous call (or the session's start), pauses left out."""
        now = self._clock()
        rate = self._interval_steps * self.patches_per_step / max(1e-9, now - self._interval_t)
        self._interval_t, self._interval_steps = now, 0
        return rate

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count as training (the steps before it do: synchronized)."""
        self._sync()
        t = self._clock()
        try:
            yield
        finally:
            pause = self._clock() - t
            self._interval_t += pause
            self._paused_all += pause
            if self._start is not None:
                self._paused += pause

    def stop(self) -> None:
        """The step loop is over (synchronized); later work does not count."""
        self._sync()
        self._end = self._clock()

    def session_rate(self, step: int) -> float | None:
        """Patches/s from the end of the warm-up to :meth:`stop`, at ``step`` steps. A session
        that stopped within its warm-up (interrupted early) is timed from its start, warm-up
        included; None before :meth:`stop` or when no step was taken."""
        if self._end is None:
            return None
        if self._start is not None and step > self.timed_from:
            seconds, steps = self._end - self._start - self._paused, step - self.timed_from
        else:
            seconds, steps = self._end - self._t0 - self._paused_all, step - self.start_step
        return steps * self.patches_per_step / seconds if steps > 0 and seconds > 0 else None


#: A U-Net this wide or wider is a GPU-sized model: trained on a CPU, the run says so after its
#: first steps (with what they cost) and what a CPU-sized run is (:data:`CPU_SIZED`).
GPU_SIZED_WIDTH = 0.5
#: The options of a CPU-sized run (the model `stemforge demo` trains on the CPU).
CPU_SIZED = "--width 0.25 --batch-size 16 --steps 2000"


def gpu_sized_on_cpu(device_type: str, width: float) -> bool:
    """Whether a U-Net of ``width`` on a device of ``device_type`` ("cpu", "cuda") is a GPU-sized
    run on a CPU."""
    return device_type == "cpu" and width >= GPU_SIZED_WIDTH


def cpu_note(width: float, batch_size: int, steps_left: int, seconds_per_step: float) -> str:
    """What a GPU-sized run costs on this CPU (from the seconds of one step) and what a CPU-sized
    run is: one line for the ``note`` event."""
    return (
        f"U-Net width {width:g} at batch {batch_size} is a GPU-sized run: at this CPU's pace so far "
        f"({seconds_per_step:.1f} s a step) its {steps_left:,} steps left take about "
        f"{_duration(seconds_per_step * steps_left)}; a CPU-sized run is {CPU_SIZED} (the model "
        "`stemforge demo` trains), or train on a GPU"
    )


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
