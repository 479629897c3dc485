"""What a line answers for a part or a reading: one pydantic model per kind of answer, built in one place
from the model's own output, and the same whether it comes from ``lineguard predict`` or from the HTTP
API (where these models are also the OpenAPI schema, so the schema and the body cannot drift apart).

Builders take the math's results as they are (:class:`lineguard.models.decisions.AnomalyDecision`,
:class:`lineguard.models.decisions.ClassDecision`, :class:`lineguard.models.sensor_model.SensorScores`)
and use ``model_construct``: the values come from the model, not from a client, and a batch of thousands
of readings is not validated twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, Field

from lineguard.models.decisions import AnomalyDecision, ClassDecision
from lineguard.models.sensor_model import SensorScores

ID_HELP = "the answer's id in the history: POST feedback to it"


def _ms(value: float) -> float:
    return round(value, 3)


class Prediction(BaseModel):
    """The answer of an image-anomaly line for one part."""

    line: str
    model_version: str
    anomaly_score: float = Field(description="raw score of the line's model (higher = more anomalous)")
    threshold: float = Field(description="scores above this are anomalies")
    normalized_score: float = Field(description="0 = a typical normal part, 1.0 = at the threshold")
    is_anomaly: bool
    inference_time_ms: float
    sensor_id: str | None = None
    heatmap_png: str | None = Field(None, description="base64 PNG: the anomaly map over the image (?heatmap=true)")
    prediction_id: str | None = Field(None, description=ID_HELP)

    @classmethod
    def of(
        cls,
        line: str,
        version: str,
        scored: AnomalyDecision,
        elapsed_ms: float,
        sensor_id: str | None = None,
        heatmap_png: str | None = None,
        prediction_id: str | None = None,
    ) -> Prediction:
        return cls.model_construct(
            line=line,
            model_version=version,
            anomaly_score=scored.anomaly_score,
            threshold=scored.threshold,
            normalized_score=scored.normalized_score,
            is_anomaly=scored.is_anomaly,
            inference_time_ms=_ms(elapsed_ms),
            sensor_id=sensor_id,
            heatmap_png=heatmap_png,
            prediction_id=prediction_id,
        )


class ClassPrediction(BaseModel):
    """The answer of a classifier line for one image."""

    line: str
    model_version: str
    prediction: str = Field(description="the class answered")
    confidence: float = Field(description="calibrated probability of that class (temperature-scaled)")
    probabilities: dict[str, float] = Field(description="calibrated probability of every class")
    severity: str | None = Field(
        None, description="the line's severity level of the defect confidence (lines with a normal class)"
    )
    defect_confidence: float | None = Field(None, description="1 - probability of the normal class")
    is_defect: bool | None = Field(None, description="the answer is not the normal class")
    sensor_id: str | None = None
    timestamp: datetime
    inference_time_ms: float
    prediction_id: str | None = Field(None, description=ID_HELP)

    @classmethod
    def of(
        cls,
        line: str,
        version: str,
        decision: ClassDecision,
        classes: Sequence[str],
        normal_index: int | None,
        elapsed_ms: float,
        sensor_id: str | None = None,
        prediction_id: str | None = None,
    ) -> ClassPrediction:
        defect = decision.defect_confidence
        return cls.model_construct(
            line=line,
            model_version=version,
            prediction=classes[decision.index],
            confidence=round(decision.confidence, 6),
            probabilities={name: round(float(p), 6) for name, p in zip(classes, decision.probabilities, strict=True)},
            severity=decision.severity,
            defect_confidence=None if defect is None else round(defect, 6),
            is_defect=None if normal_index is None else decision.index != normal_index,
            sensor_id=sensor_id,
            timestamp=datetime.now(UTC),
            inference_time_ms=_ms(elapsed_ms),
            prediction_id=prediction_id,
        )


class SimplePrediction(BaseModel):
    """The answer of the plain ``POST /predict`` endpoint."""

    anomaly_score: float
    threshold: float
    is_anomaly: bool
    line: str
    model_version: str
    prediction_id: str | None = Field(None, description=ID_HELP)


class SimpleClassPrediction(BaseModel):
    """The plain ``POST /predict`` answer when the default line is a classifier."""

    prediction: str
    confidence: float
    severity: str | None = None
    sensor_id: str | None = None
    timestamp: datetime
    line: str
    model_version: str
    prediction_id: str | None = Field(None, description=ID_HELP)


def simple(full: Prediction | ClassPrediction) -> SimplePrediction | SimpleClassPrediction:
    """The plain endpoint's answer: the same fields, fewer of them."""
    kind = SimpleClassPrediction if isinstance(full, ClassPrediction) else SimplePrediction
    return kind.model_construct(**{name: getattr(full, name) for name in kind.model_fields})


