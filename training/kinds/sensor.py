"""Sensor lines: fitted on normal rows of a table, they answer a reconstruction error, a status and the
channels that carry most of it. Nothing here needs torch to answer (NumPy scoring)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.errors import DataError
from lineguard.models.spec import Runtime
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.store import ModelStore
from lineguard.training.kinds.base import EvaluateRequest, EvaluationReport, KindAdapter, Predictor, PredictRequest
from lineguard.training.options import SensorFitOptions
from lineguard.training.report import FitReport, write_histogram, write_metrics


class SensorAnomaly(KindAdapter[SensorFitOptions]):
    kind = LineKind.SENSOR_ANOMALY
    options = SensorFitOptions
    summary = "an anomaly line on sensor readings, an AutoEncoder fitted on normal rows (Ray Train)"
    data_help = "a CSV with a header, or Parquet: one row per reading (a 0/1 label column marks known anomalies)"

    def fit(self, line: str, data: Path, options: SensorFitOptions, store: ModelStore) -> FitReport:
        from lineguard.training.fit_sensor import fit_sensor_line

        return fit_sensor_line(line, data, options, store)

    def with_workers(self, options: SensorFitOptions, workers: int) -> SensorFitOptions:
        if options.train.workers is not None:
            return options
        return replace(options, train=replace(options.train, workers=workers))

    def evaluate(
        self, store: ModelStore, card: ModelCard, data: Path, out: Path, request: EvaluateRequest
    ) -> EvaluationReport:
        from lineguard.registry.sensor_models import sensor_model
        from lineguard.training.fit_sensor import evaluate_table
        from lineguard.training.sensor_data import read_table

        if request.merge:
            raise self.refuse("--merge names classes", card, "classifier lines only")
        model = sensor_model(store, card)
        table = read_table(data, model.features)
        metrics = evaluate_table(model, table)
        written = [write_metrics(out, metrics)]
        histogram = write_histogram(out, metrics, f"{card.line} {card.version}")
        written += [histogram] if histogram else []
        return EvaluationReport(metrics, f"{len(table.values)} rows of {data}", written)

    def load(self, store: ModelStore, card: ModelCard, runtime: Runtime) -> Predictor:
        return _SensorPredictor(store, card)


class _SensorPredictor(Predictor):
    def __init__(self, store: ModelStore, card: ModelCard) -> None:
        from lineguard.registry.sensor_models import sensor_model

        self.card, self.model = card, sensor_model(store, card)

    def answers(self, request: PredictRequest) -> Iterator[dict[str, Any]]:
        from lineguard.registry.answers import SensorPrediction
        from lineguard.training.sensor_data import read_table

        if request.heatmap is not None:
            raise KindAdapter.refuse("it draws no heatmap", self.card, "drop --heatmap")
        model = self.model
        batches: list[tuple[str, np.ndarray]] = []
        for i, reading in enumerate(request.readings):
            if len(reading) != model.n_features or not np.isfinite(reading).all():
                raise DataError(
                    f"line {self.card.line} expects {model.n_features} finite values ({model.features}), "
                    f"got {len(reading)}: {reading[:20]}"
                )
            batches.append((f"--values #{i + 1}", np.array([reading], dtype=np.float64)))
        batches += [(str(path), read_table(path, model.features).values.astype(np.float64)) for path in request.files]
        if not batches:
            raise DataError("give CSV/Parquet files or --values for a sensor line")
        threshold = model.threshold.value
        for source, values in batches:
            started = time.perf_counter()
            out = model.predict(values)
            elapsed = (time.perf_counter() - started) * 1000 / len(values)
            for row in range(len(values)):
                one = out.rows(slice(row, row + 1))
                answer = SensorPrediction.of(
                    self.card.line, self.card.version, one, threshold, values[row : row + 1], model.features, elapsed
                )
                yield {"source": source, "row": row + 1, **answer.model_dump(exclude_none=True)}
