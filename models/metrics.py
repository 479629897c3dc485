"""Evaluation metrics: AUROC (image and pixel), confusion counts with the miss and over-detection rates,
and a classifier's per-class report.

Vocabulary of the factory floor: a *miss* is a defective part passed as good (a false negative), an
*over-detection* is a good part flagged (a false positive). Label 1 = defective; a part is flagged when
its score is above the threshold (``score > t``, as everywhere in LineGuard). A rate or an AUROC that
the data cannot define (no defective part, one class only) is ``None``, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lineguard.errors import DataError
from lineguard.models.calibration import expected_calibration_error


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


@dataclass(frozen=True)
class Confusion:
    """Counts over labelled parts, and the rates they give (None where a rate has no parts to count)."""

    true_positive: int = 0  # defective and flagged
    false_negative: int = 0  # defective and passed: misses
    false_positive: int = 0  # good and flagged: over-detections
    true_negative: int = 0  # good and passed

    @classmethod
    def of(cls, defective: Any, flagged: Any) -> Confusion:
        """From boolean arrays of one length: the part's label and the line's decision."""
        d = np.asarray(defective, dtype=bool).ravel()
        f = np.asarray(flagged, dtype=bool).ravel()
        if f.shape != d.shape:
            raise DataError(f"{f.size} decisions but {d.size} labels")
        return cls(int(np.sum(f & d)), int(np.sum(~f & d)), int(np.sum(f & ~d)), int(np.sum(~f & ~d)))

    @classmethod
    def at(cls, labels: Any, scores: Any, threshold: float) -> Confusion:
        """The counts ``threshold`` gives on labelled scores."""
        return cls.of(np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64) > threshold)

    @property
    def miss_rate(self) -> float | None:
        return _ratio(self.false_negative, self.true_positive + self.false_negative)

    @property
    def over_detection_rate(self) -> float | None:
        return _ratio(self.false_positive, self.false_positive + self.true_negative)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_positive, self.true_positive + self.false_positive)

    @property
    def recall(self) -> float | None:
        return _ratio(self.true_positive, self.true_positive + self.false_negative)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.true_positive, 2 * self.true_positive + self.false_positive + self.false_negative)

    @property
    def accuracy(self) -> float | None:
        right = self.true_positive + self.true_negative
        return _ratio(right, right + self.false_positive + self.false_negative)

    def to_dict(self) -> dict[str, Any]:
        """The counts with the two rates of the floor, as the HTTP reports show them."""
        return {**asdict(self), "miss_rate": self.miss_rate, "over_detection_rate": self.over_detection_rate}


def roc_auc(labels: Any, scores: Any) -> float | None:
    """Area under the ROC curve, ties handled as sklearn does; None when only one class is present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size != s.size:
        raise DataError(f"{y.size} labels but {s.size} scores")
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.nonzero(np.diff(s))[0]
    ends = np.concatenate([distinct, [y.size - 1]])  # last index of each group of equal scores
    tps = np.cumsum(y)[ends]
    fps = ends + 1 - tps
    tpr = np.concatenate([[0.0], tps / positives])
    fpr = np.concatenate([[0.0], fps / negatives])
    return float(np.trapezoid(tpr, fpr))


def pixel_roc_auc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float | None:
    """AUROC over all pixels of all images: ``masks`` boolean and ``maps`` float, pairwise the same shape."""
    if len(masks) != len(maps):
        raise DataError(f"{len(masks)} masks but {len(maps)} anomaly maps")
    if not masks:
        return None
    for mask, amap in zip(masks, maps, strict=True):
        if mask.shape != amap.shape:
            raise DataError(f"mask shape {mask.shape} differs from anomaly map shape {amap.shape}")
    labels = np.concatenate([m.ravel() for m in masks])
    values = np.concatenate([a.ravel().astype(np.float32) for a in maps])
    return roc_auc(labels, values)


@dataclass(frozen=True)
class ClassScore:
    """One class of a classifier's evaluation (None where the class was never answered or never present)."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class ConfusionMatrix:
    classes: list[str]
    rows_true_columns_predicted: list[list[int]]


@dataclass(frozen=True)
class ClassReport:
    """A classifier on labelled images: accuracy, per-class scores, the confusion matrix, ROC AUC (two
    classes: of the second class; more: the macro one-vs-rest mean) and the calibration error (ECE)."""

    accuracy: float | None
    roc_auc: float | None
    per_class: dict[str, ClassScore]
    confusion_matrix: ConfusionMatrix
    ece: float | None
    n: int


def class_metrics(labels: Any, predicted: Any, probabilities: Any, classes: Sequence[str]) -> ClassReport:
    y = np.asarray(labels).ravel().astype(np.int64)
    pred = np.asarray(predicted).ravel().astype(np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    per_class: dict[str, ClassScore] = {}
    for i, name in enumerate(classes):
        tp, support, flagged = int(matrix[i, i]), int(matrix[i].sum()), int(matrix[:, i].sum())
        f1 = _ratio(2 * tp, support + flagged)
        per_class[name] = ClassScore(_ratio(tp, flagged), _ratio(tp, support), f1, support)
    if k == 2:
        auroc = roc_auc(y == 1, p[:, 1])
    else:
        defined = [a for a in (roc_auc(y == i, p[:, i]) for i in range(k)) if a is not None]
        auroc = float(np.mean(defined)) if defined else None
    return ClassReport(
        accuracy=float((y == pred).mean()) if len(y) else None,
        roc_auc=auroc,
        per_class=per_class,
        confusion_matrix=ConfusionMatrix(list(classes), matrix.tolist()),
        ece=expected_calibration_error(p, y),
        n=len(y),
    )
