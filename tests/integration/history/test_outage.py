"""The database stopped and started again under load: a real PostgreSQL server, the real Recorder
deployment on Ray Serve, and the ingress's outbox sending to it. Nothing may be lost or written twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lineguard.deployments.app import as_deployment
from lineguard.deployments.config import HistoryArgs
from lineguard.deployments.outbox import Outbox
from lineguard.history.db import HistoryDB, HistoryQuery
from tests.postgres import PostgresServer
from tests.support import fresh_pg_database, rows_for


@pytest.fixture
def recorder(serve_url: str, postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[Any, str, Any]]:
    """The Recorder on PostgreSQL, its handle, and the event loop the handle is used on. The loop is left
    open: the handle's router lives on it, and Serve's shutdown at the end of the session stops it there."""
    from ray import serve

    from lineguard.deployments.recorder import Recorder

    url = fresh_pg_database(postgres.url, "outage")
    history = HistoryArgs(url=url, drift_check_interval_s=3600).model_dump()
    handle = serve.run(
        as_deployment(Recorder).bind(history, str(tmp_path / "store")), name="history-pg", route_prefix=None
    )
    loop = asyncio.new_event_loop()
    yield handle, url, loop
    serve.delete("history-pg")


def test_a_database_outage_mid_load_loses_nothing(recorder: tuple[Any, str, Any], postgres: PostgresServer) -> None:
    handle, url, loop = recorder

    async def load() -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        outbox = Outbox(handle.record.remote, batch_rows=100, interval_s=0.05, timeout_s=15)
        sent: list[str] = []
        for step in range(60):
            rows = rows_for("outage", np.random.default_rng(step).normal(0.5, 0.1, 25))
            outbox.add(rows)
            sent += [r.id for r in rows]
            if step == 15:
                await asyncio.to_thread(postgres.stop)
            if step == 40:
                assert outbox.queued > 0  # the rows of the outage are waiting
                await asyncio.to_thread(postgres.start)
            await asyncio.sleep(0.1)
        await outbox.close(timeout_s=90)
        return sent, outbox.stats(), await handle.health.remote()

    started = time.monotonic()
    sent, stats, health = loop.run_until_complete(load())
    assert stats["dropped"] == 0 and stats["queued"] == 0, stats
    assert stats["failed_writes"] > 0, "the outage was not seen: the test proves nothing"
    assert health["reachable"] and health["last_error"] is None, health  # cleared once writes succeed again
    db = HistoryDB(url)
    try:
        assert db.count(HistoryQuery(line="outage")) == len(sent) == 1500
        stored = set(db.arrays(HistoryQuery(line="outage"), ("id",), 10_000)["id"].tolist())
        assert stored == set(sent)
    finally:
        db.close()
    assert time.monotonic() - started < 120
