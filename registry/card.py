"""The JSON model card stored beside every version's tensors: what the model is and how it was made.

Every section is typed (:mod:`lineguard.registry.sections`); a card that does not fit is refused when it
is read. Cards of schema 1 (written before the sections were typed) are read too: :func:`upgrade` maps
them onto schema 2 on the way in, so stores written by earlier versions keep serving.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lineguard.models.threshold import Threshold
from lineguard.registry.kinds import LineKind
from lineguard.registry.names import check_line_name
from lineguard.registry.sections import (
    AlarmSettings,
    BackboneInfo,
    Calibration,
    ClassifierInfo,
    DataInfo,
    Evaluation,
    HeadInfo,
    SensorInputs,
    TrainingHistory,
)

ANOMALY_LABELS = ("ok", "ng")  # what operators may say of a part of an anomaly line
SCHEMA_VERSION = 2


def utc_now() -> datetime:
    return datetime.now(UTC)


class ModelCard(BaseModel):
    """Version metadata. ``files`` maps each stored file to its SHA-256, checked on every load."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[2] = 2
    line: str
    version: str = "v0"  # assigned by the store when written
    kind: LineKind
    created_at: datetime = Field(default_factory=utc_now)
    parent: str | None = Field(None, description="the version this one was derived from (a threshold change...)")
    note: str | None = None
    backbone: BackboneInfo | None = None
    inputs: SensorInputs | None = None
    head: HeadInfo | None = None
    classifier: ClassifierInfo | None = None
    threshold: Threshold
    alarm: AlarmSettings | None = Field(None, description="sensor lines: when a stream's readings raise an alarm")
    calibration: Calibration = Field(default_factory=Calibration)
    metrics: Evaluation | None = None
    data: DataInfo | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    training: TrainingHistory | None = None
    software: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)

    @field_validator("line")
    @classmethod
    def _line(cls, value: str) -> str:
        return check_line_name(value)

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade(data) if isinstance(data, dict) and data.get("schema_version") == 1 else data

    # --- what the card says of the line ------------------------------------------------------------
    def feedback_labels(self) -> tuple[str, ...]:
        """What an operator may say of a part: ok / ng, or a classifier's classes."""
        return tuple(self.classifier.classes) if self.classifier is not None else ANOMALY_LABELS

    def normal_label(self) -> str | None:
        """The label of a good part (None: a classifier without a normal class)."""
        return self.classifier.normal_class if self.classifier is not None else "ok"


def upgrade(card: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 card (plain dicts for threshold, calibration, metrics and training) as schema 2."""
    out = {**card, "schema_version": SCHEMA_VERSION}
    calibration = dict(card.get("calibration") or {})
    typed: dict[str, Any] = {}
    if "input" in calibration:
        typed["input"] = calibration.pop("input")
    if "temperature" in calibration:  # a classifier: the temperature fit, and its confidences
        typed["temperature"] = {k: calibration.pop(k) for k in list(calibration) if k in _TEMPERATURE}
        if "defect_confidence" in calibration:
            typed["defect_confidence"] = calibration.pop("defect_confidence")
        if "normal_defect_confidence" in calibration:
            typed["normal"] = calibration.pop("normal_defect_confidence")
    elif "scores" in calibration:  # an anomaly line: the held-out normal scores at the top level
        typed["normal"] = {k: calibration[k] for k in _SUMMARY if k in calibration}
    out["calibration"] = typed
    out["training"] = card.get("training") or None
    data = card.get("data")
    if isinstance(data, dict):
        out["data"] = {k: v for k, v in data.items() if k in DataInfo.model_fields}
    if out.get("metrics") == {}:
        out["metrics"] = None
    return out


_TEMPERATURE = ("method", "temperature", "ece_before", "ece_after", "nll_before", "nll_after", "n")
_SUMMARY = ("n", "mean", "std", "quantiles", "histogram", "scores")
