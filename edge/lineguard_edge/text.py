"""Text that clients send: printable, or a 422 that names the field and the character."""

from __future__ import annotations

from lineguard_edge.errors import DataError


def printable(value: str, what: str, max_chars: int, allow: str = "") -> str:
    """``value`` if it is at most ``max_chars`` of printable text (and the characters in ``allow``)."""
    if len(value) > max_chars:
        raise DataError(f"{what} is longer than {max_chars} characters")
    bad = next((c for c in value if not c.isprintable() and c not in allow), None)
    if bad is not None:
        raise DataError(f"{what} contains the control character U+{ord(bad):04X}: send printable text")
    return value
