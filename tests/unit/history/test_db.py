"""The history database on a real SQLite file and a real PostgreSQL server: migrations, idempotent
writes, pages and filters, feedback, and the reports built on them."""

from __future__ import annotations

import time

import numpy as np
import pytest

from lineguard.history.db import MAX_PAGE, HistoryDB, HistoryQuery
from lineguard.history.ids import decode_cursor, encode_cursor, id_time, is_id, new_ids, parse_window
from lineguard.history.migrate import current
from lineguard.history.reports import LineFacts, line_drift, line_stats, score_histogram, threshold_suggestion
from lineguard.models.drift import DriftRules


def rows_for(line: str, scores: np.ndarray, threshold: float = 1.0, **extra: object) -> list[dict[str, object]]:
    now = time.time()
    ids = new_ids(len(scores), now)
    return [
        {
            "id": i,
            "line": line,
            "kind": "image-anomaly",
            "model_version": "v1",
            "ts": now,
            "score": float(s),
            "threshold": threshold,
            "decision": "ng" if s > threshold else "ok",
            "is_anomaly": bool(s > threshold),
            "latency_ms": 5.0 + k % 10,
            "input_stat": 0.5,
            **extra,
        }
        for k, (i, s) in enumerate(zip(ids, scores, strict=True))
    ]


def facts(line: str = "a", reference: tuple[float, ...] = ()) -> LineFacts:
    return LineFacts(line, "image-anomaly", "v1", 1.0, ("ok", "ng"), "ok", reference, ())


def test_migrations_reach_head_and_are_idempotent(history_db: HistoryDB) -> None:
    assert current(history_db.engine) == "0001"
    history_db.migrate()
    assert current(history_db.engine) == "0001"


def test_writes_are_idempotent_and_pages_walk_newest_first(history_db: HistoryDB) -> None:
    rows = rows_for("a", np.linspace(0, 2, 25)) + rows_for("b", np.zeros(5))
    assert history_db.insert(rows) == 30
    history_db.insert(rows[:10])  # a batch sent again after a lost acknowledgement
    assert history_db.count(HistoryQuery()) == 30
    seen, after = [], None
    while True:
        page = history_db.page(HistoryQuery(line="a"), after, limit=10)
        seen += [r["id"] for r in page]
        if len(page) < 10:
            break
        after = decode_cursor(encode_cursor(page[-1]["id"]))
    assert seen == sorted((r["id"] for r in rows[:25]), reverse=True)
    assert len(history_db.page(HistoryQuery(), limit=10**6)) == 30  # bounded to MAX_PAGE, here all 30
    assert MAX_PAGE == 1000


def test_filters(history_db: HistoryDB) -> None:
    history_db.insert(rows_for("a", np.array([0.5, 1.5, 2.0]), sensor_id="cam-1"))
    history_db.insert(rows_for("a", np.array([0.1]), sensor_id="cam-2"))
    assert len(history_db.page(HistoryQuery(line="a", sensor_id="cam-1"))) == 3
    assert len(history_db.page(HistoryQuery(line="a", decision="ng"))) == 2
    assert len(history_db.page(HistoryQuery(line="a", since=time.time() + 60))) == 0
    assert len(history_db.page(HistoryQuery(line="a", until=time.time() + 60))) == 4
    assert history_db.count(HistoryQuery(line="a", labelled=True)) == 0


def test_feedback_changes_the_rates(history_db: HistoryDB) -> None:
    scores = np.array([0.2, 0.4, 0.6, 1.2, 1.4, 0.8])  # flagged: the two above 1.0
    rows = rows_for("a", scores)
    history_db.insert(rows)
    stats = line_stats(history_db, facts(), 0.0, 1000)
    assert stats["predictions"] == 6 and stats["anomalies"] == 2 and stats["labelled"] == 0
    assert stats["confusion"]["miss_rate"] is None
    # operators: the 0.8 part was defective (a miss), the 1.2 part was good (an over-detection)
    labels = ["ok", "ok", "ok", "ok", "ng", "ng"]
    for row, label in zip(rows, labels, strict=True):
        assert history_db.set_feedback(str(row["id"]), label, time.time(), "op", None)
    assert not history_db.set_feedback("0" * 26, "ok", time.time(), None, None)
    stats = line_stats(history_db, facts(), 0.0, 1000)
    c = stats["confusion"]
    assert (c["true_positive"], c["false_negative"], c["false_positive"], c["true_negative"]) == (1, 1, 1, 3)
    assert c["miss_rate"] == pytest.approx(0.5) and c["over_detection_rate"] == pytest.approx(0.25)
    assert stats["latency_ms"]["p50"] is not None
    row = history_db.get(str(rows[5]["id"]))
    assert row is not None and row["label"] == "ng" and row["labelled_by"] == "op"

    hist = score_histogram(history_db, facts(), ("v1",), 0.0, 1000, bins=10)
    assert sum(hist["counts"]["good"]) == 4 and sum(hist["counts"]["defective"]) == 2
    assert hist["edges"][0] <= 0.2 and hist["edges"][-1] >= 1.4
    suggestion = threshold_suggestion(history_db, facts(), ("v1",), 0.0, 1000, 0.0, None)
    assert suggestion["miss_rate"] == 0.0 and 0.6 < suggestion["threshold"] < 0.8


def test_drift_fires_on_a_shifted_stream_only(history_db: HistoryDB) -> None:
    rng = np.random.default_rng(0)
    reference = tuple(rng.normal(0.5, 0.1, 300).tolist())
    rules = DriftRules(min_recent=50)
    history_db.insert(rows_for("a", rng.normal(0.5, 0.1, 400)))
    assert line_drift(history_db, facts("a", reference), ("v1",), 400, rules)["status"] == "ok"
    history_db.insert(rows_for("b", rng.normal(0.8, 0.1, 400)))
    report = line_drift(history_db, facts("b", reference), ("v1",), 400, rules)
    assert report["status"] == "drift" and report["measures"]["score"]["psi"] > 0.25
    assert line_drift(history_db, facts("c", reference), ("v1",), 400, rules)["status"] == "insufficient_data"


def test_ids_windows_and_cursors() -> None:
    ids = new_ids(3)
    assert all(is_id(i) for i in ids) and abs(id_time(ids[0]) - time.time()) < 5
    assert parse_window("24h") == 86400 and parse_window("90") == 90
    for bad in ("", "-1h", "1y", "nan", "401d"):
        with pytest.raises(ValueError, match="duration"):
            parse_window(bad)
    for bad in ("xyz", encode_cursor("not-an-id!")[:-1] + "A", "A" * 100):
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(bad)
