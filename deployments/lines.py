"""Which version of each line is in service, as seen by one ingress replica.

The answer is cached for ``ttl_s`` (1 s by default): after that the line's ``CURRENT`` pointer is read
again (one small file), and a new version, from a fit or a threshold change, is picked up. Every
replica converges within ``ttl_s`` without any restart or broadcast.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from deployments.errors import APIError, unknown_line
from training.card import ModelCard, check_line_name
from training.store import LineNotFoundError, ModelStore


@dataclass(frozen=True)
class LineEntry:
    card: ModelCard

    @property
    def line(self) -> str:
        return self.card.line

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def model_id(self) -> str:
        return f"{self.card.line}@{self.card.version}"

    @property
    def backbone_key(self) -> str | None:
        b = self.card.backbone
        return None if b is None else f"{b.name}|{','.join(b.layers)}|{b.image_size}"


class LineDirectory:
    def __init__(self, store: ModelStore, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, LineEntry]] = {}

    async def get(self, line: str) -> LineEntry:
        """The line's version in service; 422 for a malformed name, 404 for an unknown line."""
        try:
            check_line_name(line)
        except ValueError as err:
            raise APIError(422, str(err)) from err
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
            if previous is not None and previous.version == version:
                return previous
            return LineEntry(self.store.read_card(line, version))
        except LineNotFoundError as err:
            raise unknown_line(line) from err

    def invalidate(self, line: str) -> None:
        self._cache.pop(line, None)

    async def all(self) -> list[LineEntry]:
        names = await asyncio.to_thread(self.store.lines)
        entries = []
        for name in names:
            try:
                entries.append(await self.get(name))
            except APIError:  # removed between listing and reading
                continue
        return entries
