"""Drift measures and feedback rates: known values, the edges, and that each can fail."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.models.drift import DriftRules, assess, psi, worst
from lineguard.models.metrics import Confusion
from lineguard.models.rates import labelled_rates, score_range, suggest_threshold


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, rng.normal(0, 1, 5000)) < 0.01
    small, large = psi(reference, rng.normal(0.3, 1, 5000)), psi(reference, rng.normal(1.0, 1, 5000))
    assert 0.05 < small < 0.25 < large


def test_psi_known_value_on_two_bins() -> None:
    # reference half below 0, half above; recent 80 / 20: PSI = (0.8-0.5)ln(1.6) + (0.2-0.5)ln(0.4)
    reference = np.array([-1.0] * 50 + [1.0] * 50)
    recent = np.array([-1.0] * 80 + [1.0] * 20)
    expected = 0.3 * np.log(1.6) + (-0.3) * np.log(0.4)
    assert psi(reference, recent, bins=2) == pytest.approx(expected, rel=1e-6)


def test_assess_statuses() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 400)
    assert assess(reference, rng.normal(0, 1, 500)).status == "ok"
    shifted = assess(reference, rng.normal(1.5, 1, 500))
    assert shifted.status == "drift" and shifted.psi is not None and shifted.psi > 0.25
    assert shifted.ks_pvalue is not None and shifted.ks_pvalue < 1e-6
    assert assess(reference, rng.normal(0, 1, 10)).status == "insufficient_data"
    assert worst(["ok", "insufficient_data"]) == "ok" and worst(["warning", "drift", "ok"]) == "drift"
    with pytest.raises(ValueError, match="psi_warning"):
        DriftRules(psi_warning=0.3, psi_drift=0.2)


def test_confusion_counts_and_rates() -> None:
    flagged = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    defective = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    c = Confusion.of(defective, flagged)
    assert (c.true_positive, c.false_negative, c.false_positive, c.true_negative) == (2, 1, 1, 2)
    assert c.miss_rate == pytest.approx(1 / 3) and c.over_detection_rate == pytest.approx(1 / 3)
    assert Confusion.of(np.zeros(2, bool), np.zeros(2, bool)).miss_rate is None


def test_threshold_suggestion_meets_its_target_on_the_labels() -> None:
    rng = np.random.default_rng(2)
    good, bad = rng.normal(0, 1, 300), rng.normal(3, 1, 100)
    scores = np.concatenate([good, bad])
    defective = np.r_[np.zeros(300, bool), np.ones(100, bool)]
    for target in (0.0, 0.05, 0.2):
        s = suggest_threshold(scores, defective, target_miss_rate=target)
        assert s.threshold is not None and s.miss_rate is not None and s.miss_rate <= target
        # as strict as allowed: one step higher would miss more than allowed
        assert np.sum(bad <= np.min(bad[bad > s.threshold])) / 100 > target
    for target in (0.0, 0.01, 0.1):
        s = suggest_threshold(scores, defective, target_over_detection_rate=target)
        assert s.over_detection_rate is not None and s.over_detection_rate <= target and s.threshold is not None
        assert np.sum(good >= np.max(good[good <= s.threshold])) / 300 > target
    none = suggest_threshold(good, np.zeros(300, bool), target_miss_rate=0.1)
    assert none.threshold is None and "no part labelled defective" in none.reason
    with pytest.raises(ValueError, match="exactly one"):
        suggest_threshold(scores, defective)


def test_labelled_rates_at_a_threshold() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    defective = np.array([False, False, True, False, True, True])
    at = labelled_rates(scores, defective, 0.5)  # flagged: 0.6, 0.7, 0.9
    assert (at["n"], at["good"], at["defective"]) == (6, 3, 3)
    assert at["miss_rate"] == pytest.approx(1 / 3) and at["over_detection_rate"] == pytest.approx(1 / 3)
    assert labelled_rates(scores, defective, 0.9)["miss_rate"] == 1.0  # score > t flags: 0.9 is not above 0.9
    none = labelled_rates(np.array([]), np.array([], dtype=bool), 0.5)
    assert none["miss_rate"] is None and none["over_detection_rate"] is None


def test_score_range_holds_the_scores_and_the_threshold() -> None:
    span = score_range(np.array([1.0, 2.0, np.nan]), 3.0)
    assert span["min"] < 1.0 and span["max"] > 3.0
    alone = score_range(np.array([]), 0.5)
    assert alone["min"] < 0.5 < alone["max"]
