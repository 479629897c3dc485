"""Thresholds from normal data alone and from labelled data; never 'everything is anomalous'."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.models.threshold import Threshold, from_labelled, from_normal_scores


def test_conformal_quantile_keeps_the_over_detection_rate() -> None:
    rng = np.random.default_rng(0)
    calibration = rng.lognormal(0, 0.3, 500)
    threshold = from_normal_scores(calibration, over_detection_rate=0.02)
    assert threshold.method == "normal_conformal_quantile"
    fresh = rng.lognormal(0, 0.3, 200_000)
    assert (fresh > threshold.value).mean() <= 0.025
    assert threshold.reference == pytest.approx(np.median(calibration))


def test_few_normals_take_the_largest_and_say_so() -> None:
    threshold = from_normal_scores([1.0, 1.2, 0.9, 1.1, 1.4], over_detection_rate=0.01)
    assert threshold.value == 1.4
    assert "too few normals" in threshold.method
    assert threshold.details["expected_over_detection_rate"] == pytest.approx(1 / 6)
    assert not threshold.is_anomaly(1.4) and threshold.is_anomaly(1.41)


def test_normalised_score() -> None:
    threshold = Threshold(value=2.0, method="m", reference=1.0)
    assert threshold.normalize(1.0) == 0.0
    assert threshold.normalize(2.0) == 1.0
    assert threshold.normalize(3.0) == 2.0
    assert threshold.normalize(0.5) == 0.0


def test_labelled_targets() -> None:
    normal = np.linspace(0, 1, 101)
    defect = np.linspace(0.8, 2, 50)
    scores = np.concatenate([normal, defect])
    labels = np.concatenate([np.zeros(101), np.ones(50)])
    by_miss = from_labelled(scores, labels, "miss_rate", 0.0)
    assert (defect > by_miss.value).all() and by_miss.details["miss_rate"] == 0.0
    by_over = from_labelled(scores, labels, "over_detection_rate", 0.05)
    assert (normal > by_over.value).mean() <= 0.05
    assert by_over.details["over_detection_rate"] <= 0.05
    best = from_labelled(scores, labels, "f1")
    assert 0.8 <= best.value <= 1.0


def test_no_defects_falls_back_to_normal_data_not_to_flag_everything() -> None:
    normal = np.random.default_rng(1).normal(1, 0.1, 300)
    threshold = from_labelled(normal, np.zeros(300), "f1")
    assert (normal > threshold.value).mean() <= 0.02
    assert "no defective samples" in threshold.method


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="no normal scores"):
        from_normal_scores([])
    with pytest.raises(ValueError, match="NaN or infinity"):
        from_normal_scores([1.0, float("nan")])
    with pytest.raises(ValueError, match="over_detection_rate must be in"):
        from_normal_scores([1.0], over_detection_rate=1.5)
    with pytest.raises(ValueError, match="needs a target rate"):
        from_labelled([1, 2], [0, 1], "miss_rate")
    assert Threshold.from_dict(Threshold(1.0, "m", 0.5).to_dict()) == Threshold(1.0, "m", 0.5)
