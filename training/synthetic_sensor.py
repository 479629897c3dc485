"""A synthetic sensor line: 12 correlated channels with injected faults, for tests, demo and benchmarks.

Three hidden processes drive every channel, as on a real machine: the load (currents, temperatures
and vibration follow it), the ambient temperature, and the spindle speed (vibration and pressure).
Each channel is a noisy linear mix of them, so a single channel can look plausible on its own while
breaking the relation with the others. Faults, on a share of the rows:

- ``drift``: one temperature creeps away from what the load and ambient explain;
- ``spike``: one channel jumps by several standard deviations for a single reading;
- ``stuck``: one channel freezes at a value for a while as the machine keeps changing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FEATURES = [
    "current_1", "current_2", "current_3",
    "temp_1", "temp_2", "temp_3",
    "vibration_1", "vibration_2", "vibration_3",
    "pressure_1", "pressure_2", "pressure_3",
]  # fmt: skip
FAULTS = ("drift", "spike", "stuck")


def normal_operation(rng: np.random.Generator, rows: int) -> np.ndarray:
    """``(rows, 12)`` readings of a healthy machine."""
    t = np.arange(rows, dtype=np.float64)
    load = 0.6 + 0.3 * np.sin(t / 150) + 0.1 * np.cumsum(rng.normal(0, 0.02, rows)).clip(-1, 1)
    ambient = 22 + 3 * np.sin(t / 900 + 1.0) + rng.normal(0, 0.2, rows)
    speed = 1500 + 300 * np.sin(t / 60 + 0.5) + rng.normal(0, 10, rows)
    columns = []
    for i in range(3):
        columns.append(10 + (18 + 2 * i) * load + rng.normal(0, 0.4, rows))  # currents (A)
    for i in range(3):
        columns.append(ambient + (25 + 5 * i) * load + rng.normal(0, 0.5, rows))  # temperatures (deg C)
    for i in range(3):
        columns.append(0.5 + speed / (1000 + 200 * i) + 0.8 * load + rng.normal(0, 0.05, rows))  # vibration (mm/s)
    for i in range(3):
        columns.append(3 + speed / (500 + 100 * i) + rng.normal(0, 0.05, rows))  # pressure (bar)
    return np.stack(columns, axis=1)


def inject_faults(
    rng: np.random.Generator, values: np.ndarray, share: float, episode: int = 30
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Fault episodes over about ``share`` of the rows: ``(values, labels, fault names)``.

    A drift ramps one temperature from 1 to 2-4 standard deviations over ``episode`` readings; a spike
    is one reading 3-6 standard deviations off; a stuck channel holds its value for ``6 * episode``
    readings. A row is labelled anomalous when its reading is off by at least one standard deviation
    (the first readings of a stuck channel are still right, and stay labelled normal).
    """
    out = values.copy()
    labels = np.zeros(len(values), dtype=np.int64)
    faults = ["none"] * len(values)
    std = values.std(0)
    budget = int(share * len(values) / len(FAULTS))  # faulty rows of each kind
    count = dict.fromkeys(FAULTS, 0)
    for attempt in range(100 * len(values)):
        kind = FAULTS[attempt % len(FAULTS)]
        if count[kind] >= budget:
            if min(count.values()) >= budget:
                break
            continue
        length = {"spike": 1, "drift": episode, "stuck": 6 * episode}[kind]
        start = int(rng.integers(0, len(values) - length))
        rows = np.arange(start, start + length)
        if labels[max(0, start - 1) : start + length + 1].any():
            continue  # keep episodes apart
        channel = int(rng.integers(0, values.shape[1]))
        if kind == "drift":
            channel = 3 + int(rng.integers(0, 3))  # a temperature
            out[rows, channel] += np.linspace(1.0, rng.uniform(2, 4), length) * std[channel]
        elif kind == "spike":
            out[rows, channel] += rng.choice([-1, 1]) * rng.uniform(3, 6) * std[channel]
        else:
            out[rows, channel] = values[start, channel]
        off = np.abs(out[rows, channel] - values[rows, channel]) >= std[channel]
        labels[rows[off]] = 1
        count[kind] += int(off.sum())
        for row in rows[off]:
            faults[row] = kind
    return out, labels, faults


def write_csv(path: Path, rows: int = 4000, fault_share: float = 0.06, seed: int = 0) -> Path:
    """A CSV with ``timestamp``, ``machine``, the 12 channels, ``label`` and ``fault`` columns."""
    rng = np.random.default_rng(seed)
    values, labels, faults = inject_faults(rng, normal_operation(rng, rows), fault_share)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "machine", *FEATURES, "label", "fault"])
        for i in range(rows):
            stamp = f"2026-11-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}"
            writer.writerow([stamp, f"m{i % 4}", *(f"{v:.4f}" for v in values[i]), labels[i], faults[i]])
    return path
