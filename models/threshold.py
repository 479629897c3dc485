"""Decision thresholds: from normal data alone, or from labelled validation data.

A line usually has no defective samples when it is fitted, so the normal-only path is the main one:
the threshold is set so that about ``over_detection_rate`` of normal parts would be flagged, using
held-out normal images the model did not see while fitting.

- With enough held-out normals (``n * rate >= 1``) the threshold is the conformal quantile: the
  ``ceil((n + 1)(1 - rate))``-th smallest score, which keeps the over-detection rate of a new normal
  part at or below ``rate`` (Vovk et al., "Algorithmic Learning in a Random World", 2005).
- With fewer, no data can show a rate that low; the threshold is the largest held-out normal score,
  the strictest quantile the data supports (expected rate about ``1 / (n + 1)``), and the card says so.
  Extrapolating a parametric tail from a handful of scores was tried and overshot badly (a log-normal
  fit to 8 battery_weld scores put the threshold above every defective part).

Labelled data (normal and defective) can instead target a miss rate, an over-detection rate, or the
best F1. Without any defective sample those fall back to the normal-only rule: anomalib's F1-adaptive
threshold flags everything in that case (its issues #2433, #3357), this one never does.

Every threshold keeps ``reference``, the median normal score, so a score can be shown normalised:
0 = a typical normal part, 1.0 = at the threshold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lineguard.errors import ConfigError, DataError
from lineguard.models.tail import pot_threshold
from lineguard_edge.decisions import Threshold

__all__ = ["OBJECTIVES", "Threshold", "from_labelled", "from_normal_scores"]

OBJECTIVES = ("over_detection_rate", "miss_rate", "f1")


def _clean(scores: Any, what: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).ravel()
    if array.size == 0:
        raise DataError(f"no {what} scores to calibrate on: hold out at least one normal image")
    if not np.isfinite(array).all():
        raise DataError(f"{what} scores contain NaN or infinity: the model produced invalid scores")
    return array


MIN_TAIL_COUNT = 10  # held-out scores expected above a quantile before it is read off the data


def from_normal_scores(scores: Any, over_detection_rate: float = 0.01, tail: str = "max") -> Threshold:
    """Threshold from held-out normal scores alone, targeting ``over_detection_rate``.

    ``tail``: what to do with too few scores for the conformal quantile. ``max`` (image lines: a handful of
    held-out images): the largest score. ``pot`` (sensor lines: hundreds of readings, still too few when fewer
    than ``MIN_TAIL_COUNT`` would lie above the threshold): a generalised Pareto fit of the tail above the 90th
    percentile, peaks over threshold as in SPOT (:mod:`lineguard.models.tail`)."""
    if tail not in ("max", "pot"):
        raise ConfigError(f"tail {tail!r} is not one of max, pot")
    if not 0 < over_detection_rate < 1:
        raise ConfigError(f"over_detection_rate must be in (0, 1), got {over_detection_rate}")
    normal = np.sort(_clean(scores, "normal"))
    n = normal.size
    reference = float(np.median(normal))
    rank = math.ceil((n + 1) * (1 - over_detection_rate))
    fit = None
    if tail == "pot" and n * over_detection_rate < MIN_TAIL_COUNT and n >= 20:
        fit = pot_threshold(normal, over_detection_rate)
        value = fit.value
        method = (
            f"{fit.method} ({n} held-out scores: {n * over_detection_rate:.1f} expected above a "
            f"{over_detection_rate:.1%} threshold, too few to read it off them)"
        )
    elif rank <= n:
        value, method = float(normal[rank - 1]), "normal_conformal_quantile"
    else:
        value, method = float(normal[-1]), "normal_max (too few normals for the target rate)"
    if value <= reference:  # all held-out scores equal: put the threshold just above them
        value = reference + max(1e-6, abs(reference) * 1e-3)
    return Threshold(
        value=value,
        method=method,
        reference=reference,
        target=over_detection_rate,
        details={
            "n_normal": int(n),
            "n_defect": 0,
            "normal_max": float(normal[-1]),
            "expected_over_detection_rate": over_detection_rate if fit else max(over_detection_rate, 1 / (n + 1)),
            **(
                {"tail": {"initial": fit.initial, "peaks": fit.n_peaks, "shape": fit.shape, "scale": fit.scale}}
                if fit
                else {}
            ),
        },
    )


def from_labelled(
    scores: Any,
    labels: Any,
    objective: str = "f1",
    target: float | None = None,
    fallback_over_detection_rate: float = 0.01,
) -> Threshold:
    """Threshold from labelled scores (label 1 = defective).

    objective: "over_detection_rate" (needs ``target``), "miss_rate" (needs ``target``) or "f1".
    Without defective samples this is :func:`from_normal_scores` at ``fallback_over_detection_rate``.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r} is not one of {OBJECTIVES}")
    if objective != "f1" and (target is None or not 0 <= target < 1):
        raise ConfigError(f"objective {objective!r} needs a target rate in [0, 1), got {target}")
    values = _clean(scores, "labelled")
    y = np.asarray(labels).astype(bool).ravel()
    if y.size != values.size:
        raise DataError(f"{values.size} scores but {y.size} labels")
    normal, defect = np.sort(values[~y]), np.sort(values[y])
    if normal.size == 0:
        raise DataError("labelled calibration needs at least one normal sample")
    if defect.size == 0:
        fallback = from_normal_scores(normal, fallback_over_detection_rate)
        return Threshold(
            fallback.value,
            fallback.method + " (no defective samples)",
            fallback.reference,
            fallback.target,
            fallback.details,
        )
    reference = float(np.median(normal))
    candidates = _candidate_thresholds(values)
    if objective == "over_detection_rate":
        assert target is not None
        over = np.array([(normal > t).mean() for t in candidates])
        value = float(candidates[np.argmax(over <= target)])
    elif objective == "miss_rate":
        assert target is not None
        miss = np.array([(defect <= t).mean() for t in candidates])
        value = float(candidates[np.nonzero(miss <= target)[0].max()])
    else:
        tp = np.array([(defect > t).sum() for t in candidates])
        fp = np.array([(normal > t).sum() for t in candidates])
        f1 = 2 * tp / np.maximum(2 * tp + fp + (defect.size - tp), 1)
        value = float(candidates[len(f1) - 1 - np.argmax(f1[::-1])])  # ties -> the highest threshold
    return Threshold(
        value=value,
        method=f"labelled_{objective}",
        reference=reference,
        target=target,
        details={
            "n_normal": int(normal.size),
            "n_defect": int(defect.size),
            "miss_rate": float((defect <= value).mean()),
            "over_detection_rate": float((normal > value).mean()),
        },
    )


def _candidate_thresholds(values: np.ndarray) -> np.ndarray:
    """Midpoints between distinct scores, plus one below the smallest and one at the largest (sorted)."""
    unique = np.unique(values)
    mids = (unique[:-1] + unique[1:]) / 2
    return np.concatenate([[unique[0] - 1e-6 * max(1.0, abs(unique[0]))], mids, [unique[-1]]])
