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


def expected_calibration_error(probabilities: Any, labels: Any, bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over ``bins`` equal-width confidence bins
    weighted by their share of the samples (Guo et al. 2017). 0 = perfectly calibrated."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if len(y) == 0:
        return math.nan
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            gap += chosen.mean() * abs(float(correct[chosen].mean()) - float(confidence[chosen].mean()))
    return float(gap)


def class_metrics(labels: Any, predicted: Any, probabilities: Any, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / F1, the confusion matrix (rows = true class, columns =
    predicted), ROC AUC (two classes: of the second class; more: the macro one-vs-rest mean) and ECE."""
    y = np.asarray(labels).ravel().astype(np.int64)
    pred = np.asarray(predicted).ravel().astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    per_class: dict[str, Any] = {}
    for i, name in enumerate(classes):
        tp, support, flagged = int(matrix[i, i]), int(matrix[i].sum()), int(matrix[:, i].sum())
        precision = tp / flagged if flagged else math.nan
        recall = tp / support if support else math.nan
        f1 = 2 * tp / (support + flagged) if support + flagged else math.nan
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    if k == 2:
        auroc = roc_auc(y == 1, p[:, 1])
    else:
        aucs = [roc_auc(y == i, p[:, i]) for i in range(k)]
        finite = [a for a in aucs if not math.isnan(a)]
        auroc = float(np.mean(finite)) if finite else math.nan
    return {
        "accuracy": float((y == pred).mean()) if len(y) else math.nan,
        "roc_auc": auroc,
        "per_class": per_class,
        "confusion_matrix": {"classes": list(classes), "rows_true_columns_predicted": matrix.tolist()},
        "ece": expected_calibration_error(p, y),
        "n": len(y),
    }
