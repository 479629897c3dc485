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


class ItemFailure(BaseModel):
    status: int
    detail: str


class BatchItem(BaseModel):
    index: int
    filename: str | None = None
    prediction: Prediction | None = None
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


class Health(BaseModel):
    status: str
    store: bool
    deployments: dict[str, str]
