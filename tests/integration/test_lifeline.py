"""stemforge.core.lifeline and the pool shutdown of stemforge.core.parallel: workers die with their
owner (SIGKILL included), and a map abandoned early stops its workers at once.
The commands end to end: tests/integration/test_no_orphans.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from stemforge.core import lifeline
from stemforge.core.parallel import map_ordered

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids of ``pids`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


def _nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_closing_a_map_early_stops_its_busy_workers_at_once():
    """A caller that stops after the first result (its loop raised, Ctrl-C, a refusal) closes the
    generator: the items still running (60 s each) are abandoned and the workers reaped at once;
    before, closing waited for every item in flight."""
    results = map_ordered(_nap, [0.0, 60.0, 60.0, 60.0], workers=2)
    with closing(results):
        _item, pid, exc = next(results)
        assert exc is None
        t0 = time.monotonic()
    took = time.monotonic() - t0
    assert took < 10.0, f"closing the map took {took:.1f} s"
    assert wait_gone([pid], 2.0) == [], "a pool worker outlived the closed map"


def test_an_exception_in_the_callers_loop_stops_the_workers():
    pids = []
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="refused"):
        results = map_ordered(_nap, [0.0, 60.0, 60.0], workers=2)
        with closing(results):
            for _item, pid, _exc in results:
                pids.append(pid)
                raise RuntimeError("refused")
    assert time.monotonic() - t0 < 20.0
    assert wait_gone(pids, 2.0) == []


OWNER = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import sys
    import time

    from stemforge.core import lifeline


    def worker(tasks, bind):
        if bind == "poll":  # the portable watchdog, as where there is no pidfd
            del os.pidfd_open
        if bind != "no":
            lifeline.bind()
        tasks.get()  # waits for a task for ever, as a loader worker whose owner is gone


    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        tasks = ctx.SimpleQueue()
        procs = [ctx.Process(target=worker, args=(tasks, sys.argv[2]), daemon=True) for _ in range(2)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # the workers have bound themselves
        print(" ".join(str(p.pid) for p in procs), flush=True)
        time.sleep(600)
    """
)


