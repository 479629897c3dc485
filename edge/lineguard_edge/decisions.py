"""What a line decides about one part, as plain data (NumPy; no torch, so light processes and the edge
runtime hold it): the threshold, the anomaly decision, the classifier's rule and its severity levels.

An anomaly line's decision is its score against the threshold (:class:`AnomalyDecision`, made by
:class:`lineguard.models.scoring.AnomalyScorer`). A classifier line decides on calibrated class
probabilities (:func:`decide`).

For lines with a *normal* class (``good``, say) the decision is made on the **defect confidence**
``1 - p(normal)``: a part is defective when that is above the line's threshold (0.5 by default, moved
like an anomaly line's threshold), and then it is the most likely defect class. Severity levels are
rules on the same number (``>= 0.9`` high, ``>= 0.6`` low, else none), for defective parts (a part
passed as good has severity none). Without a normal class the likeliest class is answered, with no
severity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lineguard_edge.errors import ConfigError


@dataclass(frozen=True)
class Threshold:
    """A line's decision threshold: scores above ``value`` are anomalies; ``reference`` is the median
    normal score (0 on the normalised scale); ``method``, ``target`` and ``details`` say how it was set."""

    value: float
    method: str
    reference: float
    target: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or not math.isfinite(self.reference):
            raise ConfigError(f"threshold and reference must be finite numbers, got {self.value} and {self.reference}")

    def normalize(self, score: float) -> float:
        """0 = typical normal part, 1.0 = at the threshold (never below 0)."""
        span = self.value - self.reference
        if span <= 0:
            return 1.0 if score >= self.value else 0.0
        return max(0.0, (score - self.reference) / span)

    def is_anomaly(self, score: float) -> bool:
        return score > self.value

    def with_value(self, value: float, method: str = "manual", **details: Any) -> Threshold:
        return Threshold(value=float(value), method=method, reference=self.reference, target=None, details=details)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threshold:
        return cls(**data)


@dataclass
class AnomalyDecision:
    """One image's answer. ``anomaly_map``: smoothed ``(h, w)`` patch scores, raw units, when asked for."""

    anomaly_score: float
    threshold: float
    normalized_score: float
    is_anomaly: bool
    anomaly_map: np.ndarray | None = None


@dataclass(frozen=True)
class SeverityRules:
    """Severity levels on the defect confidence, strictest first: ``(("high", 0.9), ("low", 0.6))``
    means >= 0.9 is high, >= 0.6 low, and anything lower is ``none``."""

    levels: tuple[tuple[str, float], ...] = (("high", 0.9), ("low", 0.6))

    def __post_init__(self) -> None:
        names = [name for name, _ in self.levels]
        bounds = [bound for _, bound in self.levels]
        if not self.levels:
            raise ConfigError("give at least one severity level, e.g. high=0.9,low=0.6")
        if len(set(names)) != len(names) or any(not n or n == "none" or len(n) > 32 for n in names):
            raise ConfigError(f"severity levels need distinct names of 1-32 characters other than 'none', got {names}")
        if any(not (isinstance(b, int | float) and 0 < b <= 1) for b in bounds):
            raise ConfigError(f"severity bounds are defect confidences in (0, 1], got {bounds}")
        if bounds != sorted(bounds, reverse=True) or len(set(bounds)) != len(bounds):
            raise ConfigError(
                f"severity bounds must be distinct and strictest first, e.g. high 0.9, low 0.6; got {bounds}"
            )

    def level(self, defect_confidence: float) -> str:
        for name, bound in self.levels:
            if defect_confidence >= bound:
                return name
        return "none"

    def to_dict(self) -> dict[str, float]:
        return {name: float(bound) for name, bound in self.levels}

    @classmethod
    def from_dict(cls, rules: Mapping[str, float]) -> SeverityRules:
        """``{"high": 0.9, "low": 0.6}`` in any order."""
        return cls(tuple(sorted(((str(k), float(v)) for k, v in rules.items()), key=lambda kv: -kv[1])))


@dataclass
class ClassDecision:
    """One image's answer: the class, its probability, every class's probability, defect confidence
    (``1 - p(normal)``, None without a normal class) and severity (None without a normal class)."""

    index: int
    confidence: float
    probabilities: np.ndarray
    defect_confidence: float | None
    severity: str | None


def decide(
    probabilities: np.ndarray, normal_index: int | None, threshold: float, severity: SeverityRules
) -> list[ClassDecision]:
    """Decisions for ``(B, K)`` probabilities (see the module docstring for the rule)."""
    out = []
    for p in probabilities:
        if normal_index is None:
            index = int(np.argmax(p))
            out.append(ClassDecision(index, float(p[index]), p, None, None))
            continue
        defect = float(1.0 - p[normal_index])
        if defect > threshold:
            masked = p.copy()
            masked[normal_index] = -1.0
            index = int(np.argmax(masked))
            level = severity.level(defect)
        else:  # a part passed as good has no severity, whatever the rules say of its defect confidence
            index, level = normal_index, "none"
        out.append(ClassDecision(index, float(p[index]), p, defect, level))
    return out
