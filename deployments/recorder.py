"""Recorder deployment: the one writer of the prediction history, and the reader behind the history,
stats, histogram, drift and suggestion routes.

The ingress's outbox (``lineguard.deployments.outbox``) sends rows in batches; ``record`` returns once they are
committed, and raises while the database is away, so the rows stay queued in the ingress and nothing is
lost while this replica restarts or the database does. The schema is migrated (Alembic) on the first
call that reaches the database, so the service starts even when the database is not up yet.

A background task checks the lines that received predictions for drift every
``history.drift_check_interval_s``, sets the drift gauges, and POSTs to ``history.webhook_url`` when a
line enters drift. SQLite allows one writer: run one replica of this deployment with a sqlite:/// URL;
with PostgreSQL it scales like the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from typing import Any

from ray import serve

from lineguard.deployments.config import HistoryArgs, resolve_history_url
from lineguard.deployments.messages import ItemError
from lineguard.deployments.telemetry import DRIFT_LEVEL, RecorderMetrics
from lineguard.errors import ConfigError, LineGuardError, NotFoundError
from lineguard.history.db import HistoryDB, HistoryQuery, Written, display_url
from lineguard.history.reports import (
    LineFacts,
    line_drift,
    line_stats,
    score_histogram,
    threshold_rates,
    threshold_suggestion,
)
from lineguard.history.rows import RowBatch, StoredPrediction, VerdictEntry
from lineguard.models.drift import DriftRules
from lineguard.registry.store import ModelStore

log = logging.getLogger("ray.serve")
MAX_LINEAGE = 1000


@serve.deployment
class Recorder:
    def __init__(self, history: dict[str, Any], store: str) -> None:
        self.args = HistoryArgs(**history)
        if self.args.url is None:
            raise ConfigError("history.url is unset: build the Recorder from AppArgs, which resolves it")
        self.db = HistoryDB(resolve_history_url(self.args.url))
        self.store = ModelStore(store)
        self.rules = DriftRules(
            psi_warning=self.args.psi_warning,
            psi_drift=self.args.psi_drift,
            ks_alpha=self.args.ks_alpha,
            min_recent=self.args.drift_min_recent,
        )
        self.metrics = RecorderMetrics()
        self._lineage: dict[tuple[str, str], tuple[LineFacts, tuple[str, ...]]] = {}
        self._drift: dict[str, dict[str, Any]] = {}
        self._active: set[str] = set()  # lines written since the last drift check
        self._monitor: asyncio.Task[None] | None = None
        self.webhook_failures = 0
        self.last_error: str | None = None

    # --- database access (threads: SQLAlchemy is blocking) --------------------------------------
    def _ready(self) -> HistoryDB:
        self.db.migrate()  # once: concurrent first calls wait for the first migration, then find the schema
        return self.db

    async def _run(self, fn: Any, *args: Any, write: bool = False) -> Any:
        """``fn`` on a thread (SQLAlchemy blocks). A failure is kept as the last error (``/healthz`` shows the
        history degraded) until a write succeeds again."""
        try:
            result = await asyncio.to_thread(fn, *args)
        except LineGuardError:  # a refusal (a report the line cannot give): the database is fine
            raise
        except Exception as err:
            self.last_error = f"{type(err).__name__}: {str(err)[:300]}"
            raise
        if write:
            self.last_error = None
        return result

    def _facts(self, line: str, version: str) -> tuple[LineFacts, tuple[str, ...]]:
        """The line's facts at ``version`` and the versions whose scores compare with it (its parents)."""
        key = (line, version)
        if key not in self._lineage:
            card = self.store.read_card(line, version)
            chain, parent = [version], card.parent
            while parent is not None and len(chain) < MAX_LINEAGE:
                chain.append(parent)
                try:
                    parent = self.store.read_card(line, parent).parent
                except (LineGuardError, OSError):
                    break
            self._lineage[key] = (LineFacts.of(card), tuple(chain))
        return self._lineage[key]

    # --- writes ----------------------------------------------------------------------------------
    async def record(self, rows: RowBatch) -> int:
        """Commit rows; rows the database refuses are set aside (``rejected_rows``), never blocking the rest;
        raises while the database is away (the ingress keeps the rows and tries again)."""
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch())
        done: Written = await self._run(lambda: self._ready().record(rows), write=True)
        self.metrics.written.inc(done.rows)
        if done.rejected:
            self.metrics.rejected.inc(done.rejected)
            log.error("history: %d row(s) refused by the database, set aside in rejected_rows", done.rejected)
        self._active.update(rows.lines)
        return done.rows

    async def feedback(self, prediction_id: str, verdict: VerdictEntry) -> StoredPrediction | None:
        def apply() -> StoredPrediction | None:
            db = self._ready()
            return db.get(prediction_id) if db.set_feedback(prediction_id, verdict) else None

        result: StoredPrediction | None = await self._run(apply, write=True)
        return result

    # --- reads -----------------------------------------------------------------------------------
    async def verdicts(self, prediction_id: str) -> list[VerdictEntry]:
        result: list[VerdictEntry] = await self._run(lambda: self._ready().verdicts(prediction_id))
        return result

    async def get(self, prediction_id: str) -> StoredPrediction | None:
        result: StoredPrediction | None = await self._run(lambda: self._ready().get(prediction_id))
        return result

    async def page(self, query: HistoryQuery, after: str | None, limit: int) -> list[StoredPrediction]:
        rows: list[StoredPrediction] = await self._run(lambda: self._ready().page(query, after, limit))
        return rows

    async def stats(self, line: str, version: str, since: float) -> dict[str, Any]:
        facts, _ = await asyncio.to_thread(self._facts, line, version)
        result: dict[str, Any] = await self._run(lambda: line_stats(self._ready(), facts, since, self.args.max_rows))
        return result

    async def histogram(self, line: str, version: str, since: float) -> dict[str, Any]:
        facts, versions = await asyncio.to_thread(self._facts, line, version)
        result: dict[str, Any] = await self._run(
            lambda: score_histogram(self._ready(), facts, versions, since, self.args.max_rows)
        )
        return result

    async def drift(self, line: str, version: str) -> dict[str, Any]:
        facts, versions = await asyncio.to_thread(self._facts, line, version)
        result: dict[str, Any] = await self._run(
            lambda: line_drift(self._ready(), facts, versions, self.args.drift_window, self.rules)
        )
        return result

    async def _threshold_report(self, report: Any, line: str, version: str, *args: Any) -> dict[str, Any] | ItemError:
        """``report(db, facts, versions, *args)`` over the labelled parts; 422 for what the line cannot answer."""
        facts, versions = await asyncio.to_thread(self._facts, line, version)
        try:
            result: dict[str, Any] = await self._run(lambda: report(self._ready(), facts, versions, *args))
        except LineGuardError as err:
            return ItemError.of(err)
        return result

    async def suggestion(
        self, line: str, version: str, since: float, miss_rate: float | None, over_detection_rate: float | None
    ) -> dict[str, Any] | ItemError:
        return await self._threshold_report(
            threshold_suggestion, line, version, since, self.args.max_rows, miss_rate, over_detection_rate
        )

    async def rates(self, line: str, version: str, since: float, threshold: float | None) -> dict[str, Any] | ItemError:
        return await self._threshold_report(threshold_rates, line, version, since, self.args.max_rows, threshold)

    async def health(self) -> dict[str, Any]:
        try:
            rejected: int | None = await asyncio.wait_for(self._run(lambda: self._ready().rejected_count()), 5.0)
            reachable = True
        except Exception:
            reachable, rejected = False, None
        return {
            "database": self.db.backend,
            "url": display_url(self.db.url),
            "reachable": reachable,
            "last_error": self.last_error,
            "rejected_rows": rejected,
            "webhook_failures": self.webhook_failures,
            "drift": {line: d["status"] for line, d in self._drift.items()},
        }

    def ping(self) -> str:
        return "ok"

    # --- drift watch -----------------------------------------------------------------------------
    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.args.drift_check_interval_s)
            lines, self._active = self._active, set()
            try:
                await self.check_drift(sorted(lines))
            except Exception as err:  # the database is away: try again next round
                self._active |= lines
                log.warning("drift check failed: %s", err)

    async def check_drift(self, lines: list[str]) -> dict[str, str]:
        """Check ``lines`` (those this replica wrote since the last check); returns line -> status."""
        out = {}
        for line in lines:
            try:
                version = await asyncio.to_thread(self.store.current_version, line)
                report = await self.drift(line, version)
            except NotFoundError:
                continue
            previous = self._drift.get(line, {}).get("status")
            self._drift[line] = report
            out[line] = report["status"]
            self.metrics.drift_status.set(DRIFT_LEVEL[report["status"]], {"line": line})
            for measure, result in report["measures"].items():
                if result["psi"] is not None:
                    self.metrics.drift_psi.set(result["psi"], {"line": line, "measure": measure})
            if report["anomaly_rate"] is not None:
                self.metrics.anomaly_rate.set(report["anomaly_rate"], {"line": line})
            if report["status"] == "drift" and previous != "drift" and self.args.webhook_url:
                await asyncio.to_thread(self._notify, report)
        return out

    def _notify(self, report: dict[str, Any]) -> None:
        assert self.args.webhook_url is not None
        body = json.dumps({"event": "drift", "at": time.time(), **report}).encode()
        for attempt in range(3):
            request = urllib.request.Request(
                self.args.webhook_url, body, {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status < 300:
                        return
            except OSError as err:
                log.warning("drift webhook to %s failed (try %d): %s", self.args.webhook_url, attempt + 1, err)
            time.sleep(0.5 * 2**attempt)
        self.webhook_failures += 1

    def __del__(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        self.db.close()
