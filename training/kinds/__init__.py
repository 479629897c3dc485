"""One adapter per kind of line (fit, evaluate, load, answer), registered here as the anomaly heads are in
:mod:`lineguard.models.heads`: adding a kind is a module in this package and one entry below."""

from __future__ import annotations

from typing import Any

from lineguard.registry.kinds import LineKind
from lineguard.training.kinds.base import (
    EvaluateRequest,
    EvaluationReport,
    KindAdapter,
    Predictor,
    PredictRequest,
)
from lineguard.training.kinds.classifier import ImageClassifier
from lineguard.training.kinds.image import ImageAnomaly
from lineguard.training.kinds.sensor import SensorAnomaly

ADAPTERS: dict[LineKind, KindAdapter[Any]] = {a.kind: a for a in (ImageAnomaly(), SensorAnomaly(), ImageClassifier())}


def adapter(kind: LineKind | str) -> KindAdapter[Any]:
    """The adapter of ``kind`` (its name, short name or enum member)."""
    return ADAPTERS[kind if isinstance(kind, LineKind) else LineKind.parse(kind)]


__all__ = ["ADAPTERS", "EvaluateRequest", "EvaluationReport", "KindAdapter", "PredictRequest", "Predictor", "adapter"]
