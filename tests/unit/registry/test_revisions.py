"""Revisions that are not refits: a threshold or severity change is a new version with the parent's tensors,
every rate of its card recomputed, and the change's author recorded."""

from __future__ import annotations

import numpy as np
import pytest

from lineguard.errors import ConfigError
from lineguard.models.threshold import Threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.revisions import set_severity, set_threshold
from lineguard.registry.sections import ClassifierInfo, Evaluation
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import to_bytes


def anomaly_line(store: ModelStore) -> ModelCard:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.2, 0.4, 1.2, 0.9, 1.5, 2.5])
    metrics = Evaluation.of_labelled(labels, scores, 1.0, ["good"] * 3 + ["crack", "crack", "dent"])
    card = ModelCard(line="press-1", kind="image-anomaly", threshold=Threshold(1.0, "m", 0.3), metrics=metrics)
    return store.write_version(card, to_bytes({}))


def test_a_threshold_change_recomputes_every_rate_per_defect_type(store: ModelStore) -> None:
    fitted = anomaly_line(store)
    assert fitted.metrics is not None and fitted.metrics.per_defect_type["crack"].miss_rate == 0.5
    changed = set_threshold(store, "press-1", 0.8, note="more sensitive", actor="key ab12cd34 (ana)")
    assert changed.version == "v2" and changed.parent == "v1" and changed.note == "more sensitive"
    assert changed.threshold.value == 0.8 and changed.threshold.details["changed_by"] == "key ab12cd34 (ana)"
    assert changed.threshold.details["previous"] == 1.0 and changed.threshold.reference == 0.3
    metrics = changed.metrics
    assert metrics is not None and metrics.threshold == 0.8
    assert metrics.per_defect_type["crack"].miss_rate == 0.0 and metrics.miss_rate == 0.0  # was stale before
    assert metrics.over_detection_rate == pytest.approx(1 / 3)
    assert store.read_card("press-1") == changed


def test_thresholds_a_line_cannot_take_are_refused(store: ModelStore) -> None:
    anomaly_line(store)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="finite"):
            set_threshold(store, "press-1", bad)
    classifier = ModelCard(
        line="sorter-1",
        kind="image-classifier",
        threshold=Threshold(0.5, "defect_confidence", 0.0),
        classifier=ClassifierInfo(
            classes=["bad", "good"], normal_class="good", temperature=1.0, severity={"high": 0.9}
        ),
    )
    store.write_version(classifier, to_bytes({}))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        set_threshold(store, "sorter-1", 1.5)
    with pytest.raises(ConfigError, match=r"strictest first|distinct"):
        set_severity(store, "sorter-1", {"high": 0.5, "low": 0.5})
    assert set_severity(store, "sorter-1", {"low": 0.6, "high": 0.95}).classifier.severity == {"high": 0.95, "low": 0.6}  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="severity rules belong to image-classifier lines"):
        set_severity(store, "press-1", {"high": 0.9})
