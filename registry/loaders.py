"""Rebuilding a line's model from the store: the one reader that the CLI and the deployments share.

torch is imported only by the image paths: a sensor line loads with NumPy alone (a SensorScorer
replica never imports torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lineguard.models.sensor_model import SensorModel
from lineguard.models.spec import BackboneSpec
from lineguard.models.threshold import Threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.store import ModelStore

if TYPE_CHECKING:
    from lineguard.models.anomaly_model import ImageAnomalyModel
    from lineguard.models.backbone import FeatureExtractor
    from lineguard.models.classifier import LineClassifier
    from lineguard.models.preprocess import PreprocessConfig
    from lineguard.models.scoring import AnomalyScorer


def backbone_spec(card: ModelCard) -> BackboneSpec:
    if card.backbone is None:
        raise ValueError(f"line {card.line!r} ({card.kind}) has no image backbone")
    return BackboneSpec(card.backbone.name, tuple(card.backbone.layers), card.backbone.image_size)


def preprocess_config(card: ModelCard) -> PreprocessConfig:
    from lineguard.models.preprocess import PreprocessConfig

    if card.backbone is None:
        raise ValueError(f"line {card.line!r} ({card.kind}) takes no images")
    mean, std = card.backbone.mean, card.backbone.std
    return PreprocessConfig(card.backbone.image_size, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def scorer_from_card(store: ModelStore, card: ModelCard) -> AnomalyScorer:
    """The fitted line scorer (head + calibration + threshold) of ``card``'s version."""
    from lineguard.models.scoring import AnomalyScorer

    if card.kind != "image-anomaly" or card.head is None:
        raise ValueError(f"line {card.line!r} is a {card.kind} line, not image-anomaly")
    scorer = AnomalyScorer.build(card.head.kind, card.head.params, card.head.scorer)
    scorer.load_fitted_state(store.read_tensors(card))
    scorer.threshold = Threshold.from_dict(card.threshold)
    return scorer


def load_image_model(
    store: ModelStore,
    line: str,
    version: str | None = None,
    extractor: FeatureExtractor | None = None,
    weights: str = "auto",
    device: str = "auto",
    precision: str = "auto",
) -> tuple[ModelCard, ImageAnomalyModel]:
    """Card and in-process pipeline of a line; pass ``extractor`` to share one backbone between lines."""
    from lineguard.models.anomaly_model import ImageAnomalyModel
    from lineguard.models.backbone import FeatureExtractor

    card = store.read_card(line, version)
    spec = backbone_spec(card)
    if extractor is None or (extractor.backbone_name, extractor.layers) != (spec.name, spec.layers):
        extractor = FeatureExtractor(spec.name, spec.layers, weights, device, precision)
    return card, ImageAnomalyModel(extractor, scorer_from_card(store, card), preprocess_config(card))


def sensor_model_from_card(store: ModelStore, card: ModelCard) -> SensorModel:
    """The fitted sensor line (AutoEncoder + scaler + threshold + feature names) of ``card``'s version."""
    if card.kind != "sensor-anomaly" or card.head is None or card.inputs is None:
        raise ValueError(f"line {card.line!r} is a {card.kind} line, not sensor-anomaly")
    top_k = int(card.head.scorer.get("top_features", 3))
    return SensorModel(store.read_arrays(card), Threshold.from_dict(card.threshold), card.inputs.features, top_k)


def classifier_from_card(store: ModelStore, card: ModelCard) -> LineClassifier:
    """The fitted classifier line (tail + head + temperature, classes, threshold, severity) of ``card``."""
    from lineguard.models.classifier import ImageClassifier, LineClassifier, SeverityRules

    if card.kind != "image-classifier" or card.head is None or card.classifier is None:
        raise ValueError(f"line {card.line!r} is a {card.kind} line, not image-classifier")
    model = ImageClassifier(**card.head.params)  # tail weights come from the stored state, not a download
    model.load_fitted_state(store.read_tensors(card))
    info = card.classifier
    severity = SeverityRules.from_dict(info.severity) if info.severity else SeverityRules()
    return LineClassifier(model, info.classes, info.normal_class, float(card.threshold["value"]), severity)


def load_classifier(
    store: ModelStore,
    line: str,
    version: str | None = None,
    weights: str = "auto",
    device: str = "auto",
    precision: str = "auto",
) -> tuple[ModelCard, FeatureExtractor, LineClassifier]:
    """Card, shared-backbone extractor and fitted classifier of a classifier line, in this process."""
    from lineguard.models.backbone import FeatureExtractor

    card = store.read_card(line, version)
    classifier = classifier_from_card(store, card)
    spec = backbone_spec(card)
    extractor = FeatureExtractor(spec.name, spec.layers, weights, device, precision)
    classifier.model.to(extractor.device)
    return card, extractor, classifier
