"""The ingress's side of the prediction history: the outbox that records every answer off the request path,
and the reads it asks the Recorder for (the Recorder owns the database)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from lineguard.deployments.config import HistoryArgs
from lineguard.deployments.messages import ItemError
from lineguard.deployments.outbox import Outbox
from lineguard.errors import ConfigError, DataError, LineGuardError, NotFoundError, UnavailableError
from lineguard.history.db import MAX_PAGE, HistoryQuery
from lineguard.history.ids import id_time, is_id
from lineguard.history.rows import PredictionRow, StoredPrediction

T = TypeVar("T")
READ_AFTER_WRITE_S = 2.0
Call = Callable[[Any], Awaitable[Any]]


def _refusal(error: ItemError) -> LineGuardError:
    """What the Recorder refused (a report the line cannot give, say), as the error the API answers."""
    if error.status == 404:
        return NotFoundError(error.detail)
    if error.status == 503:
        return UnavailableError(error.detail, 2)
    return ConfigError(error.detail)


def _page(recorder: Any, query: HistoryQuery, after: str | None, limit: int) -> Awaitable[Any]:
    return recorder.page.remote(query, after, limit)  # type: ignore[no-any-return]


class HistoryClient:
    def __init__(self, recorder: Any, args: HistoryArgs, on_drop: Callable[[int], None] | None = None) -> None:
        self.recorder = recorder
        self.args = args
        self.outbox = Outbox(
            recorder.record.remote,
            max_rows=args.buffer_rows,
            batch_rows=args.batch_rows,
            interval_s=args.flush_interval_s,
            timeout_s=args.write_timeout_s,
            on_drop=on_drop,
        )

    def record(self, rows: list[PredictionRow]) -> None:
        """Queue answers for the Recorder (a deque append: the request does not wait for the database)."""
        self.outbox.add(rows)

    async def ask(self, call: Call, timeout_s: float = 30.0) -> Any:
        """Ask the Recorder; UnavailableError (503) while the database cannot answer, the Recorder's own
        refusals as the errors they are. This replica's queued answers are sent first (for up to
        ``READ_AFTER_WRITE_S``), so a history read shows the answers this replica has just given."""
        if self.outbox.stats()["queued"]:
            with contextlib.suppress(TimeoutError):  # the database is away: read what it has
                await asyncio.wait_for(self.outbox.flush(), READ_AFTER_WRITE_S)
        try:
            result = await asyncio.wait_for(call(self.recorder), timeout_s)
        except Exception as err:
            raise UnavailableError(
                f"the history database is not answering ({type(err).__name__}): retry shortly", 2
            ) from err
        if isinstance(result, ItemError):
            raise _refusal(result)
        return result

    async def pages(self, query: HistoryQuery, max_rows: int) -> AsyncIterator[list[StoredPrediction]]:
        """Pages of the rows ``query`` selects, newest first, up to ``max_rows`` in all (exports)."""
        after: str | None = None
        sent = 0
        while sent < max_rows:
            size = min(MAX_PAGE, max_rows - sent)
            rows: list[StoredPrediction] = await self.ask(partial(_page, query=query, after=after, limit=size))
            if rows:
                yield rows
            sent += len(rows)
            if len(rows) < size:
                return
            after = rows[-1].id

    async def find(self, prediction_id: str) -> StoredPrediction:
        """A recorded answer by its id: this replica's queue is flushed first, and an answer given a moment
        ago by another replica is waited for (a few seconds) before it is called unknown."""
        if not is_id(prediction_id):
            raise DataError(f"{prediction_id[:40]!r} is not a prediction id (26 characters, as answers give them)")
        await self.outbox.flush()
        for _ in range(6):
            row: StoredPrediction | None = await self.ask(lambda r: r.get.remote(prediction_id))
            if row is not None:
                return row
            if time.time() - id_time(prediction_id) > 5:  # not one still on its way from another replica
                break
            await asyncio.sleep(0.3)
        raise NotFoundError(f"no prediction with id {prediction_id!r}")

    async def health(self) -> dict[str, Any]:
        """The outbox and the database: ``ok``, or ``degraded`` (never fatal: scoring goes on)."""
        try:
            database: dict[str, Any] = await asyncio.wait_for(self.recorder.health.remote(), 6.0)
        except Exception as err:
            database = {"reachable": False, "last_error": f"Recorder: {type(err).__name__}"}
        outbox = self.outbox.stats()
        ok = (
            bool(database.get("reachable"))
            and not outbox["failing"]
            and outbox["dropped"] == 0
            and database.get("last_error") is None
        )
        return {"status": "ok" if ok else "degraded", "outbox": outbox, **database}

    async def close(self) -> None:
        await self.outbox.close()
