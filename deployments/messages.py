"""What travels between deployments: compact arrays plus per-item errors, so one bad image in a batch gets
its own error and never fails the others. The answers themselves are the math's decisions
(:mod:`lineguard.models.decisions`, :mod:`lineguard.models.sensor_model`), carried as they are."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lineguard.errors import LineGuardError, UnavailableError, outcome
from lineguard.models.alarm import AlarmEvent
from lineguard.models.decisions import AnomalyDecision, ClassDecision
from lineguard.models.sensor_model import SensorScores


@dataclass(frozen=True)
class ItemError:
    """One item's failure: an HTTP status and a detail that names the problem."""

    status: int
    detail: str
    retry_after_s: int | None = None  # set for failures that a retry can cure (503)

    @classmethod
    def of(cls, err: LineGuardError) -> ItemError:
        """The status the error table gives ``err``."""
        retry = err.retry_after_s if isinstance(err, UnavailableError) else None
        return cls(outcome(err).http, str(err), retry)


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
    images: np.ndarray | None = None  # the resized inputs, when a heatmap is drawn over them (else not sent)


@dataclass
class ScoreResult:
    """An image-anomaly line's answer for one image, with what drawing its heatmap needs."""

    decision: AnomalyDecision
    display_range: tuple[float, float] = (0.0, 1.0)
    timings: dict[str, float] = field(default_factory=dict)
    input_stat: float | None = None
    image: np.ndarray | None = None  # uint8 (3, S, S): the resized input, to draw the heatmap over


@dataclass
class ClassResult:
    """A classifier line's answer for one image (:func:`lineguard.models.decisions.decide`)."""

    decision: ClassDecision
    timings: dict[str, float] = field(default_factory=dict)
    input_stat: float | None = None


Scored = ScoreResult | ClassResult | ItemError


@dataclass
class VectorScores:
    """A sensor line's answer for ``B`` readings: the columnar scores, the threshold and timings."""

    out: SensorScores
    threshold: float
    score_ms: float = 0.0  # the forward pass, in the SensorScorer
    hop_ms: float = 0.0  # the round trip to the SensorScorer, seen from the ingress


@dataclass
class StreamScores:
    """What a shard answers for one request: the scores, the alarm flag per reading, the events, timings."""

    out: SensorScores
    threshold: float
    alarm: np.ndarray
    events: list[AlarmEvent]
    window: int
    score_ms: float
    seen: int = 0  # the stream's readings so far, these included (the alarm events count readings on it)
    since: int = 0  # readings the stream's alarm has lasted, when active
