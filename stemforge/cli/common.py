"""What every command shares: the DataDir default, the options several commands take (declared
once, below, as ``Annotated`` aliases: ``device: Device = "auto"``), messages, exit codes, error
mapping. How ``--help`` reads is :mod:`stemforge.console.help`.

Exit codes (documented in docs/cli.md):
  0  everything asked for was done
  1  the command ran but some items failed (tracks skipped for bad input, validation problems)
  2  usage error (bad option or argument; Typer's own code)
  3  nothing could be done: a fatal StemforgeError (wrong layout, config mismatch, lock held, disk full, ...)
  130 interrupted (Ctrl-C, SIGINT)
  143 terminated (SIGTERM: 128 + 15, what a shell reports for a process SIGTERM killed)
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from stemforge.core.device import DEVICE_NAMES  # torch only when a device is resolved
from stemforge.core.errors import OptionError, StemforgeError
from stemforge.core.text import format_table, printable  # noqa: F401 (format_table: the commands' tables)

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEFAULT_DATA_DIR = "stemforge-data"
DATA_ENV = "STEMFORGE_DATA"

#: stemforge.karaoke.align.MIN_SCORE (derive-vocals, ingest pairs), written out so that --help
#: stays fast without importing numpy; tests/integration/test_cli_usage.py holds them equal.
MIN_SCORE = 0.45

DATA_HELP = f"DataDir to use (default: ${DATA_ENV} if set, else ./{DEFAULT_DATA_DIR})."


def resolve_data_dir(option: Path | None) -> tuple[Path, str]:
    """The DataDir path and where it came from: the option, the environment, or the default."""
    if option is not None:
        return option, "option"
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env), DATA_ENV
    return Path(DEFAULT_DATA_DIR), "default"


def announce_data_dir(option: Path | None) -> Path:
    """Resolve the DataDir and say on stderr which one is used and why."""
    path, origin = resolve_data_dir(option)
    why = {"option": "from the command line", DATA_ENV: f"from ${DATA_ENV}", "default": "the default"}[origin]
    err(f"DataDir: {path.resolve()} ({why})")
    return path


def check_device(device: str) -> str:
    """Usage error (exit 2) unless ``device`` is auto, cpu, cuda, cuda:N or mps."""
    index = device[len("cuda:"):] if device.startswith("cuda:") else None
    if device not in DEVICE_NAMES and not (index is not None and index.isdigit()):
        raise typer.BadParameter(f"must be auto, cpu, cuda, cuda:N or mps, got {device!r}", param_hint="--device")
    return device


def check_threads(threads: int) -> int:
    """``threads`` for torch.set_num_threads: 0 (PyTorch's default) or more, else a usage error."""
    if threads < 0:
        raise typer.BadParameter(f"must be 0 (PyTorch's default) or more, got {threads}", param_hint="--threads")
    return threads


def check_mask_power(power: Optional[float]) -> Optional[float]:
    """``--mask-power``: None (the Separator's default) or a number in (0, 16], else a usage error."""
    if power is not None and not 0 < power <= 16:
        raise typer.BadParameter(f"must be a number above 0 and at most 16, got {power:g}", param_hint="--mask-power")
    return power


def separator_options(hard_mask: bool, mask_power: Optional[float], wiener_iterations: int) -> dict:
    """The Separator's keyword arguments from separate's, evaluate's and serve's options; a
    usage error for --hard-mask with --wiener-iterations (the filter starts from the soft mask)."""
    if hard_mask and wiener_iterations:
        raise typer.BadParameter("the Wiener filter starts from the soft mask: not with --hard-mask", param_hint="--wiener-iterations")
    return {"hard_mask": hard_mask, "mask_power": mask_power, "wiener_iterations": wiener_iterations}


def _max_offset(seconds: float) -> float:
    if not seconds > 0:
        raise typer.BadParameter(f"must be > 0 seconds, got {seconds}", param_hint="--max-offset")
    return seconds


# -- the options several commands share, each declared once ----------------------------------
#: ``[DATA]``: the DataDir as an argument (info, validate, augment).
DataArgument = Annotated[Optional[Path], typer.Argument(help=DATA_HELP, show_default=False)]
#: ``--out/--data/-o``: the DataDir as an option (ingest, augment).
DataOption = Annotated[Optional[Path], typer.Option("--out", "--data", "-o", help=DATA_HELP, show_default=False)]
Workers = Annotated[int, typer.Option("--workers", "-j", min=0, help="Worker processes (0: one per core).")]
#: ``--device`` of separate and evaluate (checked when parsed: auto, cpu, cuda, cuda:N, mps).
Device = Annotated[str, typer.Option("--device", help="auto (cuda when available), cpu, cuda or cuda:N.", callback=check_device)]
Threads = Annotated[int, typer.Option("--threads", help="CPU threads for PyTorch (0: its default).", callback=check_threads)]
#: The separator options of separate, evaluate and serve (docs/separation.md, "Post-filters").
MaskPower = Annotated[Optional[float], typer.Option(
    "--mask-power", metavar="P", show_default=False, callback=check_mask_power,
    help="Exponent of the ratio mask v^P / (v^P + a^P) of a two-net model (2 is Spleeter's; default 1.5, or 1 with the Wiener filter), or of one net's mask m and 1 - m (default 1: m as it is; below 1 softer). A checkpoint's own default (stemforge defaults) comes before these.",
)]
WienerIterations = Annotated[int, typer.Option(
    "--wiener-iterations", min=0, max=10, metavar="N",
    help="EM iterations of the multichannel Wiener filter after the mask (0: off; 1: as Spleeter's --mwf; slower).",
)]
#: ``--force`` of the commands that write files named on the command line.
Overwrite = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]
#: ``--force`` of the commands that write one checkpoint, OUTPUT.
OverwriteOutput = Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")]
#: The alignment options of derive-vocals and ingest pairs.
MinScore = Annotated[float, typer.Option("--min-score", min=0.0, max=1.0, help="Refuse pairs whose fit score (0-1) is below this.")]
MaxOffset = Annotated[float, typer.Option("--max-offset", help="Search offsets up to this many seconds either way.", callback=_max_offset)]


