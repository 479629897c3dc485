"""Text that clients send and the history stores: printable, and harmless in a spreadsheet.

Refused at the door (a 422 that names the field and the character): control characters in a ``sensor_id``,
an operator's name or note, which a terminal or a log viewer would act on (``cam\\x00\\x1b[31m``). A file's
name is the client's own and never refuses a part: its control characters are escaped instead. On the way
out, :func:`csv_cell` neutralises cells a spreadsheet would run as a formula (OWASP's "CSV injection").
"""

from __future__ import annotations

from typing import Any

from lineguard.errors import DataError
from lineguard.history.rows import escaped  # for names that must not refuse a part

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula


def printable(value: str, what: str, max_chars: int, allow: str = "") -> str:
    """``value`` if it is at most ``max_chars`` of printable text (and the characters in ``allow``)."""
    if len(value) > max_chars:
        raise DataError(f"{what} is longer than {max_chars} characters")
    bad = next((c for c in value if not c.isprintable() and c not in allow), None)
    if bad is not None:
        raise DataError(f"{what} contains the control character U+{ord(bad):04X}: send printable text")
    return value


__all__ = ["FORMULA_START", "csv_cell", "escaped", "printable"]


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows and never runs: text that starts like a formula gets a
    leading apostrophe (numbers, negative ones included, stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