class TopFeature(BaseModel):
    feature: str
    share: float = Field(description="this feature's share of the reading's reconstruction error (0-1)")
    value: float | None = Field(None, description="the reading's value")
    expected: float | None = Field(None, description="what the model expected, from the other features")


class StreamAlarm(BaseModel):
    """A stream's alarm at a reading (:mod:`lineguard.models.alarm`): whether it is active, and the event this
    reading caused, if any."""

    active: bool
    event: str | None = Field(None, description='"start" or "end" when this reading started or ended the alarm')
    duration: int | None = Field(None, description="readings the alarm has lasted (at an end: its whole length)")


class AlarmEventOut(BaseModel):
    reading: int = Field(description="the reading's index in this request")
    event: str = Field(description='"start" or "end"')
    duration: int


class SensorPrediction(BaseModel):
    """The answer for one sensor reading."""

    line: str
    model_version: str
    score: float = Field(description="reconstruction error (standardised units); higher = more anomalous")
    threshold: float
    normalized_score: float = Field(description="0 = a typical normal reading, 1.0 = at the threshold")
    status: str = Field(description='"normal" or "anomaly"')
    is_anomaly: bool
    top_features: list[TopFeature] = Field(description="the features that contribute most to the error")
    inference_time_ms: float
    sensor_id: str | None = None
    prediction_id: str | None = Field(None, description=ID_HELP)
    stream: str | None = Field(None, description="the stream the reading was scored in (its window and alarm)")
    alarm: StreamAlarm | None = Field(None, description="the stream's alarm state after this reading")
    window: int | None = Field(None, description="readings a window head scores each reading with")

    @classmethod
    def of(
        cls,
        line: str,
        version: str,
        out: SensorScores,
        threshold: float,
        values: np.ndarray,
        features: Sequence[str],
        elapsed_ms: float,
        sensor_id: str | None = None,
        prediction_id: str | None = None,
    ) -> SensorPrediction:
        """The answer for the first (only) reading of ``out``; ``values`` is the reading as sent."""
        top = [
            TopFeature.model_construct(
                feature=features[j],
                share=round(float(share), 4),
                value=float(values[0, j]),
                expected=round(float(out.expected[0, j]), 6),
            )
            for j, share in zip(out.top_index[0].tolist(), out.top_share[0].tolist(), strict=True)
        ]
        flagged = bool(out.is_anomaly[0])
        return cls.model_construct(
            line=line,
            model_version=version,
            score=float(out.scores[0]),
            threshold=threshold,
            normalized_score=float(out.normalized[0]),
            status=status(flagged),
            is_anomaly=flagged,
            top_features=top,
            inference_time_ms=_ms(elapsed_ms),
            sensor_id=sensor_id,
            prediction_id=prediction_id,
        )


class SensorBatchPrediction(BaseModel):
    """The answer for a batch of readings, columnar: entry i of every list belongs to reading i."""

    line: str
    model_version: str
    threshold: float
    count: int
    anomalies: int
    scores: list[float]
    status: list[str]
    top_features: list[list[str]] = Field(description="per reading, the largest contributors first")
    top_shares: list[list[float]]
    inference_time_ms: float
    sensor_id: str | None = None
    prediction_ids: list[str] | None = Field(None, description="reading i's id in the history")
    stream: str | None = Field(None, description="the stream the readings were scored in (their windows and alarm)")
    alarm: list[bool] | None = Field(None, description="per reading, whether the stream was in alarm")
    alarm_events: list[AlarmEventOut] | None = Field(None, description="alarms this batch started or ended")
    window: int | None = Field(None, description="readings a window head scores each reading with")

    @classmethod
    def of(
        cls,
        line: str,
        version: str,
        out: SensorScores,
        threshold: float,
        features: Sequence[str],
        elapsed_ms: float,
        sensor_id: str | None = None,
        prediction_ids: list[str] | None = None,
    ) -> SensorBatchPrediction:
        names = np.asarray(features, dtype=object)
        return cls.model_construct(
            line=line,
            model_version=version,
            threshold=threshold,
            count=len(out.scores),
            anomalies=int(out.is_anomaly.sum()),
            scores=out.scores.tolist(),
            status=statuses(out.is_anomaly),
            top_features=names[out.top_index].tolist(),
            top_shares=out.top_share.round(4).tolist(),
            inference_time_ms=_ms(elapsed_ms),
            sensor_id=sensor_id,
            prediction_ids=prediction_ids,
        )


class AnomalyAnswer(BaseModel):
    """The answer of the plain ``POST /anomaly`` endpoint (lists for a batch of readings)."""

    score: float | list[float]
    status: str | list[str]
    prediction_id: str | list[str] | None = None


def status(flagged: bool) -> str:
    return "anomaly" if flagged else "normal"


def statuses(flagged: np.ndarray) -> list[str]:
    out: list[str] = np.where(flagged, "anomaly", "normal").tolist()
    return out