@contextlib.contextmanager
def usage_errors(ctx: typer.Context) -> Iterator[None]:
    """An :class:`OptionError` raised inside becomes a usage error (exit 2) under the flag of the
    option of ``ctx``'s command that it names (``valid_fraction`` -> ``--valid-fraction``); the
    option names in its reason are written as their flags too."""
    try:
        yield
    except OptionError as exc:
        params = ctx.command.params
        flags = {p.name: next((o for o in p.opts if o.startswith("--")), p.opts[0]) for p in params if p.param_type_name == "option"}
        reason = re.sub(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b", lambda m: flags.get(m[0], m[0]), exc.reason)
        raise typer.BadParameter(reason, param_hint=flags.get(exc.option, exc.option)) from None


def err(message: str) -> None:
    """One line on stderr (file names that are not UTF-8 escaped: :func:`printable`)."""
    typer.echo(printable(message), err=True)


def out(message: str = "") -> None:
    """One line on stdout (file names that are not UTF-8 escaped: :func:`printable`)."""
    typer.echo(printable(message))


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn StemforgeError into a one-line message and exit code 3; Ctrl-C into 130, SIGTERM
    (:class:`~stemforge.core.lifeline.Terminated`, see :func:`stemforge.cli.main.main`) into 143."""
    try:
        yield
    except StemforgeError as exc:  # DiskFullError included: it names the DataDir and what was kept
        err(f"error: {exc}")
        raise typer.Exit(EXIT_FATAL) from None
    except OSError as exc:  # a full disk met by a writer that did not say so itself
        from stemforge.core.files import is_disk_full

        if not is_disk_full(exc):
            raise
        err(f"error: {exc.filename or 'a file'}: disk full ({exc.strerror or exc})")
        raise typer.Exit(EXIT_FATAL) from None
    except KeyboardInterrupt as exc:
        from stemforge.core.lifeline import Terminated

        if isinstance(exc, Terminated):
            err("terminated")
            raise typer.Exit(EXIT_TERMINATED) from None
        err("interrupted")
        _forget_unhandled_interrupt()
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _forget_unhandled_interrupt() -> None:
    """Let the exit code stand after a caught Ctrl-C. CPython (3.11) marks a KeyboardInterrupt that
    left an ``exec``/``eval`` of a string (``exec("from numpy import *")`` in an import under way)
    as unhandled even when it was caught, and ``python -m stemforge`` then ends by SIGINT instead
    of with exit code 130; running any code string clears that mark."""
    exec("pass")
