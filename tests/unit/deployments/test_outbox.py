"""The ingress's history outbox on its own: batches, retries without loss, counted overflow, and the
flush of a graceful shutdown. The sender is a real SQLite database through the same idempotent insert
the Recorder uses, made to fail while it is 'down'."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.deployments.outbox import Outbox
from lineguard.history.db import HistoryDB, HistoryQuery
from lineguard.history.rows import RowBatch
from tests.support import rows_for


class FlakyDB:
    def __init__(self, path: Path) -> None:
        self.db = HistoryDB(f"sqlite:///{path}")
        self.db.migrate()
        self.down = False
        self.calls = 0

    async def send(self, rows: RowBatch) -> int:
        self.calls += 1
        if self.down:
            raise ConnectionError("database is down")
        return (await asyncio.to_thread(self.db.record, rows)).rows  # as the Recorder writes


def test_rows_wait_out_an_outage_and_a_shutdown_flushes(tmp_path: Path) -> None:
    sink = FlakyDB(tmp_path / "h.db")

    async def run() -> dict[str, Any]:
        outbox = Outbox(sink.send, batch_rows=50, interval_s=0.02, timeout_s=5)
        outbox.add(rows_for("a", np.zeros(120)))
        await asyncio.sleep(0.2)
        sink.down = True
        outbox.add(rows_for("a", np.zeros(80)))
        await asyncio.sleep(0.3)
        assert outbox.queued == 80 and outbox.failures > 0 and outbox.stats()["failing"]
        sink.down = False
        outbox.add(rows_for("a", np.zeros(30)))  # queued right before shutdown
        await outbox.close(timeout_s=10)
        return outbox.stats()

    stats = asyncio.run(run())
    assert not stats["failing"]
    assert stats["written"] == 230 and stats["dropped"] == 0 and stats["queued"] == 0
    assert sink.db.count(HistoryQuery(line="a")) == 230


def test_overflow_is_counted_never_silent(tmp_path: Path) -> None:
    sink = FlakyDB(tmp_path / "h.db")
    sink.down = True
    dropped: list[int] = []

    async def run() -> dict[str, Any]:
        outbox = Outbox(sink.send, max_rows=100, batch_rows=50, interval_s=0.02, on_drop=dropped.append)
        outbox.add(rows_for("a", np.zeros(70)))
        outbox.add(rows_for("a", np.zeros(70)))
        await outbox.close(timeout_s=0.5)
        return outbox.stats()

    stats = asyncio.run(run())
    assert dropped == [40] and stats["dropped"] == 140  # 40 refused, then 100 unwritten at shutdown
    assert "database is down" in stats["last_error"]


def test_a_row_the_database_refuses_does_not_hold_up_the_rows_behind_it(tmp_path: Path) -> None:
    sink = FlakyDB(tmp_path / "h.db")
    rows = rows_for("a", np.zeros(120))
    rows[10].score = None  # type: ignore[assignment]  # the NULL score of an overflowed reading, once

    async def run() -> dict[str, Any]:
        outbox = Outbox(sink.send, batch_rows=50, interval_s=0.02, timeout_s=5)
        outbox.add(rows)
        await asyncio.sleep(0.3)
        outbox.add(rows_for("b", np.zeros(30)))
        await outbox.close(timeout_s=5)
        return outbox.stats()

    stats = asyncio.run(run())
    assert stats["queued"] == 0 and stats["failed_writes"] == 0 and not stats["failing"]
    assert sink.db.count(HistoryQuery(line="a")) == 119 and sink.db.count(HistoryQuery(line="b")) == 30
    assert [r["id"] for r in sink.db.rejected()] == [rows[10].id]
