"""Fitting a sensor line: table -> split -> scaler -> AutoEncoder (Ray Train) -> threshold -> evaluation -> version.

The rows are split once, seeded:

- normal rows (label 0, or every row when the file has no label column): ``train`` (fits the network),
  ``holdout`` (``holdout_fraction``: early stopping and the normal-only threshold) and, when the file
  also has anomalous rows, ``test`` normals (another ``holdout_fraction``);
- labelled set = test normals + anomalous rows. With a labelled threshold it is split in two,
  stratified: one half chooses the threshold, the other half is evaluated, so the reported miss and
  over-detection rates are not measured on the rows that chose the threshold.

Threshold, by default (``threshold_source="auto"``): from labelled rows (best F1, or a target miss or
over-detection rate) when the file has anomalous rows, else the conformal percentile of held-out normal
errors at ``over_detection_rate``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lineguard.errors import DataError
from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.models.sensor_model import SensorModel
from lineguard.models.threshold import Threshold, from_labelled, from_normal_scores
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.names import check_line_name
from lineguard.registry.sections import Calibration, DataInfo, Evaluation, HeadInfo, ScoreSummary, SensorInputs
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import to_bytes
from lineguard.training.options import SensorFitOptions
from lineguard.training.provenance import Timer, software_versions
from lineguard.training.report import FitReport
from lineguard.training.sensor_data import SensorTable, read_table
from lineguard.training.train_loop import thin_history
from lineguard.training.train_sensor import train_autoencoder

log = logging.getLogger(__name__)


@dataclass
class _Split:
    train: np.ndarray
    holdout: np.ndarray
    calibrate: np.ndarray  # labelled rows that choose a labelled threshold (empty otherwise)
    test: np.ndarray  # labelled rows evaluated (empty without anomalous rows)


def split_rows(labels: np.ndarray | None, n_rows: int, holdout_fraction: float, labelled: bool, seed: int) -> _Split:
    rng = np.random.default_rng(seed)
    is_anomaly = labels.astype(bool) if labels is not None else np.zeros(n_rows, dtype=bool)
    normal = rng.permutation(np.nonzero(~is_anomaly)[0])
    anomalous = rng.permutation(np.nonzero(is_anomaly)[0])
    n_hold = max(1, round(holdout_fraction * len(normal)))
    n_test = n_hold if len(anomalous) else 0
    if len(normal) < 10 or len(normal) - n_hold - n_test < 2:
        raise DataError(
            f"{len(normal)} normal rows are too few to train on and hold out {holdout_fraction:.0%}: "
            "a sensor line needs at least 10 normal rows (thousands are better)"
        )
    holdout, test_normal, train = np.split(normal, [n_hold, n_hold + n_test])
    if not labelled:
        return _Split(train, holdout, np.array([], dtype=np.int64), np.concatenate([test_normal, anomalous]))
    half_n, half_a = len(test_normal) // 2, len(anomalous) // 2
    calibrate = np.concatenate([test_normal[:half_n], anomalous[:half_a]])
    test = np.concatenate([test_normal[half_n:], anomalous[half_a:]])
    return _Split(train, holdout, calibrate, test)


def fit_sensor_line(line: str, data: Path | str, options: SensorFitOptions, store: ModelStore) -> FitReport:
    """Fit, calibrate, evaluate and store a new version of sensor line ``line``."""
    check_line_name(line)
    options.validate()
    timer = Timer()
    table = read_table(data, options.columns, options.label_column)
    n_anomalous = int(table.labels.sum()) if table.labels is not None else 0
    labelled = options.threshold_source == "labelled" or (options.threshold_source == "auto" and n_anomalous >= 2)
    if labelled and n_anomalous < 2:
        raise DataError(
            f"a labelled threshold needs at least 2 anomalous rows (label 1) in {table.path}, found {n_anomalous}"
        )
    split = split_rows(table.labels, len(table.values), options.holdout_fraction, labelled, options.seed)
    timer.mark("read")

    model = SensorAutoEncoder(len(table.features), options.hidden, options.latent)
    model.scaler.fit(torch.from_numpy(table.values[split.train]))
    with torch.no_grad():
        train_z = model.scaler(torch.from_numpy(table.values[split.train])).numpy()
        holdout_z = model.scaler(torch.from_numpy(table.values[split.holdout])).numpy()
    trained = train_autoencoder(model, train_z, holdout_z, replace(options.train, seed=options.seed))
    timer.mark("train")

    scorer = SensorModel.from_torch(model, Threshold(1.0, "unset", 0.0), table.features, options.top_features)
    holdout = scorer.predict(table.values[split.holdout])
    if labelled:
        threshold = from_labelled(
            scorer.predict(table.values[split.calibrate]).scores,
            _labels(table, split.calibrate),
            options.threshold_objective,
            options.threshold_target,
            options.over_detection_rate,
        )
    else:
        threshold = from_normal_scores(holdout.scores, options.over_detection_rate)
    scorer.threshold = threshold
    metrics = evaluate_table(scorer, table, split.test) if len(split.test) else None
    timer.mark("calibrate_evaluate")

    card = ModelCard(
        line=line,
        kind=LineKind.SENSOR_ANOMALY,
        note=options.note,
        inputs=SensorInputs(features=table.features, mean=model.scaler.mean.tolist(), std=model.scaler.std.tolist()),
        head=HeadInfo(kind="autoencoder", params=model.params(), scorer={"top_features": scorer.top_k}),
        threshold=threshold,
        calibration=Calibration(normal=ScoreSummary.of(holdout.scores), input=ScoreSummary.of(holdout.input_rms)),
        metrics=metrics,
        data=DataInfo(
            root=str(table.path.resolve()),
            layout=table.path.suffix.lstrip(".").lower() or "csv",
            fingerprint=_file_digest(table.path),
            n_train=int(len(table.values) - n_anomalous),
            n_fit=len(split.train),
            n_calibration=len(split.holdout) + len(split.calibrate),
            calibration="labelled half" if labelled else "holdout",
            n_test=len(split.test),
            notes=[f"{n_anomalous} anomalous rows"] if n_anomalous else [],
        ),
        timings=dict(timer.marks),
        training=thin_history(trained.history),
        software=software_versions(),
    )
    stored = store.write_version(card, to_bytes(model.fitted_state()), promote=options.promote)
    timer.mark("store")
    return FitReport(stored, {**timer.marks, "total": timer.total()}, [], metrics, options.promote)


def evaluate_table(model: SensorModel, table: SensorTable, rows: np.ndarray | None = None) -> Evaluation:
    """Metrics of ``model`` on labelled rows of ``table`` (all rows by default), per fault type."""
    if table.labels is None:
        raise DataError(f"{table.path} has no label column (label, is_anomaly or anomaly): nothing to evaluate")
    index = np.arange(len(table.values)) if rows is None else rows
    scores = model.predict(table.values[index]).scores
    labels = table.labels[index]
    groups = table.groups or ["anomaly" if y else "normal" for y in table.labels]
    types = [groups[i] if table.labels[i] else "normal" for i in index]
    return Evaluation.of_labelled(labels, scores, model.threshold.value, types)


def _labels(table: SensorTable, rows: np.ndarray) -> np.ndarray:
    assert table.labels is not None
    labels: np.ndarray = table.labels[rows]
    return labels


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["SensorFitOptions", "evaluate_table", "fit_sensor_line", "split_rows"]
