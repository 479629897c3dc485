"""What operators' feedback says about a line: confusion counts, miss and over-detection rates, and the
threshold that would meet a target rate on the labelled parts.

A *miss* is a defective part the line passed (a false negative); an *over-detection* is a good part it
flagged (a false positive). ``flagged`` is the line's decision, ``defective`` the operator's label; a part
is flagged when its score is above the threshold (``score > t``, as everywhere in LineGuard).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lineguard.errors import ConfigError, DataError
from lineguard.models.metrics import Confusion


def labelled_rates(scores: np.ndarray, defective: np.ndarray, threshold: float) -> dict[str, Any]:
    """Confusion counts and rates that ``threshold`` gives on labelled scores (flagged: ``score > t``)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    d = np.asarray(defective, dtype=bool).ravel()
    counts = Confusion.of(d, s > threshold).to_dict()
    return {"n": int(s.size), "defective": int(d.sum()), "good": int((~d).sum()), **counts}


def score_range(scores: np.ndarray, threshold: float, margin: float = 0.05) -> dict[str, float]:
    """Bounds for a threshold slider: the finite scores and the threshold, with a margin either side."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    low = min(threshold, float(s.min())) if s.size else threshold
    high = max(threshold, float(s.max())) if s.size else threshold
    pad = (high - low) * margin or max(abs(threshold) * margin, 1e-6)
    return {"min": low - pad, "max": high + pad}


def percentiles(values: np.ndarray, qs: tuple[float, ...] = (50, 90, 95, 99)) -> dict[str, float | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return {f"p{q:g}": (float(np.percentile(v, q)) if v.size else None) for q in qs}


@dataclass(frozen=True)
class Suggestion:
    threshold: float | None
    target: str
    target_rate: float
    miss_rate: float | None  # on the labelled parts, at the suggested threshold
    over_detection_rate: float | None
    n_defective: int
    n_good: int
    reliable: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _between(lower: float | None, upper: float) -> float:
    """A threshold just below ``upper`` with a margin: halfway to the next lower score when there is one."""
    if lower is None or not lower < upper:
        return float(np.nextafter(upper, -math.inf))
    return float(lower + (upper - lower) / 2)


def suggest_threshold(
    scores: np.ndarray,
    defective: np.ndarray,
    *,
    target_miss_rate: float | None = None,
    target_over_detection_rate: float | None = None,
    min_labels: int = 10,
) -> Suggestion:
    """The threshold that meets one target rate on the labelled parts, as strict as that allows.

    For a miss-rate target ``m`` with ``D`` defective scores: at most ``floor(m * D)`` of them may fall at
    or below the threshold, and the threshold is the highest that keeps it so (the fewest over-detections).
    For an over-detection target ``r`` with ``G`` good scores: at most ``floor(r * G)`` good parts above it,
    and the threshold is the lowest that keeps it so (the fewest misses). The threshold sits halfway to the
    neighbouring labelled score, not on a score, so one new part does not flip.
    """
    if (target_miss_rate is None) == (target_over_detection_rate is None):
        raise ConfigError("give exactly one of target_miss_rate and target_over_detection_rate")
    target, rate = (
        ("miss_rate", float(target_miss_rate))
        if target_miss_rate is not None
        else ("over_detection_rate", float(target_over_detection_rate))  # type: ignore[arg-type]
    )
    if not 0 <= rate < 1:
        raise ConfigError(f"{target} must be in [0, 1), got {rate}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    d = np.asarray(defective, dtype=bool).ravel()
    if s.shape != d.shape:
        raise DataError(f"{s.size} scores but {d.size} labels")
    bad, good = np.sort(s[d]), np.sort(s[~d])
    needed = bad if target == "miss_rate" else good
    kind = "defective" if target == "miss_rate" else "good"
    if needed.size == 0:
        reason = f"no part labelled {kind} yet: a {target} target needs {kind} parts in the feedback"
        return Suggestion(None, target, rate, None, None, int(bad.size), int(good.size), False, reason)
    if target == "miss_rate":
        allowed = math.floor(rate * bad.size)
        upper = float(bad[allowed])  # the lowest defective score that must stay above the threshold
        below = s[s < upper]
        threshold = _between(float(below.max()) if below.size else None, upper)
    else:
        allowed = math.floor(rate * good.size)
        lower = float(good[good.size - 1 - allowed])  # the highest good score that must stay at or below it
        above = s[s > lower]
        threshold = lower if not above.size else _between(lower, float(above.min()))
    flagged = s > threshold
    c = Confusion.of(d, flagged)
    reliable = int(needed.size) >= min_labels
    reason = f"{target} {rate:g} allows {allowed} of {needed.size} {kind} parts on the wrong side" + (
        "" if reliable else f"; only {needed.size} {kind} labels (fewer than {min_labels}): treat as a rough guide"
    )
    return Suggestion(
        threshold, target, rate, c.miss_rate, c.over_detection_rate, int(bad.size), int(good.size), reliable, reason
    )
