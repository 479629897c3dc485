"""History rows of the answers the ingress gives (``history.tables.RECORD_COLUMNS``), and the rows read
back turned into API records. Anomaly lines decide ``ok`` / ``ng``; classifier lines decide a class, and
their ``score`` is the defect confidence (what their threshold applies to)."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from lineguard.deployments.lines import LineEntry
from lineguard.deployments.messages import ClassResult, ScoreResult
from lineguard.models.sensor_model import SensorScores


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def image_row(
    entry: LineEntry,
    result: ScoreResult | ClassResult,
    prediction_id: str,
    ts: float,
    latency_ms: float,
    sensor_id: str | None,
    source: str | None,
    data: bytes,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": prediction_id,
        "line": entry.line,
        "kind": entry.card.kind,
        "model_version": entry.version,
        "ts": ts,
        "sensor_id": sensor_id,
        "source": source[:255] if source else None,
        "latency_ms": latency_ms,
        "digest": digest(data),
        "input_stat": result.input_stat,
    }
    if isinstance(result, ClassResult):
        score = result.defect_confidence if result.defect_confidence is not None else result.confidence
        threshold = float(entry.card.threshold["value"])
        row.update(
            score=float(score),
            threshold=threshold,
            decision=result.label,
            is_anomaly=bool(result.is_defect),
            confidence=float(result.confidence),
            severity=result.severity,
        )
    else:
        row.update(
            score=float(result.score),
            threshold=float(result.threshold),
            decision="ng" if result.is_anomaly else "ok",
            is_anomaly=bool(result.is_anomaly),
        )
    return row


def sensor_rows(
    entry: LineEntry,
    out: SensorScores,
    threshold: float,
    ids: list[str],
    ts: float,
    latency_ms: float,
    sensor_id: str | None,
) -> list[dict[str, Any]]:
    base = {
        "line": entry.line,
        "kind": entry.card.kind,
        "model_version": entry.version,
        "ts": ts,
        "sensor_id": sensor_id,
        "threshold": threshold,
        "latency_ms": latency_ms,
    }
    flags = out.is_anomaly.tolist()
    return [
        {**base, "id": i, "score": s, "decision": "ng" if f else "ok", "is_anomaly": f, "input_stat": x}
        for i, s, f, x in zip(ids, out.scores.tolist(), flags, out.input_rms.tolist(), strict=True)
    ]


def decisions(rows: list[dict[str, Any]]) -> tuple[dict[str, int], int]:
    """Count of each decision and of flagged parts, for the metrics."""
    return dict(Counter(r["decision"] for r in rows)), sum(1 for r in rows if r["is_anomaly"])


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def api_record(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as the history API shows it: ISO times, the feedback as one object."""
    out = {k: v for k, v in row.items() if k not in ("ts", "label", "labelled_at", "labelled_by", "label_note")}
    out["timestamp"] = iso(row["ts"])
    out["feedback"] = (
        None
        if row.get("label") is None
        else {
            "label": row["label"],
            "at": iso(row.get("labelled_at")),
            "by": row.get("labelled_by"),
            "note": row.get("label_note"),
        }
    )
    return out


def plain_record(row: dict[str, Any]) -> dict[str, Any]:
    """The plain ``/prediction_history`` record of the simplest classifier services."""
    return {
        "id": row["id"],
        "timestamp": iso(row["ts"]),
        "line": row["line"],
        "sensor_id": row.get("sensor_id"),
        "prediction": row["decision"],
        "confidence": row.get("confidence"),
        "score": row["score"],
        "severity": row.get("severity"),
        "label": row.get("label"),
    }


CSV_COLUMNS = (
    "id",
    "timestamp",
    "line",
    "kind",
    "model_version",
    "sensor_id",
    "source",
    "score",
    "threshold",
    "decision",
    "is_anomaly",
    "confidence",
    "severity",
    "latency_ms",
    "digest",
    "input_stat",
    "label",
    "labelled_at",
    "labelled_by",
    "label_note",
)


def csv_values(row: dict[str, Any]) -> list[Any]:
    values = {**row, "timestamp": iso(row["ts"]), "labelled_at": iso(row.get("labelled_at"))}
    return [values.get(c) for c in CSV_COLUMNS]
