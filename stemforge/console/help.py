"""How a command's ``--help`` reads on a terminal: Click's help with two rules for text one copies
from a terminal (a line never breaks at a hyphen; an ``Example:`` paragraph is one line), each
command listed by its first sentence whole (:func:`summary`), usage lines naming arguments plainly,
a group's commands in the order it gives. :func:`plain_usage` puts these on a Typer app before it
runs (the CLI calls it once, in :mod:`stemforge.cli.main`). Imports only Click and Typer."""

from __future__ import annotations

import re

import click
import typer
from typer.core import TyperCommand, TyperGroup

#: Stands in for "-" while help text is wrapped, so that textwrap never breaks a line after a
#: hyphen (``--pitch-`` / ``semitones``): U+2011, the non-breaking hyphen, which help text never holds.
_KEEP_HYPHEN = "\u2011"
#: The abbreviations that end in a full stop inside a sentence (``Jansson et al. 2017``).
_ABBREVIATIONS = ("et al.", "e.g.", "i.e.", "vs.", "cf.")


class HelpFormatter(click.HelpFormatter):
    """Click's help formatter, with two rules for text one copies from a terminal:

    * a line is never broken at a hyphen (option names such as ``--pitch-semitones``, file names,
      ``derive-vocals``): lines break only at spaces;
    * an ``Example:`` paragraph is one line, never rewrapped (a command split over two lines runs
      as two commands when pasted), however the docstring wraps it.
    """

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(_protect(prog), _protect(args), prefix)

    def write_text(self, text: str) -> None:
        super().write_text(_protect(_examples_unwrapped(text)))

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        super().write_dl([tuple(_protect(cell) for cell in row) for row in rows], col_max, col_spacing)

    def getvalue(self) -> str:
        return super().getvalue().replace(_KEEP_HYPHEN, "-")


def _protect(text: str) -> str:
    return text.replace("-", _KEEP_HYPHEN)


def _examples_unwrapped(text: str) -> str:
    """``text`` with each paragraph that starts with ``Example:`` joined into one line and marked
    for Click as not to be rewrapped (a paragraph whose first line is ``\\b``)."""
    paragraphs = text.split("\n\n")
    for i, paragraph in enumerate(paragraphs):
        if paragraph.lstrip().startswith("Example:"):
            paragraphs[i] = "\b\n" + " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
    return "\n\n".join(paragraphs)


def summary(help_text: str | None) -> str:
    """The first sentence of a command's help, whole: what ``stemforge --help`` lists for it
    (Click's default stops at the first full stop, ``Jansson et al.`` included, and cuts to the
    column's width)."""
    paragraph = " ".join((help_text or "").strip().split("\n\n")[0].split())
    for match in re.finditer(r"\.(?=\s+[A-Z(])", paragraph):
        head = paragraph[: match.end()]
        if not head.endswith(_ABBREVIATIONS):
            return head
    return paragraph


class HelpContext(typer.Context):
    """The context of every stemforge command: help through :class:`HelpFormatter`."""

    formatter_class = HelpFormatter


class PlainUsageCommand(TyperCommand):
    """A command whose usage line names its arguments plainly: ``ORIGINAL KARAOKE``, ``[DATA]``,
    ``AUDIO...`` (typer writes ``{original}`` for a required argument, ``[data]`` for another);
    its help goes through :class:`HelpFormatter`, its summary is its first sentence (:func:`summary`)."""

    context_class = HelpContext

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").strip("[]").upper()
                dots = "..." if param.nargs != 1 else ""
                pieces.append(f"{name}{dots}" if param.required else f"[{name}]{dots}")
        return pieces

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help)


class CommandGroup(TyperGroup):
    """A group (``stemforge``, ``stemforge ingest``): help through :class:`HelpFormatter`, each
    command summarized by its first sentence, and the commands listed in :attr:`order` (the
    pipeline's order) when the group's Typer app sets one (``typer.Typer(cls=...)`` with a
    subclass), else in the order they were registered."""

    context_class = HelpContext
    #: Command names in the order ``--help`` lists them; commands not named come after, as registered.
    order: tuple[str, ...] = ()

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(self.order)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help)


def plain_usage(app: typer.Typer) -> None:
    """Give every command of ``app`` (and of its sub-apps) :class:`PlainUsageCommand` usage lines
    and :class:`HelpFormatter` help, and every sub-app :class:`CommandGroup`; call before the app
    runs."""
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = PlainUsageCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            info = group.typer_instance.info
            if not (isinstance(info.cls, type) and issubclass(info.cls, CommandGroup)):
                info.cls = CommandGroup
            plain_usage(group.typer_instance)
