"""Text that clients send and the history stores: printable, and harmless in a spreadsheet.

Refused at the door (a 422 that names the field and the character): control characters in a ``sensor_id``,
an operator's name or note, which a terminal or a log viewer would act on (``cam\\x00\\x1b[31m``). A file's
name is the client's own and never refuses a part: its control characters are escaped instead. On the way
out, :func:`csv_cell` neutralises cells a spreadsheet would run as a formula (OWASP's "CSV injection").
"""

from __future__ import annotations

from typing import Any

from lineguard.history.rows import escaped  # for names that must not refuse a part
from lineguard_edge.text import printable  # shared with the edge runtime

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as the start of a formula


__all__ = ["FORMULA_START", "csv_cell", "escaped", "printable"]


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows and never runs: text that starts like a formula gets a
    leading apostrophe (numbers, negative ones included, stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
