"""Request and response bodies of the HTTP API (they generate the OpenAPI document at /docs)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Prediction(BaseModel):
    line: str
    model_version: str
    anomaly_score: float = Field(description="raw score of the line's model (higher = more anomalous)")
    threshold: float = Field(description="scores above this are anomalies")
    normalized_score: float = Field(description="0 = a typical normal part, 1.0 = at the threshold")
    is_anomaly: bool
    inference_time_ms: float
    sensor_id: str | None = None
    heatmap_png: str | None = Field(None, description="base64 PNG: the anomaly map over the image (?heatmap=true)")
    prediction_id: str | None = Field(None, description="the answer's id in the history: POST feedback to it")


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
    prediction_id: str | None = Field(None, description="the answer's id in the history: POST feedback to it")


class SimpleClassPrediction(BaseModel):
    """The plain ``POST /predict`` answer when the default line is a classifier."""

    prediction: str
    confidence: float
    severity: str | None = None
    sensor_id: str | None = None
    timestamp: datetime
    line: str
    model_version: str
    prediction_id: str | None = Field(None, description="the answer's id in the history: POST feedback to it")


class ItemFailure(BaseModel):
    status: int
    detail: str


class BatchItem(BaseModel):
    index: int
    filename: str | None = None
    prediction: Prediction | ClassPrediction | None = None
    error: ItemFailure | None = None


class BatchResponse(BaseModel):
    line: str
    model_version: str
    results: list[BatchItem]
    inference_time_ms: float


class SimplePrediction(BaseModel):
    """The answer of the plain ``POST /predict`` endpoint."""

    anomaly_score: float
    threshold: float
    is_anomaly: bool
    line: str
    model_version: str
    prediction_id: str | None = Field(None, description="the answer's id in the history: POST feedback to it")


class LineSummary(BaseModel):
    line: str
    kind: str
    version: str
    threshold: float
    head: str | None = None
    backbone: str | None = None
    image_auroc: float | None = None
    created_at: datetime


class LineDetail(LineSummary):
    threshold_method: str
    threshold_reference: float
    parent: str | None = None
    note: str | None = None
    versions: list[str]
    metrics: dict[str, Any] | None = None
    calibration: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] | None = None
    head_params: dict[str, Any] = Field(default_factory=dict)
    image_size: int | None = None
    features: list[str] | None = Field(None, description="sensor lines: the values of a reading, in order")
    classes: list[str] | None = Field(None, description="classifier lines: the classes it answers")
    normal_class: str | None = None
    severity: dict[str, float] | None = Field(None, description="classifier lines: level -> lowest defect confidence")
    refused_version: str | None = Field(
        None, description="the version CURRENT names, refused as corrupt (this version serves instead)"
    )
    refused_reason: str | None = None


class ThresholdUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(description="new decision threshold, in the line's score units")
    note: str | None = Field(None, max_length=500)

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value


class ThresholdChanged(BaseModel):
    line: str
    version: str
    previous_version: str
    threshold: float
    previous_threshold: float


class SeverityUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: dict[str, float] = Field(
        description='level -> lowest defect confidence, e.g. {"high": 0.9, "low": 0.6}; below every level is "none"',
        min_length=1,
        max_length=16,
    )
    note: str | None = Field(None, max_length=500)


class SeverityChanged(BaseModel):
    line: str
    version: str
    previous_version: str
    severity: dict[str, float]
    previous_severity: dict[str, float]


class Health(BaseModel):
    status: str
    store: bool
    deployments: dict[str, str]
    history: dict[str, Any] | None = Field(None, description="the outbox and the database (degraded: not fatal)")


class Feedback(BaseModel):
    """An operator's verdict on one answer: ok / ng for anomaly lines, one of the classes for classifiers."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(min_length=1, max_length=64)
    operator: str | None = Field(None, max_length=100, description="who says so")
    note: str | None = Field(None, max_length=500)


class FeedbackRecorded(BaseModel):
    prediction_id: str
    line: str
    decision: str
    label: str
    agrees: bool = Field(description="the operator's label is the line's decision")


class HistoryPage(BaseModel):
    records: list[dict[str, Any]]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next (older) page; null at the end")


class TopFeature(BaseModel):
    feature: str
    share: float = Field(description="this feature's share of the reading's reconstruction error (0-1)")
    value: float | None = Field(None, description="the reading's value")
    expected: float | None = Field(None, description="what the model expected, from the other features")


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
    prediction_id: str | None = Field(None, description="the answer's id in the history: POST feedback to it")


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


class AnomalyAnswer(BaseModel):
    """The answer of the plain ``POST /anomaly`` endpoint (lists for a batch of readings)."""

    score: float | list[float]
    status: str | list[str]
    prediction_id: str | list[str] | None = None


SENSOR_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'one reading {"values": [..]}, a batch {"values": [[..], ..]}, or by name {"features": {..}}',
    "properties": {
        "values": {
            "oneOf": [
                {"type": "array", "items": {"type": "number"}},
                {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            ]
        },
        "features": {
            "oneOf": [
                {"type": "object", "additionalProperties": {"type": "number"}},
                {"type": "array", "items": {"type": "object", "additionalProperties": {"type": "number"}}},
            ]
        },
        "sensor_id": {"type": "string", "maxLength": 200},
    },
    "additionalProperties": False,
}
