"""Prediction ids: 26 characters of Crockford base32, ULID style (48 bits of milliseconds, then 80 random
bits), so ids sort by time as strings. The service's history and the edge runtime's make them alike."""

from __future__ import annotations

import secrets
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float | None = None) -> str:
    value = (int((time.time() if now is None else now) * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
