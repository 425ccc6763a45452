"""Moved to :mod:`stemforge.console.progress`; kept for the commands that still import it here."""

from stemforge.console.progress import LINE_INTERVAL_S, Progress, TrainProgress  # noqa: F401
