"""The edge runtime's own prediction history: one SQLite file beside the bundles, written before the
answer leaves (a part that was answered is a part that was recorded), read back newest first.

Rows have the fields of the service's plain ``GET /prediction_history`` records: ``id, timestamp, line,
sensor_id, prediction, confidence, score, severity``; ``label`` stays empty (feedback is the service's).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineguard_edge.errors import ConfigError, DataError
from lineguard_edge.ids import new_id

MAX_PAGE = 1000
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    line TEXT NOT NULL,
    model_version TEXT NOT NULL,
    sensor_id TEXT,
    prediction TEXT NOT NULL,
    confidence REAL,
    score REAL NOT NULL,
    severity TEXT,
    is_anomaly INTEGER NOT NULL
)
"""


class LocalHistory:
    """``path``: the SQLite file (``":memory:"`` for none kept). Safe to share between threads."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def record(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Store one row per answer (keys as :meth:`page` returns them, without ``id``); their ids."""
        now = datetime.now(UTC).timestamp()
        ids = [new_id(now) for _ in rows]
        values = [
            (i, now, r["line"], r["model_version"], r.get("sensor_id"), r["prediction"], r.get("confidence"),
             float(r["score"]), r.get("severity"), int(bool(r["is_anomaly"])))
            for i, r in zip(ids, rows, strict=True)
        ]  # fmt: skip
        with self._lock:
            self._db.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
        return ids

    def page(self, limit: int = 100, before: str | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` rows, newest first, older than the id ``before`` when given."""
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        query = "SELECT id, ts, line, sensor_id, prediction, confidence, score, severity FROM predictions"
        args: tuple[Any, ...] = (limit,)
        if before:  # insertion order is answer order (ids of one millisecond do not sort among themselves)
            query += " WHERE rowid < (SELECT rowid FROM predictions WHERE id = ?)"
            args = (before, limit)
        with self._lock:
            if before and self._db.execute("SELECT 1 FROM predictions WHERE id = ?", (before,)).fetchone() is None:
                raise DataError(f"cursor {before[:40]!r} is not the id of a recorded prediction")
            found = self._db.execute(query + " ORDER BY rowid DESC LIMIT ?", args).fetchall()
        return [
            {"id": i, "timestamp": datetime.fromtimestamp(ts, UTC).isoformat(), "line": line, "sensor_id": sensor,
             "prediction": prediction, "confidence": confidence, "score": score, "severity": severity, "label": None}
            for i, ts, line, sensor, prediction, confidence, score, severity in found
        ]  # fmt: skip

    def count(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM predictions").fetchone()
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def rows_of(model_kind: str, answers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows of answers of one line (images, or a sensor batch already split into readings)."""
    rows = []
    for a in answers:
        if model_kind == "image-classifier":
            flagged = bool(a.get("is_defect"))
            score = a["defect_confidence"] if a.get("defect_confidence") is not None else a["confidence"]
            row = {
                "prediction": a["prediction"],
                "confidence": a["confidence"],
                "score": score,
                "severity": a["severity"],
            }
        else:
            flagged = bool(a["is_anomaly"])
            score = a["anomaly_score"] if "anomaly_score" in a else a["score"]
            row = {"prediction": "ng" if flagged else "ok", "score": score}
        rows.append({**row, "line": a["line"], "model_version": a["model_version"], "sensor_id": a.get("sensor_id"),
                     "is_anomaly": flagged})  # fmt: skip
    return rows
