"""Metrics agree with scikit-learn and speak the floor's language (miss, over-detection)."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from lineguard.models.metrics import Confusion, pixel_roc_auc, roc_auc


def test_auroc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 400)
        scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes many ties
        auroc = roc_auc(labels, scores)
        assert auroc is not None and math.isclose(auroc, roc_auc_score(labels, scores), rel_tol=1e-12)


def test_auroc_edge_cases() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([0, 0], [0.1, 0.2]) is None  # one class: undefined, never NaN


def test_pixel_auroc_pools_all_pixels() -> None:
    masks = [np.zeros((4, 4), bool), np.pad(np.ones((2, 2), bool), 1)]
    maps = [np.zeros((4, 4)), masks[1].astype(float) + 0.1]
    assert pixel_roc_auc(masks, maps) == 1.0


def test_rates_use_factory_words() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.2, 0.95]
    counts = Confusion.at(labels, scores, 0.5)
    assert counts == Confusion(true_positive=3, false_negative=1, false_positive=1, true_negative=3)
    assert counts.miss_rate == 0.25 and counts.over_detection_rate == 0.25
    assert counts.f1 == 0.75 and counts.precision == 0.75 and counts.accuracy == 0.75
    assert Confusion().miss_rate is None and Confusion().f1 is None  # nothing to count: undefined, not NaN
