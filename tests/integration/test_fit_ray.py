"""Fitting with Ray Data (an actor pool) gives the same model as fitting in this process."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import pytest

from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions


@pytest.mark.parametrize("calibration", ["holdout", "crossfit"])
def test_actor_pool_fit_matches_in_process(
    ray_session: None, synthetic_line: Path, tmp_path: Path, calibration: Literal["holdout", "crossfit"]
) -> None:
    options = FitOptions(image_size=128, head_params={"bank_size": 1024}, calibration=calibration, progress=False)
    local = fit_image_line("surface", synthetic_line, replace(options, workers=0), ModelStore(tmp_path / "a")).card
    pooled = fit_image_line("surface", synthetic_line, replace(options, workers=2), ModelStore(tmp_path / "b")).card
    assert local.data is not None and pooled.data is not None
    assert pooled.data.n_calibration == local.data.n_calibration
    assert local.metrics is not None and pooled.metrics is not None
    assert local.metrics.image_auroc is not None
    assert pooled.metrics.image_auroc == pytest.approx(local.metrics.image_auroc, abs=0.02)
    assert pooled.threshold.value == pytest.approx(local.threshold.value, rel=0.02)
