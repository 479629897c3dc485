"""The line scorer: aggregation, calibration, predictions and state round-trips."""

from __future__ import annotations

import pytest
import torch

from lineguard.errors import CorruptModelError, NotFittedError
from lineguard.models.heads import build_head
from lineguard.models.postprocess import gaussian_blur, upsample
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.threshold import Threshold
from tests.support import normal_features, with_defect


def fitted_scorer(aggregation: str = "local_global") -> AnomalyScorer:
    scorer = AnomalyScorer(build_head("patchcore", bank_size=512), aggregation=aggregation)
    scorer.head.plan(40)
    scorer.head.fit([normal_features(40, seed=1)])
    maps, _ = scorer.anomaly_maps(normal_features(10, seed=2))
    scorer.calibrate_aggregation(maps)
    scorer.threshold = Threshold(1.5, "test", reference=1.0)
    return scorer


def test_local_global_is_relative_to_normal_parts() -> None:
    scorer = fitted_scorer()
    _, normal = scorer.maps_and_scores(normal_features(6, seed=3))
    _, defect = scorer.maps_and_scores(with_defect(normal_features(6, seed=3)))
    assert 0.7 < float(normal.median()) < 1.3  # ~1.0 for a typical normal part
    assert (defect > normal.max()).all()


def test_local_global_needs_calibration() -> None:
    scorer = AnomalyScorer(build_head("patchcore", bank_size=64))
    scorer.head.fit([normal_features(8)])
    with pytest.raises(NotFittedError, match="not calibrated"):
        scorer.maps_and_scores(normal_features(1))
    scorer.aggregation = "max"
    assert scorer.maps_and_scores(normal_features(1))[1].shape == (1,)


def test_predictions_carry_score_threshold_and_decision() -> None:
    scorer = fitted_scorer()
    normal, defect = (
        scorer.predict(normal_features(1, seed=4), with_maps=True)[0],
        scorer.predict(with_defect(normal_features(1, seed=4)))[0],
    )
    assert normal.threshold == defect.threshold == 1.5
    assert not normal.is_anomaly and defect.is_anomaly
    assert defect.normalized_score > 1.0 > normal.normalized_score
    assert normal.anomaly_map is not None and normal.anomaly_map.shape == (16, 16)
    low, high = scorer.display_range()
    assert high == pytest.approx(1.5 * float(scorer.local_ref)) and low < high


def test_no_threshold_no_prediction() -> None:
    scorer = fitted_scorer()
    scorer.threshold = None
    with pytest.raises(NotFittedError, match="no threshold"):
        scorer.predict(normal_features(1))


def test_state_round_trip() -> None:
    scorer = fitted_scorer()
    clone = AnomalyScorer.build("patchcore", scorer.head.params(), scorer.params())
    clone.load_fitted_state(scorer.fitted_state())
    probe = with_defect(normal_features(3, seed=8))
    assert torch.allclose(scorer.maps_and_scores(probe)[1], clone.maps_and_scores(probe)[1])
    with pytest.raises(CorruptModelError, match=r"lacks scorer\.local_ref"):
        clone.load_fitted_state({k: v for k, v in scorer.fitted_state().items() if k != "scorer.local_ref"})


def test_blur_and_upsample() -> None:
    flat = torch.full((2, 8, 8), 3.0)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    spike = torch.zeros(1, 9, 9)
    spike[0, 4, 4] = 1
    blurred = gaussian_blur(spike, 1.0)
    assert torch.allclose(blurred, blurred.flip(-1)) and float(blurred.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(gaussian_blur(spike, 0), spike)
    assert upsample(spike, (18, 18)).shape == (1, 18, 18)
