"""What travels between deployments: compact arrays plus per-item errors, so one bad image in a
batch gets its own error and never fails the others."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lineguard.models.sensor_model import SensorScores


@dataclass(frozen=True)
class ItemError:
    """An HTTP status and a detail that names the problem."""

    status: int
    detail: str


@dataclass
class ImageBatch:
    """Decoded, resized images as ``uint8 (N_ok, 3, S, S)``; ``rows[i]`` is item i's row or -1."""

    images: np.ndarray
    rows: list[int]
    errors: list[ItemError | None]


@dataclass
class FeatureBatch:
    """Backbone feature maps as float16 ``[(N_ok, C_l, H_l, W_l)]``, rows and errors as in ImageBatch."""

    layers: list[np.ndarray]
    rows: list[int]
    errors: list[ItemError | None]
    backbone_ms: float = 0.0
    intensity: np.ndarray | None = None  # (N_ok,) mean pixel value in [0, 1]: the input statistic for drift


@dataclass
class ScoreResult:
    score: float
    threshold: float
    normalized: float
    is_anomaly: bool
    anomaly_map: np.ndarray | None = None
    display_range: tuple[float, float] = (0.0, 1.0)
    timings: dict[str, float] = field(default_factory=dict)
    input_stat: float | None = None


@dataclass
class ClassResult:
    """A classifier line's answer for one image (see :func:`models.classifier.decide`)."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    defect_confidence: float | None
    severity: str | None
    is_defect: bool | None
    timings: dict[str, float] = field(default_factory=dict)
    input_stat: float | None = None


@dataclass
class VectorScores:
    """A sensor line's answer for ``B`` readings: the columnar scores, the threshold and timings."""

    out: SensorScores
    threshold: float
    score_ms: float = 0.0  # the forward pass, in the SensorScorer
    hop_ms: float = 0.0  # the round trip to the SensorScorer, seen from the ingress
