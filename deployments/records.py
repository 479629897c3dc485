"""History rows of the answers the ingress gives (:class:`lineguard.history.rows.PredictionRow`), and the
rows read back as the history API shows them. Anomaly lines decide ``ok`` / ``ng``; classifier lines decide
a class, and their ``score`` is the defect confidence (what their threshold applies to)."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from lineguard.deployments.lines import LineEntry
from lineguard.deployments.messages import ClassResult, ScoreResult
from lineguard.deployments.text import csv_cell
from lineguard.history.rows import PredictionRow, StoredPrediction
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
) -> PredictionRow:
    if isinstance(result, ClassResult):
        decision = result.decision
        info = entry.card.classifier
        classes = info.classes if info else []
        normal = info.normal_index if info else None
        score = decision.defect_confidence if decision.defect_confidence is not None else decision.confidence
        threshold, answered = entry.card.threshold.value, classes[decision.index]
        flagged = normal is not None and decision.index != normal
        confidence, severity = float(decision.confidence), decision.severity
    else:
        scored = result.decision
        score, threshold = scored.anomaly_score, scored.threshold
        answered, flagged = ("ng" if scored.is_anomaly else "ok"), bool(scored.is_anomaly)
        confidence, severity = None, None
    return PredictionRow(
        id=prediction_id,
        line=entry.line,
        kind=entry.kind.value,
        model_version=entry.version,
        ts=ts,
        score=float(score),
        threshold=float(threshold),
        decision=answered,
        is_anomaly=flagged,
        latency_ms=latency_ms,
        sensor_id=sensor_id,
        source=source[:255] if source else None,
        confidence=confidence,
        severity=severity,
        digest=digest(data),
        input_stat=result.input_stat,
    )


def sensor_rows(
    entry: LineEntry,
    out: SensorScores,
    threshold: float,
    ids: list[str],
    ts: float,
    latency_ms: float,
    sensor_id: str | None,
    alarms: dict[int, str] | None = None,
) -> list[PredictionRow]:
    """One row per reading; ``alarms`` maps a reading's index in the request to the alarm event it caused."""
    line, kind, version = entry.line, entry.kind.value, entry.version
    rows = [
        PredictionRow(
            id=i,
            line=line,
            kind=kind,
            model_version=version,
            ts=ts,
            score=s,
            threshold=threshold,
            decision="ng" if f else "ok",
            is_anomaly=f,
            latency_ms=latency_ms,
            sensor_id=sensor_id,
            input_stat=x,
        )
        for i, s, f, x in zip(ids, out.scores.tolist(), out.is_anomaly.tolist(), out.input_rms.tolist(), strict=True)
    ]
    for index, event in (alarms or {}).items():
        rows[index].alarm = event
    return rows


def decisions(rows: list[PredictionRow]) -> tuple[dict[str, int], int]:
    """Count of each decision and of flagged parts, for the metrics."""
    return dict(Counter(r.decision for r in rows)), sum(1 for r in rows if r.is_anomaly)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class Verdict(BaseModel):
    """An operator's feedback on an answer."""

    label: str
    at: str | None = Field(None, description="when (ISO 8601)")
    by: str | None = Field(None, description="who said so: the operator named, else the API key's name")
    key: str | None = Field(None, description="the id of the API key it came with (none: an open service)")
    note: str | None = None


class HistoryRecord(BaseModel):
    """One recorded answer, as the history API shows it."""

    id: str
    line: str
    kind: str
    model_version: str
    timestamp: str | None
    sensor_id: str | None = None
    source: str | None = Field(None, description="the uploaded file's name")
    score: float
    threshold: float
    decision: str
    is_anomaly: bool
    confidence: float | None = None
    severity: str | None = None
    latency_ms: float
    digest: str | None = None
    input_stat: float | None = None
    feedback: Verdict | None = None

    @classmethod
    def of(cls, row: StoredPrediction) -> HistoryRecord:
        verdict = None
        if row.label is not None:
            verdict = Verdict(
                label=row.label, at=iso(row.labelled_at), by=row.labelled_by, key=row.labelled_key, note=row.label_note
            )
        return cls(
            id=row.id,
            line=row.line,
            kind=row.kind,
            model_version=row.model_version,
            timestamp=iso(row.ts),
            sensor_id=row.sensor_id,
            source=row.source,
            score=row.score,
            threshold=row.threshold,
            decision=row.decision,
            is_anomaly=row.is_anomaly,
            confidence=row.confidence,
            severity=row.severity,
            latency_ms=row.latency_ms,
            digest=row.digest,
            input_stat=row.input_stat,
            feedback=verdict,
        )


class PlainRecord(BaseModel):
    """The plain ``/prediction_history`` record of the simplest classifier services."""

    id: str
    timestamp: str | None
    line: str
    sensor_id: str | None = None
    prediction: str
    confidence: float | None = None
    score: float
    severity: str | None = None
    label: str | None = None

    @classmethod
    def of(cls, row: StoredPrediction) -> PlainRecord:
        return cls(
            id=row.id,
            timestamp=iso(row.ts),
            line=row.line,
            sensor_id=row.sensor_id,
            prediction=row.decision,
            confidence=row.confidence,
            score=row.score,
            severity=row.severity,
            label=row.label,
        )


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
    "labelled_key",
    "label_note",
)


def csv_values(row: StoredPrediction) -> list[Any]:
    """A row as CSV cells; text that a spreadsheet would run as a formula is neutralised (:func:`csv_cell`)."""
    return [
        iso(row.ts) if c == "timestamp" else iso(row.labelled_at) if c == "labelled_at" else csv_cell(getattr(row, c))
        for c in CSV_COLUMNS
    ]
