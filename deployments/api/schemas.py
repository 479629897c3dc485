"""The HTTP API's own bodies: what clients send (thresholds, severity rules, feedback), and the answers that
are not a part's answer (lines, batches, health, history pages). A part's answer is one of
:mod:`lineguard.registry.answers`; these models and those are the OpenAPI document at ``/docs``."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from lineguard.deployments.records import HistoryRecord
from lineguard.deployments.text import printable
from lineguard.registry.answers import ClassPrediction, Prediction


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
    metrics: dict[str, Any] | None = Field(None, description="the version's evaluation (without per-part scores)")
    calibration: dict[str, Any] = Field(default_factory=dict, description="what it was calibrated on (summaries)")
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
    bundles: list[str] = Field(
        default_factory=list,
        description="formats this version is exported in for the edge runtime (GET /v1/lines/{line}/bundle)",
    )


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


class AlarmUpdate(BaseModel):
    """Any of the alarm rule's settings; the others stay as they are."""

    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, description="an alarm starts when k of the last n readings are over the threshold")
    n: int | None = None
    clear_ratio: float | None = Field(None, description="while alarmed, a reading is bad above this x threshold")
    min_duration: int | None = Field(None, description="an alarm lasts at least this many readings")
    note: str | None = Field(None, max_length=500)


class AlarmChanged(BaseModel):
    line: str
    version: str
    previous_version: str
    alarm: dict[str, Any]
    previous_alarm: dict[str, Any] | None


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

    @field_validator("label", "operator")
    @classmethod
    def _printable(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else printable(value, str(info.field_name), 500)

    @field_validator("note")
    @classmethod
    def _note(cls, value: str | None) -> str | None:
        return None if value is None else printable(value, "note", 500, allow="\n")


class FeedbackRecorded(BaseModel):
    prediction_id: str
    line: str
    decision: str
    label: str
    agrees: bool = Field(description="the operator's label is the line's decision")


class HistoryPage(BaseModel):
    records: list[HistoryRecord]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next (older) page; null at the end")


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


def _multipart_body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body of a form with one file field (routes parse the form themselves)."""
    properties = {field: schema, "sensor_id": {"type": "string", "description": "camera or station id, echoed back"}}
    form = {"type": "object", "required": [field], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


IMAGE_FORM = _multipart_body("file", {"type": "string", "format": "binary", "description": "PNG/JPEG/BMP/TIFF/WebP"})
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **IMAGE_FORM["requestBody"]["content"],  # image lines
            "application/json": {"schema": SENSOR_BODY_SCHEMA},  # sensor lines
        },
    }
}
SENSOR_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": SENSOR_BODY_SCHEMA}}}}
BATCH_FORM = _multipart_body("files", {"type": "array", "items": {"type": "string", "format": "binary"}})
