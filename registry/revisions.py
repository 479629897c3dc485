"""Revisions of a line that are not refits: a new threshold, new severity rules. Each is a new version with
the parent's tensors byte for byte and its card changed, so the change survives restarts, can be rolled
back (``lineguard promote``) and says who made it (``parent``, ``note``, ``changed_by``)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from lineguard.errors import ConfigError
from lineguard.models.decisions import SeverityRules
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.sections import AlarmSettings
from lineguard.registry.store import ModelStore


def check_threshold(card: ModelCard, value: float) -> float:
    """``value`` as a threshold of ``card``'s line, or a ConfigError that says what the line takes."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"threshold must be a finite number, got {value!r}")
    if card.kind is LineKind.IMAGE_CLASSIFIER:
        if card.classifier is None or card.classifier.normal_class is None:
            raise ConfigError(
                f"line {card.line!r} is a classifier without a normal class: it answers the most likely class, "
                "and has no threshold to change"
            )
        if not 0 < value < 1:
            raise ConfigError(
                f"line {card.line!r} is a classifier: its threshold is the defect confidence at which a part is "
                f"called defective, between 0 and 1 (exclusive); got {value}"
            )
    return float(value)


def set_threshold(
    store: ModelStore, line: str, value: float, note: str | None = None, actor: str | None = None
) -> ModelCard:
    """Store the current version of ``line`` again with threshold ``value`` and put it in service.

    Every threshold-dependent figure of the card's evaluation is recomputed at the new threshold from the
    stored test scores (rates, confusion, per defect type); a classifier's per-class figures are marked as
    measured at the fit's threshold.
    """
    card = store.read_card(line)
    value = check_threshold(card, value)
    old = card.threshold
    details: dict[str, Any] = {"previous": old.value, "previous_method": old.method}
    if actor:
        details["changed_by"] = actor
    new = old.with_value(value, method="manual", **details)
    changes: dict[str, Any] = {"threshold": new}
    if card.metrics is not None:
        changes["metrics"] = card.metrics.at(new.value)
    return store.derive_version(line, changes, note or f"threshold {old.value:.6g} -> {value:.6g}")


def set_severity(store: ModelStore, line: str, rules: dict[str, float], note: str | None = None) -> ModelCard:
    """Store the current version of the classifier line ``line`` again with new severity rules."""
    card = store.read_card(line)
    if card.kind is not LineKind.IMAGE_CLASSIFIER or card.classifier is None:
        raise ConfigError(f"line {line!r} is a {card.kind} line: severity rules belong to image-classifier lines")
    if card.classifier.normal_class is None:
        raise ConfigError(
            f"line {line!r} has no normal class: severity is graded on the defect confidence (1 - p(normal)), "
            "so refit it with --normal-class"
        )
    new = SeverityRules.from_dict(rules).to_dict()  # validates: raises ConfigError naming the problem
    info = card.classifier.model_copy(update={"severity": new})
    text = ", ".join(f"{k} >= {v:g}" for k, v in new.items())
    return store.derive_version(line, {"classifier": info}, note or f"severity {text}")


def set_alarm(
    store: ModelStore, line: str, changes: dict[str, Any], note: str | None = None, actor: str | None = None
) -> ModelCard:
    """Store the current version of the sensor line ``line`` again with its alarm rule changed (``changes``:
    any of ``k``, ``n``, ``clear_ratio``, ``min_duration``; the others stay), in service at once. Streams keep
    their alarm state: a stream in alarm stays in alarm until the new rule ends it."""
    card = store.read_card(line)
    if card.kind is not LineKind.SENSOR_ANOMALY:
        raise ConfigError(f"line {line!r} is a {card.kind} line: alarm rules belong to sensor-anomaly lines")
    unknown = sorted(set(changes) - set(AlarmSettings.model_fields))
    if unknown:
        raise ConfigError(f"unknown alarm setting(s) {unknown}: a rule has {sorted(AlarmSettings.model_fields)}")
    old = card.alarm or AlarmSettings(k=1, n=1)
    try:
        new = AlarmSettings(**{**old.model_dump(), **changes})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"alarm rule refused: {problems}") from None
    text = f"alarm {new.k} of {new.n}, clear at {new.clear_ratio:g} x threshold, at least {new.min_duration}"
    by = f" (by {actor})" if actor else ""
    return store.derive_version(line, {"alarm": new}, note or text + by)
