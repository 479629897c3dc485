"""API keys: ``lineguard keys create|list|revoke`` writes them, every ingress replica reads them
(:mod:`lineguard.deployments.api.security` checks them on every request).

They live beside the models, in ``<store>/_keys/keys.json`` (``_keys`` is never a line name): every
replica on every node already reads the store, so a key created or revoked anywhere reaches them all
within ``security.keys_refresh_s`` without a restart.

- A key reads ``lg_<id>_<secret>``: 8 hex characters of public id (it finds the record and names the key
  in lists and logs) and 32 random bytes of secret. Only the SHA-256 digest of the whole key is stored;
  the key itself is shown once, when it is created.
- SHA-256 without salt or stretching is the right hash for keys: they are 256-bit random, not passwords
  people choose, so there is nothing to guess, and a stretched hash (bcrypt, scrypt) would add
  milliseconds to every request for no gain.
- Checking a key compares digests in constant time (``hmac.compare_digest``), also when the id is
  unknown (against a dummy digest), so timing tells nothing about which ids exist.
- Scopes: ``predict`` (score, read lines and history) and ``admin`` (also change thresholds and severity
  rules, give feedback). A key may be limited to named lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from lineguard.errors import ConfigError, NotFoundError, StoreError, UnavailableError
from lineguard.registry.card import utc_now
from lineguard.registry.names import check_line_name
from lineguard.registry.store import ModelStore

log = logging.getLogger("ray.serve")

Scope = Literal["predict", "admin"]
SCOPES: tuple[Scope, ...] = ("predict", "admin")
KEYS_FILE = "_keys/keys.json"
_KEY = re.compile(r"^lg_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


class ApiKey(BaseModel):
    """One key's record (never the key itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{8}$")
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scope: Scope
    lines: list[str] | None = None  # None: every line
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


_RECORDS = TypeAdapter(list[ApiKey])


@dataclass(frozen=True)
class Principal:
    """Who a request is from: the key's id, name, scope and lines."""

    id: str
    name: str
    scope: Scope
    lines: frozenset[str] | None

    def can(self, scope: Scope) -> bool:
        return self.scope == "admin" or scope == "predict"

    def allows(self, line: str) -> bool:
        return self.lines is None or line in self.lines


@dataclass(frozen=True)
class KeyTable:
    """The active keys at one moment, ready to check presented keys against."""

    keys: dict[str, ApiKey]

    @property
    def open(self) -> bool:
        """No active key: the service runs open (local trials)."""
        return not self.keys

    def authenticate(self, presented: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown or revoked key (constant-time compare)."""
        match = _KEY.match(presented)
        record = self.keys.get(match.group(1)) if match else None
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if not hmac.compare_digest(digest, record.sha256 if record else _DUMMY) or record is None:
            return None
        lines = None if record.lines is None else frozenset(record.lines)
        return Principal(record.id, record.name, record.scope, lines)


class KeyRing:
    """The key records in a model store."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def records(self) -> list[ApiKey]:
        data = self.store.read_aux(KEYS_FILE)
        if data is None:
            return []
        try:
            return _RECORDS.validate_json(data)
        except ValueError as err:
            raise StoreError(
                f"{self.store.uri}/{KEYS_FILE} is not a valid key file ({err}): restore it or make new keys"
            ) from err

    def table(self) -> KeyTable:
        return KeyTable({r.id: r for r in self.records() if r.active})

    def create(self, name: str, scope: Scope = "predict", lines: list[str] | None = None) -> tuple[str, ApiKey]:
        """A new key: returns the key (shown once, never stored) and its record."""
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
        checked = None if not lines else sorted({check_line_name(line) for line in lines})
        records = self.records()
        taken = {r.id for r in records}
        key_id = secrets.token_hex(4)
        while key_id in taken:
            key_id = secrets.token_hex(4)
        key = f"lg_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(
            id=key_id,
            name=name,
            sha256=hashlib.sha256(key.encode()).hexdigest(),
            scope=scope,
            lines=checked,
            created_at=utc_now(),
        )
        self._save([*records, record])
        return key, record

    def revoke(self, key_id: str) -> ApiKey:
        records = self.records()
        for i, record in enumerate(records):
            if record.id == key_id:
                if record.active:
                    records[i] = record.model_copy(update={"revoked_at": utc_now()})
                    self._save(records)
                return records[i]
        raise NotFoundError(f"no key with id {key_id!r}: `lineguard keys list` shows the ids")

    def _save(self, records: list[ApiKey]) -> None:
        self.store.write_aux(KEYS_FILE, json.dumps([r.model_dump(mode="json") for r in records], indent=2).encode())


class KeyCache:
    """The active keys, re-read from the store at most every ``refresh_s`` (one read at a time)."""

    def __init__(self, ring: KeyRing, refresh_s: float) -> None:
        self.ring = ring
        self.refresh_s = refresh_s
        self._table: KeyTable | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def table(self) -> KeyTable:
        if self._table is not None and time.monotonic() < self._expires:
            return self._table
        async with self._lock:
            if self._table is not None and time.monotonic() < self._expires:
                return self._table
            try:
                self._table = await asyncio.to_thread(self.ring.table)
            except Exception as err:
                log.error("cannot read the API keys from %s: %s", self.ring.store.uri, err)
                if self._table is None:
                    raise UnavailableError(
                        "the API keys cannot be read from the model store: retry shortly", retry_after_s=2
                    ) from err
            self._expires = time.monotonic() + self.refresh_s
            return self._table
