"""Changing a line's threshold: a new version of its card, so the change survives restarts and is audited."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lineguard.models.metrics import confusion, rates
from lineguard.models.threshold import Threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.store import ModelStore


def set_threshold(
    store: ModelStore, line: str, value: float, note: str | None = None, actor: str | None = None
) -> ModelCard:
    """Store the current version of ``line`` again with threshold ``value`` and put it in service.

    The metrics kept in the card are recomputed at the new threshold from the stored test scores.
    """
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {value!r}")
    card = store.read_card(line)
    if card.kind == "image-classifier":
        if card.classifier is None or card.classifier.normal_class is None:
            raise ValueError(
                f"line {line!r} is a classifier without a normal class: it answers the most likely class, "
                "and has no threshold to change"
            )
        if not 0 < value < 1:
            raise ValueError(
                f"line {line!r} is a classifier: its threshold is the defect confidence at which a part is "
                f"called defective, between 0 and 1 (exclusive); got {value}"
            )
    old = Threshold.from_dict(card.threshold)
    details: dict[str, Any] = {"previous": old.value, "previous_method": old.method}
    if actor:
        details["changed_by"] = actor
    new = old.with_value(float(value), method="manual", **details)
    changes: dict[str, Any] = {"threshold": new.to_dict()}
    if card.metrics:
        changes["metrics"] = metrics_at(card.metrics, new.value)
    return store.derive_version(line, changes, note or f"threshold {old.value:.6g} -> {value:.6g}")


def set_severity(store: ModelStore, line: str, rules: dict[str, float], note: str | None = None) -> ModelCard:
    """Store the current version of the classifier line ``line`` again with new severity rules."""
    from lineguard.models.classifier import SeverityRules

    card = store.read_card(line)
    if card.kind != "image-classifier" or card.classifier is None:
        raise ValueError(f"line {line!r} is a {card.kind} line: severity rules belong to image-classifier lines")
    if card.classifier.normal_class is None:
        raise ValueError(
            f"line {line!r} has no normal class: severity is graded on the defect confidence (1 - p(normal)), "
            "so refit it with --normal-class"
        )
    new = SeverityRules.from_dict(rules).to_dict()  # validates: raises ValueError naming the problem
    info = card.classifier.model_copy(update={"severity": new})
    text = ", ".join(f"{k} >= {v:g}" for k, v in new.items())
    return store.derive_version(line, {"classifier": info}, note or f"severity {text}")


def metrics_at(metrics: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Threshold-dependent metrics recomputed from the test scores stored with them."""
    stored = metrics.get("test_scores")
    if not stored:
        return {**metrics, "note": "rates were measured at an earlier threshold"}
    scores, labels = np.asarray(stored["scores"]), np.asarray(stored["labels"])
    counts = confusion(labels, scores, threshold)
    out = {**metrics, **rates(counts), "confusion": counts, "threshold": threshold}
    if "classes" in metrics:  # a classifier's per-class figures were measured at the fit's threshold
        fitted_at = metrics["classes"].get("threshold", metrics.get("threshold"))
        out["classes"] = {**metrics["classes"], "threshold": fitted_at, "stale": f"measured at threshold {fitted_at}"}
    return out
