"""An image line's model rebuilt from its card and tensors: the anomaly scorer (head + calibration +
threshold) or the classifier (tail + head + temperature, classes, threshold, severity), and the in-process
pipelines that put a backbone in front of them (for the CLI, the evaluation and the benchmarks).

The Scorer deployment serves what :func:`line_model` returns; sensor lines load with NumPy alone
(:mod:`lineguard.registry.sensor_models`).
"""

from __future__ import annotations

from collections.abc import Callable

from lineguard.errors import ConfigError
from lineguard.models.anomaly_model import ImageAnomalyModel
from lineguard.models.backbone import FeatureExtractor
from lineguard.models.classifier import ImageClassifier, LineClassifier
from lineguard.models.decisions import SeverityRules
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.spec import Runtime
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.sections import BackboneInfo
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import read_tensors

LineModel = AnomalyScorer | LineClassifier


def _backbone(card: ModelCard) -> BackboneInfo:
    if card.backbone is None:
        raise ConfigError(f"line {card.line!r} is a {card.kind} line: it has no image backbone")
    return card.backbone


def anomaly_scorer(store: ModelStore, card: ModelCard) -> AnomalyScorer:
    """The fitted line scorer (head + calibration + threshold) of ``card``'s version."""
    if card.kind is not LineKind.IMAGE_ANOMALY or card.head is None:
        raise ConfigError(f"line {card.line!r} is a {card.kind} line, not image-anomaly")
    scorer = AnomalyScorer.build(card.head.kind, card.head.params, card.head.scorer)
    scorer.load_fitted_state(read_tensors(store, card))
    scorer.threshold = card.threshold
    return scorer


def classifier(store: ModelStore, card: ModelCard) -> LineClassifier:
    """The fitted classifier line (tail + head + temperature, classes, threshold, severity) of ``card``."""
    if card.kind is not LineKind.IMAGE_CLASSIFIER or card.head is None or card.classifier is None:
        raise ConfigError(f"line {card.line!r} is a {card.kind} line, not image-classifier")
    model = ImageClassifier(**card.head.params)  # tail weights come from the stored state, not a download
    model.load_fitted_state(read_tensors(store, card))
    info = card.classifier
    severity = SeverityRules.from_dict(info.severity) if info.severity else SeverityRules()
    return LineClassifier(model, info.classes, info.normal_class, card.threshold.value, severity)


LOADERS: dict[LineKind, Callable[[ModelStore, ModelCard], LineModel]] = {
    LineKind.IMAGE_ANOMALY: anomaly_scorer,
    LineKind.IMAGE_CLASSIFIER: classifier,
}


def line_model(store: ModelStore, card: ModelCard) -> LineModel:
    """What the Scorer serves for ``card``: the per-line model that runs on the shared backbone's features."""
    loader = LOADERS.get(card.kind)
    if loader is None:
        raise ConfigError(f"line {card.line!r} is a {card.kind} line: it takes no images")
    return loader(store, card)


def extractor_for(card: ModelCard, runtime: Runtime, reuse: FeatureExtractor | None = None) -> FeatureExtractor:
    """A backbone for ``card``'s line (``reuse`` when it computes the same features)."""
    spec = _backbone(card).spec()
    if reuse is not None and (reuse.backbone_name, reuse.layers) == (spec.name, spec.layers):
        return reuse
    return FeatureExtractor(spec.name, spec.layers, runtime.weights, runtime.device, runtime.precision)


def load_image_model(
    store: ModelStore,
    line: str,
    version: str | None = None,
    extractor: FeatureExtractor | None = None,
    runtime: Runtime | None = None,
) -> tuple[ModelCard, ImageAnomalyModel]:
    """Card and in-process pipeline of an anomaly line; pass ``extractor`` to share one backbone between lines."""
    runtime = runtime or Runtime()
    card = store.read_card(line, version)
    scorer = anomaly_scorer(store, card)
    return card, ImageAnomalyModel(extractor_for(card, runtime, extractor), scorer, _backbone(card).preprocess())


def load_classifier(
    store: ModelStore, line: str, version: str | None = None, runtime: Runtime | None = None
) -> tuple[ModelCard, FeatureExtractor, LineClassifier]:
    """Card, shared-backbone extractor and fitted classifier of a classifier line, in this process."""
    runtime = runtime or Runtime()
    card = store.read_card(line, version)
    fitted = classifier(store, card)
    extractor = extractor_for(card, runtime)
    fitted.model.to(extractor.device)
    return card, extractor, fitted
