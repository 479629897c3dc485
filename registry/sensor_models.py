"""A sensor line's model rebuilt from its card and tensors, with NumPy alone (the SensorScorer replicas and
``lineguard predict`` on a sensor line never import torch)."""

from __future__ import annotations

from lineguard.errors import ConfigError
from lineguard.models.sensor_model import SensorModel
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.store import ModelStore


def sensor_model(store: ModelStore, card: ModelCard) -> SensorModel:
    """The fitted sensor line (AutoEncoder + scaler + threshold + feature names) of ``card``'s version."""
    if card.kind is not LineKind.SENSOR_ANOMALY or card.head is None or card.inputs is None:
        raise ConfigError(f"line {card.line!r} is a {card.kind} line, not sensor-anomaly")
    top_k = int(card.head.scorer.get("top_features", 3))
    return SensorModel(
        store.read_arrays(card), card.threshold, card.inputs.features, top_k, card.head.kind, card.head.params
    )
