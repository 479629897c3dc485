"""Which version of each line is in service, as seen by one ingress replica.

The answer is cached for ``ttl_s`` (1 s by default): after that the line's ``CURRENT`` pointer is read
again (one small file), and a new version, from a fit or a threshold change, is picked up. Every
replica converges within ``ttl_s`` without any restart or broadcast.

A new version is checked before it serves (card valid, model file matching its checksum, safetensors):
a corrupt one is refused with an error in the log, and the version that served keeps serving (a
replica that starts after the corruption serves the newest older version that passes the check).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from lineguard.errors import CorruptModelError, NotFoundError, StoreError
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.names import check_line_name, model_id
from lineguard.registry.store import ModelStore

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class LineEntry:
    """A line's version in service."""

    card: ModelCard

    @property
    def line(self) -> str:
        return self.card.line

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def kind(self) -> LineKind:
        return self.card.kind

    @property
    def model_id(self) -> str:
        return model_id(self.card.line, self.card.version)

    @property
    def window(self) -> int:
        """Readings a sensor line's head scores each reading with (1: each alone; image lines: 1)."""
        return int(self.card.head.scorer.get("window", 1)) if self.card.head is not None else 1

    @property
    def backbone_key(self) -> str | None:
        return None if self.card.backbone is None else self.card.backbone.spec().key()


class LineDirectory:
    def __init__(self, store: ModelStore, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, LineEntry]] = {}
        self.refused: dict[str, tuple[str, str]] = {}  # line -> (version, why) of a corrupt CURRENT

    async def get(self, line: str) -> LineEntry:
        """The line's version in service: a ConfigError for a malformed name, NotFoundError for an unknown
        line, CorruptModelError when no version of it loads."""
        check_line_name(line)
        now = time.monotonic()
        cached = self._cache.get(line)
        if cached and cached[0] > now:
            return cached[1]
        entry = await asyncio.to_thread(self._refresh, line, cached[1] if cached else None)
        self._cache[line] = (now + self.ttl_s, entry)
        return entry

    def _refresh(self, line: str, previous: LineEntry | None) -> LineEntry:
        try:
            version = self.store.current_version(line)
        except NotFoundError as err:
            raise NotFoundError(f"unknown line {line!r}: GET /v1/lines lists the lines this service knows") from err
        except StoreError as err:  # an unreadable pointer
            return self._keep(line, "CURRENT", f"{err}", previous)
        if previous is not None and (previous.version == version or self.refused.get(line, ("",))[0] == version):
            return previous
        try:
            entry = self._checked(line, version)
        except StoreError as err:
            return self._keep(line, version, str(err), previous)
        self.refused.pop(line, None)
        return entry

    def _checked(self, line: str, version: str) -> LineEntry:
        card = self.store.read_card(line, version)
        self.store.verify(card)
        return LineEntry(card)

    def _keep(self, line: str, version: str, why: str, previous: LineEntry | None) -> LineEntry:
        """A corrupt version is refused: the previous one keeps serving (else the newest older good one)."""
        fallback = previous
        if fallback is None:
            newest = int(version[1:]) if version[1:].isdigit() else None
            for older in reversed(self.store.versions(line)):
                if newest is None or int(older[1:]) < newest:
                    try:
                        fallback = self._checked(line, older)
                        break
                    except StoreError:
                        continue
        serving = fallback.version if fallback else "no version"
        if self.refused.get(line) != (version, why):
            self.refused[line] = (version, why)
            log.error(
                "line %s: version %s is refused (%s); %s keeps serving. Promote a good version "
                "(`lineguard promote %s vN`) or refit the line",
                line, version, why, serving, line,
            )  # fmt: skip
        if fallback is None:
            raise CorruptModelError(f"line {line!r} has no version that loads: {version} is refused ({why})")
        return fallback

    def invalidate(self, line: str) -> None:
        self._cache.pop(line, None)

    async def all(self, visible: Callable[[str], bool] = lambda _: True) -> list[LineEntry]:
        """Every line in service that ``visible`` lets through (the caller's key may be limited to some)."""
        names = await asyncio.to_thread(self.store.lines)
        entries = []
        for name in filter(visible, names):
            try:
                entries.append(await self.get(name))
            except StoreError:  # removed between listing and reading, or no version of it loads
                continue
        return entries
