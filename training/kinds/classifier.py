"""Image-classifier lines: fitted on labelled class folders, they answer a class, its calibrated
confidence and, with a normal class, the defect confidence and a severity."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from lineguard.errors import DataError
from lineguard.models.spec import Runtime
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.store import ModelStore
from lineguard.training.kinds.base import EvaluateRequest, EvaluationReport, KindAdapter, Predictor, PredictRequest
from lineguard.training.options import ClassifierFitOptions
from lineguard.training.report import FitReport, write_metrics


class ImageClassifier(KindAdapter[ClassifierFitOptions]):
    kind = LineKind.IMAGE_CLASSIFIER
    options = ClassifierFitOptions
    summary = "a supervised line on images: a head on the shared backbone, fitted on labelled class folders"
    data_help = "one folder per class (optionally under train/ val/ test/), or the MVTec layout"

    def fit(self, line: str, data: Path, options: ClassifierFitOptions, store: ModelStore) -> FitReport:
        from lineguard.training.fit_classifier import fit_classifier_line

        return fit_classifier_line(line, data, options, store)

    def with_workers(self, options: ClassifierFitOptions, workers: int) -> ClassifierFitOptions:
        if options.feature_workers is None:
            options = replace(options, feature_workers=workers)
        if options.train.workers is None:
            options = replace(options, train=replace(options.train, workers=workers))
        return options

    def evaluate(
        self, store: ModelStore, card: ModelCard, data: Path, out: Path, request: EvaluateRequest
    ) -> EvaluationReport:
        from lineguard.registry.image_models import load_classifier
        from lineguard.training.evaluate_classifier import evaluate_folder

        card, extractor, classifier = load_classifier(store, card.line, card.version, request.runtime())
        metrics, skipped = evaluate_folder(card, extractor, classifier, data, request.merge, request.batch_size)
        written = [write_metrics(out, metrics)]
        n = metrics.classes.n if metrics.classes else 0
        return EvaluationReport(metrics, f"{n} images of {data}", written, skipped)

    def load(self, store: ModelStore, card: ModelCard, runtime: Runtime) -> Predictor:
        return _ClassifierPredictor(store, card, runtime)


class _ClassifierPredictor(Predictor):
    def __init__(self, store: ModelStore, card: ModelCard, runtime: Runtime) -> None:
        from lineguard.registry.image_models import load_classifier

        self.card, self.extractor, self.classifier = load_classifier(store, card.line, card.version, runtime)

    def answers(self, request: PredictRequest) -> Iterator[dict[str, Any]]:
        import torch

        from lineguard.models.tensors import load_file
        from lineguard.registry.answers import ClassPrediction

        if not request.files or request.readings or request.heatmap:
            raise KindAdapter.refuse("it answers a class for image files", self.card, "no --values, no --heatmap")
        assert self.card.backbone is not None
        config = self.card.backbone.preprocess()
        classifier = self.classifier
        for path in request.files:
            started = time.perf_counter()
            try:
                batch = torch.stack([load_file(path, config)])
            except (DataError, OSError) as err:
                yield {"file": str(path), "error": str(err)}
                continue
            decision = classifier.predict(self.extractor.extract(batch))[0]
            elapsed = (time.perf_counter() - started) * 1000
            answer = ClassPrediction.of(
                self.card.line, self.card.version, decision, classifier.classes, classifier.normal_index, elapsed
            )
            yield {"file": str(path), **answer.model_dump(mode="json", exclude_none=True)}
