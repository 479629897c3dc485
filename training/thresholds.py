"""Changing a line's threshold: a new version of its card, so the change survives restarts and is audited."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.metrics import confusion, rates
from models.threshold import Threshold
from training.card import ModelCard
from training.store import ModelStore


def set_threshold(
    store: ModelStore, line: str, value: float, note: str | None = None, actor: str | None = None
) -> ModelCard:
    """Store the current version of ``line`` again with threshold ``value`` and put it in service.

    The metrics kept in the card are recomputed at the new threshold from the stored test scores.
    """
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {value!r}")
    card = store.read_card(line)
    old = Threshold.from_dict(card.threshold)
    details: dict[str, Any] = {"previous": old.value, "previous_method": old.method}
    if actor:
        details["changed_by"] = actor
    new = old.with_value(float(value), method="manual", **details)
    changes: dict[str, Any] = {"threshold": new.to_dict()}
    if card.metrics:
        changes["metrics"] = metrics_at(card.metrics, new.value)
    return store.derive_version(line, changes, note or f"threshold {old.value:.6g} -> {value:.6g}")


def metrics_at(metrics: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Threshold-dependent metrics recomputed from the test scores stored with them."""
    stored = metrics.get("test_scores")
    if not stored:
        return {**metrics, "note": "rates were measured at an earlier threshold"}
    scores, labels = np.asarray(stored["scores"]), np.asarray(stored["labels"])
    counts = confusion(labels, scores, threshold)
    return {**metrics, **rates(counts), "confusion": counts, "threshold": threshold}
