"""A sensor reading's answer from its per-feature squared errors: the score, the decision, the normalised
score and the features that carry the error. The service's NumPy AutoEncoder and the edge runtime's graph
both end here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lineguard_edge.decisions import Threshold
from lineguard_edge.errors import DataError


@dataclass
class ErrorSummary:
    """``scores``, ``is_anomaly``, ``normalized`` ``(B,)``; ``top_index`` / ``top_share`` ``(B, k)``: the
    features that contribute most to each reading's error, largest first, and their share of it."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    normalized: np.ndarray
    top_index: np.ndarray
    top_share: np.ndarray


def summarise_errors(errors: np.ndarray, threshold: Threshold, top_k: int) -> ErrorSummary:
    """``errors``: ``(B, n)`` squared errors of the standardised readings (float64)."""
    scores = errors.mean(1)
    if not np.isfinite(scores).all():
        raise DataError("a reading is too far outside what this line was fitted on to be scored")
    n = errors.shape[1]
    k = max(1, min(top_k, n))
    shares = errors / np.maximum(errors.sum(1, keepdims=True), 1e-12)
    top = np.argpartition(-shares, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(k), (len(shares), 1))
    top_share = np.take_along_axis(shares, top, 1)
    order = np.argsort(-top_share, axis=1, kind="stable")
    span = threshold.value - threshold.reference
    normalized = (
        np.maximum(0.0, (scores - threshold.reference) / span) if span > 0 else (scores >= threshold.value) * 1.0
    )
    return ErrorSummary(
        scores=scores,
        is_anomaly=scores > threshold.value,
        normalized=normalized,
        top_index=np.take_along_axis(top, order, 1),
        top_share=np.take_along_axis(top_share, order, 1),
    )
