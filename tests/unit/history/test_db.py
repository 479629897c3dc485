"""The history database on a real SQLite file and a real PostgreSQL server: migrations, idempotent
writes, pages and filters, feedback, and the reports built on them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lineguard.errors import ConfigError
from lineguard.history.db import MAX_PAGE, HistoryDB, HistoryQuery, Written
from lineguard.history.ids import decode_cursor, encode_cursor, id_time, is_id, new_ids, parse_window
from lineguard.history.migrate import current
from lineguard.history.reports import LineFacts, line_drift, line_stats, score_histogram, threshold_suggestion
from lineguard.history.rows import RECORD_FIELDS, RowBatch, StoredPrediction, VerdictEntry
from lineguard.history.tables import COLUMNS
from lineguard.models.drift import DriftRules
from lineguard.registry.kinds import LineKind
from tests.support import rows_for

HEAD = "0004"


def facts(line: str = "a", reference: tuple[float, ...] = ()) -> LineFacts:
    return LineFacts(line, LineKind.IMAGE_ANOMALY, "v1", 1.0, ("ok", "ng"), "ok", reference, ())


def test_migrations_reach_head_and_are_idempotent(history_db: HistoryDB) -> None:
    assert current(history_db.engine) == HEAD
    history_db.migrate()
    assert current(history_db.engine) == HEAD


def test_writes_are_idempotent_and_pages_walk_newest_first(history_db: HistoryDB) -> None:
    rows = rows_for("a", np.linspace(0, 2, 25)) + rows_for("b", np.zeros(5))
    assert history_db.insert(rows) == 30
    history_db.insert(rows[:10])  # a batch sent again after a lost acknowledgement
    assert history_db.count(HistoryQuery()) == 30
    seen, after = [], None
    while True:
        page = history_db.page(HistoryQuery(line="a"), after, limit=10)
        seen += [r.id for r in page]
        if len(page) < 10:
            break
        after = decode_cursor(encode_cursor(page[-1].id))
    assert seen == sorted((r.id for r in rows[:25]), reverse=True)
    assert isinstance(page[0], StoredPrediction) and page[0].label is None
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
        assert history_db.set_feedback(row.id, VerdictEntry(label, time.time(), "op"))
    assert not history_db.set_feedback("0" * 26, VerdictEntry("ok", time.time()))
    stats = line_stats(history_db, facts(), 0.0, 1000)
    c = stats["confusion"]
    assert (c["true_positive"], c["false_negative"], c["false_positive"], c["true_negative"]) == (1, 1, 1, 3)
    assert c["miss_rate"] == pytest.approx(0.5) and c["over_detection_rate"] == pytest.approx(0.25)
    assert stats["latency_ms"]["p50"] is not None
    stored = history_db.get(rows[5].id)
    assert stored is not None and stored.label == "ng" and stored.labelled_by == "op" and stored.score == 0.8

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
        with pytest.raises(ConfigError, match="duration"):
            parse_window(bad)
    for bad in ("xyz", encode_cursor("not-an-id!")[:-1] + "A", "A" * 100):
        with pytest.raises(ConfigError, match="cursor"):
            decode_cursor(bad)


def test_the_typed_rows_are_the_tables_columns() -> None:
    """A column added to the table without its field (or the other way round) is caught here."""
    assert set(RECORD_FIELDS) < set(COLUMNS)
    assert set(StoredPrediction.__dataclass_fields__) == set(COLUMNS)


def test_concurrent_first_migrations_of_a_fresh_database(tmp_path: Path) -> None:
    """Threads (a Recorder's) and processes (two replicas) that reach a fresh SQLite file at once: exactly one
    migrates, the others find the schema at head, and nobody fails (before: KeyError 'script' or 'table
    alembic_version already exists', 5 of 5 times)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    errors: list[BaseException] = []

    def first_call(db: HistoryDB) -> None:
        try:
            db.migrate()
            db.insert(rows_for("a", np.zeros(3)))
        except BaseException as err:
            errors.append(err)

    one = HistoryDB(url)  # threads of one process, on one database object and on several
    threads = [threading.Thread(target=first_call, args=(one if i % 2 else HistoryDB(url),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    processes = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, url]) for _ in range(3)
    ]  # separate processes: the file lock
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert errors == [] and current(one.engine) == HEAD
    assert one.count(HistoryQuery(line="a")) == 8 * 3


MIGRATE = "import sys; from lineguard.history.db import HistoryDB; HistoryDB(sys.argv[1]).migrate()"


def test_a_row_the_database_refuses_is_set_aside_and_the_rows_behind_it_are_written(history_db: HistoryDB) -> None:
    # a NULL score (a NaN answer, once) made SQLite refuse the batch, and the outbox resent it for ever
    rows = rows_for("a", np.linspace(0.1, 2.0, 9))
    rows[3].score = None  # type: ignore[assignment]
    rows[7].decision = None  # type: ignore[assignment]
    done = history_db.record(RowBatch.of(rows))
    assert done == Written(rows=7, rejected=2)
    assert history_db.count(HistoryQuery(line="a")) == 7
    letters = history_db.rejected()
    assert {r["id"] for r in letters} == {rows[3].id, rows[7].id} and history_db.rejected_count() == 2
    assert all("IntegrityError" in r["error"] and r["line"] == "a" for r in letters)
    assert '"score": null' in next(r["row"] for r in letters if r["id"] == rows[3].id)
    again = history_db.record(RowBatch.of(rows))  # the same batch sent again: written once, set aside once
    assert again == Written(rows=7, rejected=2) and history_db.rejected_count() == 2
    assert history_db.count(HistoryQuery(line="a")) == 7


def test_an_error_that_is_not_a_rows_is_raised(tmp_path: Path) -> None:
    db = HistoryDB(f"sqlite:///{tmp_path / 'never-migrated.db'}")  # no tables: the schema, not a row
    with pytest.raises(Exception, match="no such table"):
        db.record(RowBatch.of(rows_for("a", np.ones(3))))
