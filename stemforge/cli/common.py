"""What every command shares: the DataDir default, messages, exit codes, error mapping.

Exit codes (documented in docs/cli.md):
  0  everything asked for was done
  1  the command ran but some items failed (tracks skipped for bad input, validation problems)
  2  usage error (bad option or argument; Typer's own code)
  3  nothing could be done: a fatal StemforgeError (wrong layout, config mismatch, lock held, ...)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import typer

from stemforge.core.errors import StemforgeError

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130

DEFAULT_DATA_DIR = "stemforge-data"
DATA_ENV = "STEMFORGE_DATA"

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


def err(message: str) -> None:
    """One line on stderr."""
    typer.echo(message, err=True)


def out(message: str = "") -> None:
    typer.echo(message)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn StemforgeError into a one-line message and exit code 3; Ctrl-C into 130."""
    try:
        yield
    except StemforgeError as exc:
        err(f"error: {exc}")
        raise typer.Exit(EXIT_FATAL) from None
    except KeyboardInterrupt:
        err("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain aligned text table of ``rows`` (dicts), for summaries on the terminal."""
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(values, widths)).rstrip()
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(columns)), sep] + [line(r) for r in cells])


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def isatty() -> bool:
    return sys.stderr.isatty()
