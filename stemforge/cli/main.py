"""The ``stemforge`` Typer application: one module per command group registers its commands."""

from __future__ import annotations

import importlib

import typer

from stemforge import __version__
from stemforge.console.help import CommandGroup, plain_usage

#: The commands in the order ``stemforge --help`` lists them: the pipeline's (make or get a corpus,
#: ingest it, look at and check the DataDir, grow it, train, bring in other models, separate,
#: evaluate, serve), the demo last.
COMMAND_ORDER = (
    "synth",
    "ingest",
    "derive-vocals",
    "info",
    "validate",
    "augment",
    "train",
    "import-chainer",
    "import-spleeter",
    "combine",
    "ensemble",
    "defaults",
    "separate",
    "evaluate",
    "serve",
    "demo",
)


class StemforgeGroup(CommandGroup):
    """The ``stemforge`` group: its commands listed in :data:`COMMAND_ORDER`."""

    order = COMMAND_ORDER


app = typer.Typer(
    name="stemforge",
    cls=StemforgeGroup,
    help=(
        "Turn singing-voice corpora into training data, train a U-Net, separate songs.\n\n"
        "Every command that reads or writes a DataDir defaults to ./stemforge-data "
        "(or $STEMFORGE_DATA) and says which one it used."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

#: Command modules; each has ``register(app)`` (``--help`` lists the commands in :data:`COMMAND_ORDER`).
COMMAND_MODULES = [
    "ingest",
    "datadir",
    "augment",
    "train",
    "synth",
    "chainer",
    "spleeter",
    "combine",
    "derive",
    "separate",
    "evaluate",
    "serve",
    "demo",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stemforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """stemforge command-line interface."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"stemforge.cli.{_name}").register(app)
plain_usage(app)


def main() -> None:
    # SIGTERM unwinds a command like Ctrl-C (its pools cancelled and their workers reaped, what
    # was committed kept) and exits with 143 instead of killing it on the spot; neither is lost
    # when it lands in a finalizer.
    from stemforge.core.lifeline import interrupt_on_sigterm, redeliver_lost_interrupts

    interrupt_on_sigterm()
    redeliver_lost_interrupts()
    app()
