"""Real lines: fit and evaluate on the shared defect data sets (skipped where they are absent)."""

from __future__ import annotations

import pytest

from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions
from tests.support import shared_dataset


def test_battery_weld_line(store: ModelStore) -> None:
    """Default settings. Benchmark figure: image AUROC 0.990 (anomalib 2.7 PatchCore: 0.981)."""
    data = shared_dataset("battery_weld/welding")
    report = fit_image_line("battery-weld", data, FitOptions(progress=False), store)
    metrics = report.card.metrics
    assert metrics is not None
    assert (metrics.image_auroc or 0) >= 0.975, metrics.image_auroc
    assert (metrics.pixel_auroc or 0) >= 0.87, metrics.pixel_auroc
    assert metrics.n_normal == 35 and metrics.n_defect == 93
    assert report.card.data is not None and report.card.data.calibration == "crossfit"
    assert report.card.threshold.value > report.card.threshold.reference


@pytest.mark.slow
def test_magnetic_tile_line(store: ModelStore) -> None:
    """Default settings. Benchmark figure: image AUROC 0.973, pixel 0.853 (anomalib PaDiM 0.932 / 0.749)."""
    data = shared_dataset("magnetic_tile")
    report = fit_image_line("magnetic-tile", data, FitOptions(progress=False), store)
    metrics = report.card.metrics
    assert metrics is not None
    assert (metrics.image_auroc or 0) >= 0.96 and (metrics.pixel_auroc or 0) >= 0.84, metrics
    assert report.timings["total"] < 120
