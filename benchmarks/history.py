"""How fast the history database writes and answers, SQLite beside PostgreSQL in one run.

    python -m benchmarks.history                                   # SQLite in a temporary folder
    python -m benchmarks.history --postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench

Writes ``--rows`` prediction rows in batches of ``--batch`` (the outbox's batch size), the way the
Recorder does, then times what the routes ask of it: a history page, a filtered page, the stats of a
line, its histogram and its drift check, each the median of ``--repeat`` calls. PostgreSQL is
ANALYZEd after the load, as autovacuum does soon after (before it, the planner thinks the table is
empty and a page of history took 50 ms instead of 3).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.history.db import HistoryDB, HistoryQuery
from lineguard.history.ids import new_ids
from lineguard.history.reports import LineFacts, line_drift, line_stats, score_histogram
from lineguard.history.rows import PredictionRow, VerdictEntry
from lineguard.models.drift import DriftRules
from lineguard.registry.kinds import LineKind


def make_rows(n: int, lines: list[str], rng: np.random.Generator) -> list[PredictionRow]:
    """``n`` rows of a gamma-distributed score, the lines interleaved as a busy factory sends them."""
    now = time.time()
    scores = rng.gamma(2.0, 0.3, n)
    return [
        PredictionRow(
            id=i,
            line=lines[k % len(lines)],
            kind=LineKind.IMAGE_ANOMALY,
            model_version="v1",
            ts=now,
            sensor_id=f"cam-{k % 8}",
            source=f"part-{k}.png",
            score=float(s),
            threshold=1.5,
            decision="ng" if s > 1.5 else "ok",
            is_anomaly=bool(s > 1.5),
            latency_ms=20.0 + k % 17,
            digest="0" * 32,
            input_stat=0.45,
        )
        for k, (i, s) in enumerate(zip(new_ids(n, now), scores, strict=True))
    ]


def timed(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run(url: str, rows: int, batch: int, repeat: int) -> dict[str, float]:
    db = HistoryDB(url)
    db.migrate()
    rng = np.random.default_rng(0)
    data = make_rows(rows, ["bench-a", "bench-b", "bench-c", "bench-d"], rng)
    started = time.perf_counter()
    for i in range(0, len(data), batch):
        db.insert(data[i : i + batch])
    write_s = time.perf_counter() - started
    if db.backend == "postgresql":  # what autovacuum does within a minute of a bulk load: fresh planner stats
        from sqlalchemy import text

        with db.engine.begin() as conn:
            conn.execute(text("ANALYZE predictions"))
    facts = LineFacts(
        "bench-a", LineKind.IMAGE_ANOMALY, "v1", 1.5, ("ok", "ng"), "ok", tuple(rng.gamma(2, 0.3, 500)), ()
    )
    for row in data[:8000:4]:  # some feedback on bench-a, as operators give it
        db.set_feedback(row.id, VerdictEntry("ng" if row.score > 1.4 else "ok", time.time()))
    out = {
        "rows_per_s": rows / write_s,
        "page_ms": timed(lambda: db.page(HistoryQuery(line="bench-a"), None, 100), repeat),
        "filtered_page_ms": timed(lambda: db.page(HistoryQuery(line="bench-a", sensor_id="cam-3"), None, 100), repeat),
        "stats_ms": timed(lambda: line_stats(db, facts, 0.0, 100_000), repeat),
        "histogram_ms": timed(lambda: score_histogram(db, facts, ("v1",), 0.0, 100_000), repeat),
        "drift_ms": timed(lambda: line_drift(db, facts, ("v1",), 500, DriftRules()), repeat),
    }
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL to compare with (an empty database)")
    args = parser.parse_args()
    targets = {"sqlite": f"sqlite:///{Path(tempfile.mkdtemp()) / 'history.db'}"}
    if args.postgres:
        targets["postgresql"] = args.postgres
    results = {name: run(url, args.rows, args.batch, args.repeat) for name, url in targets.items()}
    keys = list(next(iter(results.values())))
    print(f"{args.rows} rows, batches of {args.batch}; median of {args.repeat} calls")
    print(f"{'':20}" + "".join(f"{name:>14}" for name in results))
    for key in keys:
        print(f"{key:20}" + "".join(f"{results[name][key]:14.1f}" for name in results))


if __name__ == "__main__":
    main()
