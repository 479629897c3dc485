"""Faults injected into held-out normal readings: how ``--head auto`` compares heads without labelled faults
(:func:`held_out_check`: false alarms and injected faults on the later half of the held-out run, at a
threshold from its earlier half).

A line fitted on normal data alone has no faults to measure a head on. The held-out normal run (the last
part in time, never fitted on) gets the faults a sensor line meets, one channel at a time, from the middle
of the run onward: a step of 2 standard deviations, a drift ramping to 3, a channel stuck at its value, and
a channel whose noise grows threefold. Each head scores the altered run in its windows (the readings
before the run are its context) at its own calibrated threshold; the share of altered readings it flags,
averaged over faults and channels, is its detection rate. The same faults and channels for every head
(seeded), so the comparison is side by side.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from lineguard.models.sensor_model import SensorModel
from lineguard.models.threshold import from_normal_scores
from lineguard.training.sensor_data import SensorTable

KINDS = ("step", "drift", "stuck", "noise")


def inject(values: np.ndarray, channel: int, kind: str, start: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """``values`` ``(N, n)`` with a ``kind`` fault on ``channel`` from row ``start`` on (a copy)."""
    out = values.copy()
    length = len(values) - start
    if kind == "step":
        out[start:, channel] += 2.0 * std
    elif kind == "drift":
        out[start:, channel] += np.linspace(0.0, 3.0, length) * std
    elif kind == "stuck":
        out[start:, channel] = values[start, channel]
    else:
        out[start:, channel] += rng.normal(0.0, 3.0 * std, length)
    return out


@dataclass(frozen=True)
class HeldOutCheck:
    """A head judged on the later half of the held-out run, at a threshold from the earlier half: its false
    alarms on normal readings it has not been calibrated on, and its detection of injected faults."""

    false_alarms: float
    detection: float

    @property
    def merit(self) -> float:
        """Detection net of false alarms (Youden's J): a head that catches more only by alarming more gains
        nothing."""
        return round(self.detection - self.false_alarms, 4)


def held_out_check(
    model: SensorModel, scores: np.ndarray, table: SensorTable, holdout: np.ndarray, rate: float, tail: str, seed: int
) -> HeldOutCheck:
    """``scores``: every row's score in its window. The held-out run's earlier half sets a threshold (as a fit
    would), the later half measures false alarms and injected faults against it."""
    rows = np.sort(holdout)
    earlier, later = rows[: len(rows) // 2], rows[len(rows) // 2 :]
    threshold = from_normal_scores(scores[earlier], rate, tail=tail)
    judged = copy.copy(model)
    judged.threshold = threshold
    false_alarms = float((scores[later] > threshold.value).mean())
    return HeldOutCheck(round(false_alarms, 4), injected_detection(judged, table, later, seed))


def injected_detection(
    model: SensorModel, table: SensorTable, holdout: np.ndarray, seed: int, channels: int = 4
) -> float:
    """The share of injected faulty readings ``model`` flags, over :data:`KINDS` on ``channels`` channels."""
    rows = np.sort(holdout)
    run = table.values[rows].astype(np.float64)
    context = table.values[max(0, rows[0] - model.window + 1) : rows[0]].astype(np.float64)
    if len(run) < 4:
        return 0.0
    rng = np.random.default_rng(seed)
    std = model.std.astype(np.float64)
    picked = rng.choice(run.shape[1], size=min(channels, run.shape[1]), replace=False)
    start = len(run) // 2
    flagged = []
    for channel in picked:
        for kind in KINDS:
            faulty = inject(run, int(channel), kind, start, float(std[channel]), rng)
            out = model.predict(faulty, context=context)
            flagged.append(float(out.is_anomaly[start:].mean()))
    return round(float(np.mean(flagged)), 4)
