"""Fitting a sensor line: table -> split in time -> scaler -> head(s) -> threshold -> evaluation -> version.

Heads (``--head``): the per-reading AutoEncoder (Ray Train), the window AutoEncoder (the last ``--window``
readings as one vector), and the PCA monitor (T^2 + Q of readings with ``--lags`` of history, smoothed
over the rest of the window); ``auto`` fits each and keeps the one that measures best (:func:`choose_head`).

The rows are in time order (a timestamp column is sorted by :mod:`lineguard.training.sensor_data`) and
split in time, because neighbouring readings are not independent:

- normal rows (label 0, or every row when the file has no label column): ``train`` (the first part),
  ``holdout`` (the next ``holdout_fraction``: early stopping and the normal-only threshold) and, when the
  file also has anomalous rows, ``test`` normals (the last ``holdout_fraction``);
- labelled set = test normals + the anomalous rows after the training run. With a labelled threshold
  its first half in time chooses the threshold and the second half is evaluated, so the reported miss
  and over-detection rates are not measured on the rows that chose the threshold.

Every row is scored in its own window over the whole table (each segment between gaps a series of its
own), so held-out rows are judged with their real history as context.

Threshold, by default (``threshold_source="auto"``): from labelled rows (best F1, or a target miss or
over-detection rate) when the file has anomalous rows, else the conformal quantile of held-out normal
scores at ``over_detection_rate``; with too few held-out readings for that rate, a generalised Pareto fit
of their tail (``--tail pot``) instead of their maximum.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save as save_arrays

from lineguard.errors import ConfigError, DataError
from lineguard.models.autoencoder import FeatureScaler, SensorAutoEncoder
from lineguard.models.metrics import roc_auc
from lineguard.models.pca_monitor import PCAMonitor
from lineguard.models.sensor_model import HEADS, SensorModel, SensorScores
from lineguard.models.series import lagged
from lineguard.models.threshold import Threshold, from_labelled, from_normal_scores
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.names import check_line_name
from lineguard.registry.sections import (
    AlarmSettings,
    Calibration,
    DataInfo,
    Evaluation,
    HeadInfo,
    ScoreSummary,
    SensorInputs,
)
from lineguard.registry.store import ModelStore
from lineguard.training.options import SensorFitOptions
from lineguard.training.provenance import Timer, software_versions
from lineguard.training.report import FitReport
from lineguard.training.sensor_data import SensorTable, read_table
from lineguard.training.sensor_faults import held_out_check
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
    """Split in time (rows are in time order), because neighbouring readings are not independent: no held-out
    reading has a twin a few seconds away in the training rows.

    - Normal rows only: the held-out rows are the last ``holdout_fraction`` of the run, the part a new reading
      resembles most.
    - With anomalous rows (spread over the run): the run is cut into blocks of about 50 readings (at least
      24); every sixth block, from the third, is held out, and every sixth, from the sixth, is tested; the
      rest is trained on. The
      labelled rows (test blocks' normals, and the anomalies) alternate by block between choosing the
      threshold and being evaluated. Each part covers the whole run, so a slow change of the operating
      point (a season, a product) is in all of them.

    ``seed`` is kept for the callers' signature: the split is deterministic."""
    del seed
    is_anomaly = labels.astype(bool) if labels is not None else np.zeros(n_rows, dtype=bool)
    normal = np.nonzero(~is_anomaly)[0]
    anomalous = np.nonzero(is_anomaly)[0]
    n_hold = max(1, round(holdout_fraction * len(normal)))
    n_test = n_hold if len(anomalous) else 0
    if len(normal) < 10 or len(normal) - n_hold - n_test < 2:
        raise DataError(
            f"{len(normal)} normal rows are too few to train on and hold out {holdout_fraction:.0%}: "
            "a sensor line needs at least 10 normal rows (thousands are better)"
        )
    empty = np.array([], dtype=np.int64)
    if not len(anomalous):
        train, holdout = normal[: len(normal) - n_hold], normal[len(normal) - n_hold :]
        return _Split(train, holdout, empty, empty)
    blocks = np.array_split(np.arange(n_rows), 12 * max(2, n_rows // 600))  # blocks of about 50 readings
    block_of = np.empty(n_rows, dtype=np.int64)
    for i, block in enumerate(blocks):
        block_of[block] = i
    role = block_of % 6  # 2: held out, 5: tested, else trained on
    train, holdout, test_normal = normal[role[normal] < 5], normal[role[normal] == 2], normal[role[normal] == 5]
    train = train[role[train] != 2]
    if not labelled:
        return _Split(train, holdout, empty, np.concatenate([test_normal, anomalous]))
    # labelled rows: the test blocks' normals alternate by block; the anomalies by episode (a run of anomalous
    # rows stays whole), or by halves of the one episode there is
    normal_first = test_normal[block_of[test_normal] % 12 < 6]
    normal_second = test_normal[block_of[test_normal] % 12 >= 6]
    episodes = np.split(anomalous, np.flatnonzero(np.diff(anomalous) != 1) + 1)
    if len(episodes) == 1:
        episodes = np.array_split(anomalous, 2)
    first = np.concatenate([normal_first, *episodes[0::2]])
    second = np.concatenate([normal_second, *episodes[1::2]])
    return _Split(train, holdout, np.sort(first), np.sort(second))


@dataclass
class _Fitted:
    """One head fitted on the training rows: the scorer (threshold unset), its tensors, card params and history."""

    head: str
    model: SensorModel
    state: dict[str, np.ndarray]
    params: dict[str, Any]
    history: dict[str, Any] | None
    seconds: float


def score_series(model: SensorModel, values: np.ndarray, segments: np.ndarray | None) -> SensorScores:
    """Every row scored in its window, each segment (a run without a gap) a series of its own."""
    if segments is None or len(segments) == 0 or segments[0] == segments[-1]:
        return model.predict(values)
    bounds = np.flatnonzero(np.diff(segments)) + 1
    return SensorScores.concatenate([model.predict(part) for part in np.split(values, bounds)])


def window_readings(spec: str, timestamps: np.ndarray | None) -> int:
    """``--window``: a count of readings, or a span (``90s``, ``30min``, ``2h``) over the median interval."""
    text = spec.strip().lower()
    if text.isdigit():
        window = int(text)
    else:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d)", text)
        if match is None:
            raise ConfigError(f"--window {spec!r} is neither a count of readings (10) nor a span (90s, 30min, 2h)")
        if timestamps is None or len(timestamps) < 2:
            raise ConfigError(f"--window {spec!r} is a time span: the data needs a timestamp column to convert it")
        seconds = float(match.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[match.group(2)]
        interval = float(np.median(np.diff(timestamps)))
        window = max(1, round(seconds / interval))
    if not 1 <= window <= 512:
        raise ConfigError(f"--window {spec!r} gives {window} readings: a window head takes 1 to 512")
    return window


def _runs(rows: np.ndarray, segments: np.ndarray | None) -> list[np.ndarray]:
    """``rows`` (sorted) cut where they skip a row or cross a segment: the contiguous runs a window may span."""
    if len(rows) == 0:
        return []
    cut = np.diff(rows) != 1
    if segments is not None:
        cut |= np.diff(segments[rows]) != 0
    return np.split(rows, np.flatnonzero(cut) + 1)


def _lagged_runs(z: np.ndarray, rows: np.ndarray, segments: np.ndarray | None, lags: int) -> np.ndarray:
    """The lagged vectors of ``rows`` (:func:`lineguard.models.series.lagged`), each window within one run of
    consecutive rows of one segment, so that none spans a held-out block or a gap."""
    if lags == 0:
        out: np.ndarray = z[rows]
        return out
    parts = [lagged(z[r], lags) for r in _runs(rows, segments) if len(r) > lags]
    if not parts:
        raise DataError(f"no run of {lags + 1} consecutive readings in the rows to fit a window head on")
    return np.concatenate(parts)


def _fit_head(
    head: str, z: np.ndarray, train: np.ndarray, holdout: np.ndarray, segments: np.ndarray | None,
    table: SensorTable, options: SensorFitOptions, window: int, scaler: tuple[np.ndarray, np.ndarray],
) -> _Fitted:  # fmt: skip
    started = time.perf_counter()
    unset = Threshold(1.0, "unset", 0.0)
    mean, std = scaler
    base = {"scaler.mean": mean.astype(np.float32), "scaler.std": std.astype(np.float32)}
    if head == "pca":
        lags = min(options.lags, window - 1)
        lagged_train = _lagged_runs(z, train, segments, lags)
        monitor = PCAMonitor.fit_lagged(lagged_train, z.shape[1], lags, window - lags, options.pca_variance)
        state = {**base, **monitor.state()}
        params = monitor.params()
        model = SensorModel(state, unset, table.features, options.top_features, head, params)
        return _Fitted(head, model, state, params, None, time.perf_counter() - started)
    width = 1 if head == "autoencoder" else window

    train_x, holdout_x = (_lagged_runs(z, rows, segments, width - 1) for rows in (train, holdout))
    d = train_x.shape[1]
    hidden = options.hidden or (None if width == 1 else [max(8, min(2 * d, 128)), max(4, min(d, 64))])
    latent = options.latent or (None if width == 1 else max(2, min(z.shape[1] // 3, 16)))
    network = SensorAutoEncoder(d, hidden, latent)
    trained = train_autoencoder(network, train_x, holdout_x, replace(options.train, seed=options.seed))
    state = {k: v.numpy() for k, v in network.fitted_state().items()}
    state.update(base)  # the reading's scaler; a window's vector is the standardised readings side by side
    params = {**network.params(), **({"window": width} if width > 1 else {})}
    model = SensorModel(state, unset, table.features, options.top_features, head, params)
    return _Fitted(head, model, state, params, trained.history, time.perf_counter() - started)


def _threshold(
    scores: np.ndarray, table: SensorTable, split: _Split, labelled: bool, options: SensorFitOptions
) -> Threshold:
    if labelled:
        return from_labelled(
            scores[split.calibrate],
            _labels(table, split.calibrate),
            options.threshold_objective,
            options.threshold_target,
            options.over_detection_rate,
        )
    return from_normal_scores(scores[split.holdout], options.over_detection_rate, tail=options.tail)


def fit_sensor_line(line: str, data: Path | str, options: SensorFitOptions, store: ModelStore) -> FitReport:
    """Fit, calibrate, evaluate and store a new version of sensor line ``line``."""
    check_line_name(line)
    options.validate()
    timer = Timer()
    table = read_table(
        data, options.columns, options.label_column,
        time_column=options.time_column, fill=options.fill, gap_factor=options.gap_factor,
    )  # fmt: skip
    n_anomalous = int(table.labels.sum()) if table.labels is not None else 0
    labelled = options.threshold_source == "labelled" or (options.threshold_source == "auto" and n_anomalous >= 2)
    if labelled and n_anomalous < 2:
        raise DataError(
            f"a labelled threshold needs at least 2 anomalous rows (label 1) in {table.path}, found {n_anomalous}"
        )
    split = split_rows(table.labels, len(table.values), options.holdout_fraction, labelled, options.seed)
    window = window_readings(options.window, table.timestamps) if options.head != "autoencoder" else 1
    timer.mark("read")

    scaler = FeatureScaler(len(table.features))
    scaler.fit(torch.from_numpy(table.values[split.train]))
    mean, std = scaler.mean.numpy().astype(np.float64), scaler.std.numpy().astype(np.float64)
    z = (table.values.astype(np.float64) - mean) / std
    heads = list(HEADS) if options.head == "auto" else [options.head]
    fits = [
        _fit_head(h, z, split.train, split.holdout, table.segments, table, options, window, (mean, std)) for h in heads
    ]
    timer.mark("train")

    choices = []
    for fitted in fits:
        scores = score_series(fitted.model, table.values, table.segments).scores
        fitted.model.threshold = _threshold(scores, table, split, labelled, options)
        choices.append((fitted, scores))
    selection = None
    if len(choices) > 1:
        picked, selection = choose_head(choices, table, split, labelled, options)
    else:
        picked = choices[0]
    fitted, scores = picked
    model, threshold = fitted.model, fitted.model.threshold
    holdout_scores = scores[split.holdout]
    metrics = _evaluation(scores, table, split.test, threshold.value) if len(split.test) else None
    timer.mark("calibrate_evaluate")

    z_fitted = z[np.concatenate([split.train, split.holdout])]  # the input statistic needs no held-out rows
    card = ModelCard(
        line=line,
        kind=LineKind.SENSOR_ANOMALY,
        note=options.note,
        inputs=SensorInputs(features=table.features, mean=mean.tolist(), std=std.tolist()),
        head=HeadInfo(
            kind=fitted.head,
            params=fitted.params,
            scorer={"top_features": model.top_k, "window": model.window},
            selection=selection,
        ),
        threshold=threshold,
        alarm=AlarmSettings(
            k=options.alarm_k,
            n=options.alarm_n,
            clear_ratio=options.alarm_clear,
            min_duration=options.alarm_min_duration,
        ),
        calibration=Calibration(
            normal=ScoreSummary.of(holdout_scores), input=ScoreSummary.of(np.sqrt(np.mean(z_fitted**2, axis=1)))
        ),
        metrics=metrics,
        data=DataInfo(
            root=str(table.path.resolve()),
            layout=table.path.suffix.lstrip(".").lower() or "csv",
            fingerprint=_file_digest(table.path),
            n_train=int(len(table.values) - n_anomalous),
            n_fit=len(split.train),
            n_calibration=len(split.holdout) + len(split.calibrate),
            calibration="labelled half, later in time" if labelled else "holdout: the last part of the normal run",
            n_test=len(split.test),
            notes=[*table.notes, *([f"{n_anomalous} anomalous rows"] if n_anomalous else [])],
        ),
        timings=dict(timer.marks),
        training=thin_history(fitted.history) if fitted.history else None,
        software=software_versions(),
    )
    stored = store.write_version(
        card, save_arrays({k: np.ascontiguousarray(v) for k, v in fitted.state.items()}), promote=options.promote
    )
    timer.mark("store")
    return FitReport(stored, {**timer.marks, "total": timer.total()}, [], metrics, options.promote)


def choose_head(
    choices: list[tuple[_Fitted, np.ndarray]],
    table: SensorTable,
    split: _Split,
    labelled: bool,
    options: SensorFitOptions,
) -> tuple[tuple[_Fitted, np.ndarray], dict[str, Any]]:
    """``--head auto``: with labelled rows, the head with the best AUROC on the labelled calibration rows; with
    normal rows only, the best :func:`lineguard.training.sensor_faults.held_out_check`: a threshold from the
    held-out run's earlier half, and on its later half the detection of injected faults (steps, drifts,
    stuck and noisy channels) net of the false alarms (a head that catches more only by alarming more on
    readings it was not calibrated on gains nothing)."""
    measured: dict[str, dict[str, float]] = {}
    for fitted, scores in choices:
        entry: dict[str, float] = {"fit_seconds": round(fitted.seconds, 2)}
        if labelled:
            auroc = roc_auc(_labels(table, split.calibrate), scores[split.calibrate])
            entry["calibration_auroc"] = round(float(auroc), 4) if auroc is not None else 0.0
        else:
            check = held_out_check(
                fitted.model, scores, table, split.holdout, options.over_detection_rate, options.tail, options.seed
            )
            entry.update(false_alarms=check.false_alarms, injected_detection=check.detection, merit=check.merit)
        measured[fitted.head] = entry
    key = "calibration_auroc" if labelled else "merit"
    best = max(range(len(choices)), key=lambda i: measured[choices[i][0].head][key])
    head = choices[best][0].head
    what = (
        "AUROC on the labelled calibration rows"
        if labelled
        else "detection of faults injected into the later half of the held-out run, net of its false alarms"
    )
    reason = f"{head}: the best {what} ({measured[head][key]:.3f}) of {', '.join(measured)}"
    log.info("--head auto chose %s", reason)
    return choices[best], {"chosen": head, "criterion": key, "reason": reason, "heads": measured}


def _evaluation(scores: np.ndarray, table: SensorTable, rows: np.ndarray, threshold: float) -> Evaluation:
    if table.labels is None:
        raise DataError(f"{table.path} has no label column (label, is_anomaly or anomaly): nothing to evaluate")
    groups = table.groups or ["anomaly" if y else "normal" for y in table.labels]
    types = [groups[i] if table.labels[i] else "normal" for i in rows]
    return Evaluation.of_labelled(table.labels[rows], scores[rows], threshold, types)


def evaluate_table(model: SensorModel, table: SensorTable, rows: np.ndarray | None = None) -> Evaluation:
    """Metrics of ``model`` on labelled rows of ``table`` (all rows by default), per fault type. Every row is
    scored in its window over the whole table (each segment a series), then the chosen rows are kept."""
    scores = score_series(model, table.values, table.segments).scores
    index = np.arange(len(table.values)) if rows is None else rows
    return _evaluation(scores, table, index, model.threshold.value)


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
