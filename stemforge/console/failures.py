"""The failures of a batch command (``ingest``, ``augment``, ``separate``, ``evaluate``), each
said once, and summarized past a few dozen.

The first :data:`SHOWN` failures are printed as they happen, one line each (``failed: ...``);
the others are only counted, by reason. At the end :meth:`Failures.summary` gives one line when
all were shown, or ``... and N more failed (reasons: file not found x N, ...)`` and where the
full list went: when more than :data:`SHOWN` failed, every failure is written, one line each, to
a file (:func:`list_path`: under ``logs/`` in the DataDir, beside the report, or in the output
folder). So 100,000 missing files give 20 lines and a summary on stderr, not 200,000 lines.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

#: Failures printed as they happen; the rest are counted and listed in a file.
SHOWN = 20
#: Reasons named in the summary line.
REASONS_SHOWN = 5
#: The folder of a DataDir that ``ingest`` and ``augment`` write their lists of failures into
#: (stemforge never reads it).
DATADIR_LOGS = "logs"


def reason_of(line: str) -> str:
    """The reason of a one-line failure, for grouping: what follows the last ``": "`` once a
    trailing parenthesis (which file of a row, a decoder's own words) is dropped, numbers
    written as N (``"/x/a.wav: file not found (vocals of l.csv line 5)"`` -> ``"file not found"``)."""
    text = re.sub(r"\s*\([^()]*\)\s*$", "", line.strip())
    reason = text.rsplit(": ", 1)[-1].strip() or text
    reason = re.sub(r"\d[\d,.]*", "N", reason)
    return reason[:80]


def list_path(folder: str | Path, command: str) -> Path:
    """``folder/<command>-<UTC time>-failed.txt``: where a command's full list of failures goes."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(folder) / f"{command}-{stamp}-failed.txt"


class Failures:
    """Collects one-line failures; prints the first :data:`SHOWN` through ``show`` as they come.

    Args:
        show: writes one line (a :class:`~stemforge.console.progress.Progress`'s ``line``, or ``err``).
        list_file: where the whole list is written when more than :data:`SHOWN` failed (a
            function giving the path, called only then: the folder may not exist before).
        what: what failed, plural (``tracks``, ``files``, ``remixes``).
    """

    def __init__(self, show: Callable[[str], None], list_file: Callable[[], Path] | None = None, what: str = "items"):
        self.show = show
        self.list_file = list_file
        self.what = what
        self.lines: list[str] = []
        self.reasons: Counter[str] = Counter()

    def add(self, line: str) -> None:
        """One failure (one line naming the file and the reason)."""
        self.lines.append(line)
        if len(self.lines) <= SHOWN:
            self.show(f"failed: {line}")
        else:
            self.reasons[reason_of(line)] += 1

    def __len__(self) -> int:
        return len(self.lines)

    def summary(self, rest: str = "") -> list[str]:
        """The closing lines: how many failed (``rest`` says what happened to the others, e.g.
        "the other tracks were stored"), and past :data:`SHOWN` the reasons of those not shown
        and the file holding the full list. Writes that file."""
        n = len(self.lines)
        if n == 0:
            return []
        tail = f"; {rest}" if rest else ""
        if n <= SHOWN:
            return [f"{n:,} {self.what} failed (named above, one line each){tail}"]
        hidden = n - SHOWN
        reasons = ", ".join(f"{r} x {c:,}" for r, c in self.reasons.most_common(REASONS_SHOWN))
        others = len(self.reasons) - REASONS_SHOWN
        if others > 0:
            reasons += f", {others} other reason(s)"
        lines = [f"... and {hidden:,} more failed (reasons: {reasons}); {n:,} {self.what} failed in all{tail}"]
        lines.append(self._write_list())
        return lines

    def _write_list(self) -> str:
        from stemforge.core.errors import StemforgeError
        from stemforge.core.files import write_text

        if self.list_file is None:
            return "(the full list was not written: no place for it)"
        path = self.list_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, "".join(f"{line}\n" for line in self.lines))
        except (OSError, StemforgeError) as exc:
            return f"the full list could not be written to {path} ({exc})"
        return f"the full list, one line each: {path}"
