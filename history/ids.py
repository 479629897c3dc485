"""Prediction ids, cursors and time windows: the small formats of the history API.

An id is 26 characters of Crockford base32, ULID style: 48 bits of milliseconds, then 80 random bits.
Ids sort by time as strings, so the newest-first page is an index scan and a cursor is just the last id
seen. Ids are made where the answer is given (the ingress) and returned with it, so an operator can send
feedback before the row reaches the database, and a retried write is recognised (same id: written once).
"""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

from lineguard.errors import ConfigError
from lineguard_edge.ids import ALPHABET, new_id

__all__ = [
    "ALPHABET",
    "MAX_WINDOW_S",
    "decode_cursor",
    "encode_cursor",
    "id_time",
    "is_id",
    "new_id",
    "new_ids",
    "parse_window",
]

_ID = re.compile(f"^[{ALPHABET}]{{26}}$")
_WINDOW = re.compile(r"^(\d{1,6})(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW_S = 400 * 86400


_CHARS = np.array(list(ALPHABET))
_SHIFTS = np.arange(45, -1, -5, dtype=np.uint64)


def new_ids(n: int, now: float | None = None) -> list[str]:
    """``n`` ids of one moment, in increasing order (a batch keeps its order in the history): one random
    16-character prefix (time + 30 random bits), then a random 50-bit counter for the last 10 characters."""
    if n <= 1:
        return [new_id(now)] * n
    first = new_id(now)
    start = _decode(first[16:])
    start = min(start, (1 << 50) - n)  # room for n consecutive values
    values = np.arange(start, start + n, dtype=np.uint64)
    digits = (values[:, None] >> _SHIFTS[None, :]) & np.uint64(31)
    tails = _CHARS[digits.astype(np.int64)].view("<U10").ravel()
    prefix = first[:16]
    return [prefix + t for t in tails.tolist()]


def _decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + ALPHABET.index(char)
    return value


def is_id(text: str) -> bool:
    return bool(_ID.match(text))


def id_time(prediction_id: str) -> float:
    """The epoch seconds encoded in an id."""
    return _decode(prediction_id[:10]) / 1000  # 10 chars = 50 bits: two zero bits, then the 48 bits of milliseconds


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The id a cursor continues after; a ConfigError naming the problem for anything else."""
    if len(cursor) > 64:
        raise ConfigError("cursor is too long: pass the next_cursor of the previous page unchanged")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise ConfigError("cursor is not one this service issued: pass the previous page's next_cursor") from err
    version, _, last = text.partition(":")
    if version != "v1" or not is_id(last):
        raise ConfigError("cursor is not one this service issued: pass the previous page's next_cursor")
    return last


def parse_window(text: str) -> float:
    """``15m``, ``24h``, ``7d``, ``2w`` or plain seconds -> seconds (at most 400 days)."""
    value = text.strip()
    match = _WINDOW.match(value)
    if match:
        seconds = float(int(match.group(1)) * _UNITS[match.group(2)])
    else:
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
    if not 0 < seconds <= MAX_WINDOW_S:  # also refuses NaN
        raise ConfigError(f"window {text!r} is not a duration like 15m, 24h, 7d or 2w (at most 400d)")
    return seconds
