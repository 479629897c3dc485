"""The ingress's outbox of prediction rows: filled on the request path (a deque append), emptied in the
background, in batches, to the Recorder, which acknowledges a batch only once it is committed.

A batch stays at the head of the outbox until it is acknowledged, so nothing is lost while the Recorder
restarts or the database is down: the rows wait (bounded by ``max_rows``) and the batch is sent again
with backoff. A batch that was written but whose acknowledgement was lost is sent again too; the
database skips ids it already holds. Rows refused because the outbox is full are counted, logged and
reported by ``/healthz`` and the metrics, never dropped silently. ``close()`` flushes, for a graceful
shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from lineguard.history.rows import PredictionRow, RowBatch

log = logging.getLogger("ray.serve")

Send = Callable[[RowBatch], Awaitable[Any]]


class Outbox:
    def __init__(
        self,
        send: Send,
        max_rows: int = 200_000,
        batch_rows: int = 2000,
        interval_s: float = 0.2,
        timeout_s: float = 10.0,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._send = send
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._on_drop = on_drop
        self._rows: deque[PredictionRow] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.failing = False  # the last write failed, and none has succeeded since
        self.last_error: str | None = None
        self._last_drop_log = 0.0
        self._backoff = 0.0

    def add(self, rows: list[PredictionRow]) -> None:
        """Queue rows for the Recorder; what does not fit in ``max_rows`` is counted as dropped."""
        room = self.max_rows - len(self._rows)
        if len(rows) > room:
            lost = len(rows) - max(room, 0)
            self.dropped += lost
            if self._on_drop is not None:
                self._on_drop(lost)
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.error(
                    "history outbox is full (%d rows, the Recorder or the database has been away): %d rows dropped "
                    "so far; last error: %s",
                    self.max_rows,
                    self.dropped,
                    self.last_error,
                )
            rows = rows[: max(room, 0)]
        self._rows.extend(rows)
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._rows) >= self.batch_rows:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s + self._backoff)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Send every queued row; False when a batch failed (the rows stay queued for the next try)."""
        async with self._lock:
            while self._rows:
                batch = [self._rows[i] for i in range(min(self.batch_rows, len(self._rows)))]
                try:
                    await asyncio.wait_for(self._send(RowBatch.of(batch)), self.timeout_s)
                except Exception as err:  # the Recorder or the database is away: keep the rows, back off
                    self.failing = True
                    self.failures += 1
                    self.last_error = f"{type(err).__name__}: {str(err)[:300]}"
                    self._backoff = min(5.0, max(0.2, self._backoff * 2))
                    if self.failures == 1 or self.failures % 50 == 0:
                        log.warning("history write failed (%d queued rows kept): %s", len(self._rows), self.last_error)
                    return False
                for _ in range(len(batch)):
                    self._rows.popleft()
                self.written += len(batch)
                self._backoff = 0.0
                self.failing = False
        return True

    async def close(self, timeout_s: float = 20.0) -> None:
        """Flush what is queued (trying until ``timeout_s``), then stop the background task."""
        self._closed = True
        deadline = time.monotonic() + timeout_s
        while self._rows and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(0.5)
        if self._rows:
            self.dropped += len(self._rows)
            log.error("history outbox closed with %d rows unwritten: %s", len(self._rows), self.last_error)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def queued(self) -> int:
        return len(self._rows)

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self._rows),
            "written": self.written,
            "dropped": self.dropped,
            "failed_writes": self.failures,
            "failing": self.failing,
            "last_error": self.last_error,
        }
