"""Evaluation metrics: AUROC (image and pixel), F1, miss and over-detection rates, confusion counts.

Vocabulary of the factory floor: a *miss* is a defective part passed as good (a false negative), an
*over-detection* is a good part flagged (a false positive). Label 1 = defective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve, ties handled as sklearn does; NaN when only one class is present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size != s.size:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.nonzero(np.diff(s))[0]
    ends = np.concatenate([distinct, [y.size - 1]])  # last index of each group of equal scores
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    tpr = np.concatenate([[0.0], tps / positives])
    fpr = np.concatenate([[0.0], fps / negatives])
    return float(np.trapezoid(tpr, fpr))


def pixel_roc_auc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    """AUROC over all pixels of all images: ``masks`` boolean and ``maps`` float, pairwise the same shape."""
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} anomaly maps")
    if not masks:
        return math.nan
    for mask, amap in zip(masks, maps, strict=True):
        if mask.shape != amap.shape:
            raise ValueError(f"mask shape {mask.shape} differs from anomaly map shape {amap.shape}")
    labels = np.concatenate([m.ravel() for m in masks])
    values = np.concatenate([a.ravel().astype(np.float32) for a in maps])
    return roc_auc(labels, values)


def confusion(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    """Counts at ``threshold`` (a score above it is flagged as defective)."""
    y = np.asarray(labels).astype(bool).ravel()
    flagged = np.asarray(scores, dtype=np.float64).ravel() > threshold
    return {
        "true_positive": int((flagged & y).sum()),
        "false_positive": int((flagged & ~y).sum()),
        "true_negative": int((~flagged & ~y).sum()),
        "false_negative": int((~flagged & y).sum()),
    }


def rates(counts: dict[str, int]) -> dict[str, float]:
    """Miss rate, over-detection rate, precision, recall, F1 and accuracy from confusion counts."""
    tp, fp = counts["true_positive"], counts["false_positive"]
    tn, fn = counts["true_negative"], counts["false_negative"]

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "miss_rate": ratio(fn, tp + fn),
        "over_detection_rate": ratio(fp, fp + tn),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
    }


def image_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Everything reported for an image-level evaluation at one threshold."""
    counts = confusion(labels, scores, threshold)
    y = np.asarray(labels).astype(bool)
    return {
        "image_auroc": roc_auc(labels, scores),
        **rates(counts),
        "confusion": counts,
        "n_normal": int((~y).sum()),
        "n_defect": int(y.sum()),
        "threshold": float(threshold),
    }
