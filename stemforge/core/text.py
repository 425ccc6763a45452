"""Plain text for terminals and logs: file names that are not UTF-8, aligned tables.

Used by the CLI and by the library's reports (``stemforge.ingest.summary``, ...), which give
their lines to the caller instead of printing them."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not valid UTF-8 written as ``\\xff``.

    Python keeps such bytes as lone surrogates (``\\udcff``), which a terminal shows as ``?``
    or which fail to print; valid text, accents included, is left as it is."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name gives
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A plain aligned text table of ``rows`` (dicts): floats with 2 decimals, numbers
    right-aligned, ``(nothing)`` without rows."""
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
    return printable(str(v))


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
