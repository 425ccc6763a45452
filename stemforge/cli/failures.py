"""Moved to :mod:`stemforge.console.failures`; kept for the commands that still import it here."""

from stemforge.console.failures import DATADIR_LOGS, SHOWN, Failures, list_path, reason_of  # noqa: F401
