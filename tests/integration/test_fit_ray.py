"""Fitting with Ray Data (an actor pool) gives the same model as fitting in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import FitOptions, fit_image_line

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("calibration", ["holdout", "crossfit"])
def test_actor_pool_fit_matches_in_process(
    ray_session: None, synthetic_line: Path, tmp_path: Path, calibration: str
) -> None:
    options = {
        "image_size": 128,
        "head_params": {"bank_size": 1024},
        "calibration": calibration,
        "progress": False,
    }
    local = fit_image_line("surface", synthetic_line, FitOptions(**options, workers=0), ModelStore(tmp_path / "a"))
    pooled = fit_image_line("surface", synthetic_line, FitOptions(**options, workers=2), ModelStore(tmp_path / "b"))
    assert local.card.metrics is not None and pooled.card.metrics is not None
    assert pooled.card.data is not None and pooled.card.data.n_calibration == local.card.data.n_calibration  # type: ignore[union-attr]
    assert pooled.card.metrics["image_auroc"] == pytest.approx(local.card.metrics["image_auroc"], abs=0.02)
    assert pooled.card.threshold["value"] == pytest.approx(local.card.threshold["value"], rel=0.02)
