"""Image-anomaly lines: fitted on normal images, they answer an anomaly score, a decision and a heatmap."""

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
from lineguard.training.options import BackboneSettings
from lineguard.training.report import FitReport, write_histogram, write_metrics, write_overlays


class ImageAnomaly(KindAdapter["FitOptions"]):  # type: ignore[name-defined]
    kind = LineKind.IMAGE_ANOMALY
    summary = "an anomaly line on images, fitted on normal parts only (PatchCore, PaDiM or mean embedding)"
    data_help = "an MVTec-layout folder (train/good, optional test/<type> and ground_truth) or a folder of good images"

    @property
    def options(self) -> type:  # type: ignore[override]
        from lineguard.training.fit_image import FitOptions

        return FitOptions

    def fit(self, line: str, data: Path, options: Any, store: ModelStore) -> FitReport:
        from lineguard.training.fit_image import fit_image_line

        return fit_image_line(line, data, options, store)

    def with_workers(self, options: Any, workers: int) -> Any:
        return options if options.workers is not None else replace(options, workers=workers)

    def evaluate(
        self, store: ModelStore, card: ModelCard, data: Path, out: Path, request: EvaluateRequest
    ) -> EvaluationReport:
        from lineguard.registry.image_models import anomaly_scorer
        from lineguard.training.data import discover
        from lineguard.training.engine import WorkerSpec
        from lineguard.training.evaluate import evaluate_maps, score_samples
        from lineguard.training.options import RunSettings

        if request.merge:
            raise self.refuse("--merge names classes", card, "classifier lines only")
        assert card.backbone is not None and card.head is not None
        scorer = anomaly_scorer(store, card)
        dataset = discover(data)
        samples = dataset.test or dataset.train
        spec = card.backbone.spec()
        backbone = BackboneSettings(
            weights=request.weights,
            device=request.device,
            precision=request.precision,
            backbone=spec.name,
            layers=spec.layers,
            image_size=spec.image_size,
        )
        worker = WorkerSpec(
            "maps",
            backbone,
            head_kind=card.head.kind,
            head_params=card.head.params,
            scorer_params=card.head.scorer,
            state={k: v.numpy() for k, v in scorer.fitted_state().items()},
        )
        test = score_samples(samples, worker, RunSettings(request.workers, request.batch_size))
        if not test.samples:
            raise DataError(f"no readable image in {data}: {test.skipped[:10]}")
        result = evaluate_maps(scorer, test, spec.image_size)
        title = f"{card.line} {card.version}"
        written = [write_metrics(out, result.metrics)]
        histogram = write_histogram(out, result.metrics, title)
        written += [histogram] if histogram else []
        written += write_overlays(
            out, result.samples, result.scores, result.maps, card.threshold.value, scorer.display_range(),
            spec.image_size, request.overlays,
        )  # fmt: skip
        note = "" if dataset.test else " (no test/ folder: every image scored as a good part, over-detection only)"
        evaluated = f"{len(result.samples)} images of {data}{note}"
        return EvaluationReport(result.metrics, evaluated, written, test.skipped)

    def load(self, store: ModelStore, card: ModelCard, runtime: Runtime) -> Predictor:
        return _ImagePredictor(store, card, runtime)


class _ImagePredictor(Predictor):
    def __init__(self, store: ModelStore, card: ModelCard, runtime: Runtime) -> None:
        from lineguard.registry.image_models import load_image_model

        self.card, self.model = load_image_model(store, card.line, card.version, runtime=runtime)

    def answers(self, request: PredictRequest) -> Iterator[dict[str, Any]]:
        from lineguard.models.preprocess import open_image, resize
        from lineguard.models.visualize import normalise_map, overlay
        from lineguard.registry.answers import Prediction

        if not request.files or request.readings:
            raise KindAdapter.refuse("give image files", self.card, "not --values")
        for path in request.files:
            started = time.perf_counter()
            try:
                image = open_image(path.read_bytes(), self.model.preprocess.max_pixels)
            except (DataError, OSError) as err:
                yield {"file": str(path), "error": str(err)}
                continue
            decision = self.model.predict_images([image], with_maps=request.heatmap is not None)[0]
            elapsed = (time.perf_counter() - started) * 1000
            answer: dict[str, Any] = {
                "file": str(path),
                **Prediction.of(self.card.line, self.card.version, decision, elapsed).model_dump(exclude_none=True),
            }
            if request.heatmap is not None and decision.anomaly_map is not None:
                target = request.heatmap
                if len(request.files) > 1:
                    target = request.heatmap.with_name(f"{request.heatmap.stem}-{path.stem}.png")
                heat = normalise_map(decision.anomaly_map, *self.model.scorer.display_range())
                overlay(resize(image, self.model.preprocess.image_size), heat).save(target)
                answer["heatmap"] = str(target)
            yield answer