def _owner_with_workers(tmp_path: Path, method: str, bind: str) -> tuple[subprocess.Popen, list[int]]:
    """An owner process with two workers started by ``method`` that call ``lifeline.bind()``
    (``bind="pidfd"``), bind without a pidfd (``"poll"``) or do not bind (``"no"``)."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    proc = subprocess.Popen(
        [sys.executable, str(script), method, bind], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    line = proc.stdout.readline().decode()
    assert line.strip(), "the owner printed no worker pids"
    return proc, [int(p) for p in line.split()]


def _at_eof(pipe, timeout: float) -> bool:
    """Whether ``pipe`` reaches end of file within ``timeout`` seconds (what it carries is dropped)."""
    import select

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([pipe], [], [], left)[0] and not os.read(pipe.fileno(), 65536):
            return True
    return False


def _kill_all(proc: subprocess.Popen, pids: list[int]) -> None:
    for pid in [proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("method, bind", [("fork", "pidfd"), ("spawn", "pidfd"), ("forkserver", "pidfd"), ("fork", "poll")])
def test_a_bound_worker_dies_when_its_owner_is_killed(tmp_path, method, bind):
    """The hook a worker entry point calls (the training loader's: start method fork, parent =
    the owner; a pool's: forkserver, parent = the fork server): SIGKILL to the owner, and the
    workers, blocked on a queue whose writer they hold themselves, are gone within 2 s."""
    proc, pids = _owner_with_workers(tmp_path, method, bind)
    try:
        assert all(alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_gone(pids, 2.0) == [], f"{method} workers ({bind}) outlived their owner"
        assert _at_eof(proc.stdout, 5.0), "a process still holds the owner's stdout"
    finally:
        _kill_all(proc, pids)


def test_an_unbound_worker_outlives_its_owner(tmp_path):
    """The same owner without the hook (what the training loader does until it calls it): the
    workers stay, which is what the test above would see without lifeline.bind()."""
    proc, pids = _owner_with_workers(tmp_path, "fork", "no")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        assert wait_gone(pids, 1.0) == pids
    finally:
        _kill_all(proc, pids)


def test_a_worker_whose_owner_died_before_it_bound_exits_at_once(tmp_path):
    """The race: the owner is gone before the worker ties itself to it; bind() exits (status 1)."""
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait()
    code = f"from stemforge.core import lifeline; lifeline.bind({owner.pid}); print('still here')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "still here" not in r.stdout, (r.returncode, r.stdout, r.stderr)


def test_a_worker_is_not_bound_to_a_process_it_does_not_descend_from(tmp_path):
    """An owner that is alive but no longer an ancestor (the worker's parent died and it was
    re-parented, so the pid now names another line): bind() exits too."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = f"from stemforge.core import lifeline; lifeline.bind({stranger.pid}); print('still here')"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "still here" not in r.stdout, (r.returncode, r.stdout, r.stderr)
    finally:
        stranger.kill()
        stranger.wait()


def test_sigterm_raises_terminated_in_the_main_thread():
    code = textwrap.dedent(
        """
        import os, signal, sys, time
        from stemforge.core.lifeline import Terminated, interrupt_on_sigterm
        assert interrupt_on_sigterm()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        except Terminated as exc:
            assert isinstance(exc, KeyboardInterrupt)
            sys.exit(7)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 7, r.stderr


def test_sigterm_left_alone_when_ignored():
    code = textwrap.dedent(
        """
        import signal
        from stemforge.core.lifeline import interrupt_on_sigterm
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        assert not interrupt_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_forkserver_preload_binds_only_inside_a_fork_server():
    """Importing the preload module anywhere else binds nothing."""
    import importlib

    module = importlib.import_module(lifeline.FORKSERVER_PRELOAD)
    assert not module._in_forkserver()
    assert lifeline._bound is None or lifeline._bound[0] != os.getpid()


LOST = textwrap.dedent(
    """
    import os, signal, sys, time
    from stemforge.core import lifeline

    if sys.argv[1] == "redeliver":
        lifeline.redeliver_lost_interrupts()
    lifeline.interrupt_on_sigterm()


    class Finalized:
        def __del__(self):  # the signal's handler runs here, as in an h5py or weakref finalizer
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))
            for _ in range(100000):
                pass


    try:
        Finalized()
        time.sleep(2)  # the command's work after the finalizer
        print("went on")
    except lifeline.Terminated:
        sys.exit(8)
    except KeyboardInterrupt:
        sys.exit(7)
    """
)


@pytest.mark.parametrize("sig, code", [("SIGINT", 7), ("SIGTERM", 8)])
def test_an_interrupt_that_lands_in_a_finalizer_is_not_lost(sig, code):
    """Without the hook the KeyboardInterrupt raised in ``__del__`` is printed as "Exception
    ignored" and the program goes on; with it, the signal is delivered again in the main code."""
    lost = subprocess.run([sys.executable, "-c", LOST, "plain", sig], capture_output=True, text=True, timeout=60)
    assert lost.returncode == 0 and "went on" in lost.stdout, (lost.returncode, lost.stderr)
    kept = subprocess.run([sys.executable, "-c", LOST, "redeliver", sig], capture_output=True, text=True, timeout=60)
    assert kept.returncode == code and "went on" not in kept.stdout, (kept.returncode, kept.stderr)
    assert "Exception ignored" not in kept.stderr


def test_a_caught_ctrl_c_exits_130_even_when_it_passed_through_exec(tmp_path):
    """CPython 3.11, run as ``python -m``, ends the process by SIGINT whatever its exit code once
    a KeyboardInterrupt has left an ``exec``/``eval`` of a string (as ``exec("from numpy import
    *")`` in an import under way does), even when it was caught; the CLI clears that so that
    ``python -m stemforge`` gives 130 on Ctrl-C, as the ``stemforge`` script does."""
    (tmp_path / "ctrl_c_in_exec.py").write_text(textwrap.dedent(
        """
        import sys
        import typer
        from stemforge.cli.common import cli_errors


        def boom():
            raise KeyboardInterrupt


        try:
            with cli_errors():
                exec("boom()", {"boom": boom})
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        """
    ))
    r = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip() == "interrupted"
