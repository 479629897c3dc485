"""The JSON model card stored beside every version's tensors: what the model is and how it was made."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VERSION_NAME = re.compile(r"^v[1-9][0-9]{0,8}$")
KINDS = ("image-anomaly", "sensor-anomaly", "image-classifier")


def check_line_name(line: str) -> str:
    """Line names are safe path components: letters, digits, '-' and '_', at most 64, no dots or slashes."""
    if not isinstance(line, str) or not LINE_NAME.match(line):
        raise ValueError(
            f"invalid line name {line!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return line


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not VERSION_NAME.match(version):
        raise ValueError(f"invalid version {version!r}: versions look like v1, v2, ...")
    return version


def utc_now() -> datetime:
    return datetime.now(UTC)


class BackboneInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    layers: list[str]
    image_size: int
    weights: str
    mean: list[float]
    std: list[float]
    channels: list[int]
    reductions: list[int]


class HeadInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any]
    scorer: dict[str, Any] = Field(default_factory=dict)


class DataInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    root: str
    layout: str
    fingerprint: str
    n_train: int
    n_fit: int
    n_calibration: int
    calibration: str
    n_test: int = 0
    skipped: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class SensorInputs(BaseModel):
    """What a sensor line reads: the feature names in order, and the scaler fitted on normal rows."""

    model_config = ConfigDict(extra="forbid")
    features: list[str] = Field(min_length=2)
    mean: list[float]
    std: list[float]

    @property
    def n_features(self) -> int:
        return len(self.features)


class ClassifierInfo(BaseModel):
    """What a classifier line answers: its classes, which one is normal, calibration and severity rules."""

    model_config = ConfigDict(extra="forbid")
    classes: list[str] = Field(min_length=2)
    normal_class: str | None = None
    temperature: float = Field(gt=0)
    severity: dict[str, float] = Field(default_factory=dict, description="level -> lowest defect confidence")

    @property
    def normal_index(self) -> int | None:
        return None if self.normal_class is None else self.classes.index(self.normal_class)


class ModelCard(BaseModel):
    """Version metadata. ``files`` maps each stored file to its SHA-256, checked on every load."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    line: str
    version: str = "v0"  # assigned by the store when written
    kind: Literal["image-anomaly", "sensor-anomaly", "image-classifier"]
    created_at: datetime = Field(default_factory=utc_now)
    parent: str | None = None
    note: str | None = None
    backbone: BackboneInfo | None = None
    inputs: SensorInputs | None = None
    head: HeadInfo | None = None
    classifier: ClassifierInfo | None = None
    threshold: dict[str, Any]
    calibration: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    data: DataInfo | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    software: dict[str, str] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)

    @field_validator("line")
    @classmethod
    def _line(cls, value: str) -> str:
        return check_line_name(value)
