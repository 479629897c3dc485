"""Sensor heads on the Tennessee Eastman process, side by side in one run: fault detection rate per fault,
detection delay, false-alarm rate, fit and scoring time, against published PCA / dynamic PCA figures.

    python -m benchmarks.sensor_quality --data DATASETS/tep [--rate 0.01] [--window 10]

Each head is fitted with ``lineguard fit sensor``'s own code on ``train_normal.csv`` (500 normal readings,
3 minutes apart; the threshold from the last 30% of them, held out in time) and scores every
``test/faultNN.csv`` as one series. Per fault: the fault detection rate (FDR, the share of readings after
the fault's onset at reading 160 that are flagged), the detection delay (readings from the onset to the
first flagged one; x3 for minutes), and the false-alarm rate (FAR) on ``fault00.csv``. The mean FDR is
over the 18 faults the literature treats as detectable (all but 3, 9 and 15). ``alarm`` rows flag a
reading when the line's k-of-n alarm is active instead.

Published figures (Russell, Chiang and Braatz, "Fault detection in industrial processes using canonical
variate analysis and dynamic principal component analysis", Chemometrics and Intelligent Laboratory
Systems 51, 2000, 81-93; the same data files, thresholds at 99% confidence): their missed detection
rates, shown here as 1 - rate. They were transcribed from the paper as we know it, not re-read from a
copy in this repository: check them against the paper before quoting them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.registry.sensor_models import sensor_model
from lineguard.registry.store import ModelStore
from lineguard.training.fit_sensor import fit_sensor_line, score_series
from lineguard.training.options import SensorFitOptions, SensorTrainOptions
from lineguard.training.sensor_data import read_table

DETECTABLE = [1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SHOWN = [5, 10, 16, 19, 20, 21]
ONSET = 160
# Russell, Chiang and Braatz 2000: missed detection rates of PCA T^2, PCA Q, DPCA T^2, DPCA Q per fault
PUBLISHED_MISS = {
    1: (0.008, 0.003, 0.006, 0.005), 2: (0.020, 0.014, 0.019, 0.015), 4: (0.956, 0.038, 0.939, 0.0),
    5: (0.775, 0.746, 0.758, 0.748), 6: (0.011, 0.0, 0.013, 0.0), 7: (0.085, 0.0, 0.159, 0.0),
    8: (0.034, 0.024, 0.028, 0.025), 10: (0.666, 0.659, 0.580, 0.665), 11: (0.794, 0.356, 0.801, 0.193),
    12: (0.029, 0.025, 0.010, 0.024), 13: (0.060, 0.045, 0.049, 0.049), 14: (0.158, 0.0, 0.061, 0.0),
    16: (0.834, 0.755, 0.783, 0.708), 17: (0.259, 0.108, 0.240, 0.053), 18: (0.113, 0.101, 0.111, 0.100),
    19: (0.996, 0.873, 0.993, 0.735), 20: (0.701, 0.550, 0.644, 0.490), 21: (0.736, 0.570, 0.644, 0.558),
}  # fmt: skip
PUBLISHED = ("PCA T2 [R2000]", "PCA Q [R2000]", "DPCA T2 [R2000]", "DPCA Q [R2000]")

HEADS: dict[str, dict[str, Any]] = {
    "autoencoder": {"head": "autoencoder"},
    "window-autoencoder": {"head": "window-autoencoder"},
    "pca (static, W=1)": {"head": "pca", "lags": 0, "window": "1"},
    "pca (DPCA, 2 lags)": {"head": "pca", "lags": 2, "window": "3"},
    "pca (DPCA, 2 lags, W)": {"head": "pca", "lags": 2},
    "auto": {"head": "auto"},
}


def evaluate(line: str, store: ModelStore, data: Path, alarm: bool) -> dict[int, tuple[float, float | None]]:
    """Per fault file: (FDR or FAR, detection delay in readings)."""
    from lineguard.deployments.streams import alarm_rule
    from lineguard.models.alarm import run

    card = store.read_card(line)
    model = sensor_model(store, card)
    out: dict[int, tuple[float, float | None]] = {}
    for path in sorted((data / "test").glob("fault*.csv")):
        fault = int(path.stem[5:])
        table = read_table(path, model.features)
        scores = score_series(model, table.values, table.segments).scores
        flagged = (
            run(alarm_rule(card, model.threshold.value), scores, model.threshold.value)[0]
            if alarm
            else (scores > model.threshold.value)
        )
        if fault == 0:
            out[0] = (float(flagged.mean()), None)
            continue
        after = flagged[ONSET:]
        delay = float(np.argmax(after)) if after.any() else None
        out[fault] = (float(after.mean()), delay)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the folder of the TEP CSVs (README: Data)")
    parser.add_argument("--rate", type=float, default=0.01, help="the threshold's target over-detection rate")
    parser.add_argument("--window", default="10", help="readings a window head sees (10 = 30 minutes)")
    parser.add_argument("--holdout", type=float, default=0.3, help="share of train_normal held out, last in time")
    args = parser.parse_args(argv)
    if not (args.data / "train_normal.csv").is_file():
        raise SystemExit(f"{args.data} has no train_normal.csv: give --data, the folder of the TEP files")
    store = ModelStore(Path(tempfile.mkdtemp()) / "store")
    rows: list[tuple[str, dict[int, tuple[float, float | None]], float, float, str]] = []
    for name, settings in HEADS.items():
        options = SensorFitOptions(
            head=settings["head"],
            window=str(settings.get("window", args.window)),
            lags=int(settings.get("lags", 2)),
            over_detection_rate=args.rate,
            holdout_fraction=args.holdout,
            train=SensorTrainOptions(workers=0),
        )
        line = f"tep-{len(rows)}"
        started = time.perf_counter()
        report = fit_sensor_line(line, args.data / "train_normal.csv", options, store)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        result = evaluate(line, store, args.data, alarm=False)
        score_ms = (time.perf_counter() - started) * 1000 / (22 * 960)
        rows.append((name, result, fit_s, score_ms, report.card.threshold.method.split(" ")[0]))
        rule = report.card.alarm
        assert rule is not None
        rows.append(
            (f"  + alarm {rule.k} of {rule.n}", evaluate(line, store, args.data, alarm=True), fit_s, score_ms, "")
        )
    print(f"TEP, threshold at {args.rate:.0%} over-detection on the held-out last {args.holdout:.0%} of train_normal")
    head = "| head | FAR fault00 | mean FDR (18) | " + " | ".join(f"FDR {f}" for f in SHOWN)
    print(head + " | mean delay (readings) | fit s | score ms/reading | threshold |")
    print("|" + "---|" * (7 + len(SHOWN)))
    for name, result, fit_s, score_ms, method in rows:
        fdr = np.mean([result[f][0] for f in DETECTABLE])
        delays = [d for f in DETECTABLE if (d := result[f][1]) is not None]
        shown = " | ".join(f"{result[f][0]:.3f}" for f in SHOWN)
        print(
            f"| {name} | {result[0][0]:.3f} | {fdr:.3f} | {shown} | {np.mean(delays):.1f} | {fit_s:.1f} | "
            f"{score_ms:.3f} | {method} |"
        )
    for i, name in enumerate(PUBLISHED):
        fdr = np.mean([1 - PUBLISHED_MISS[f][i] for f in DETECTABLE])
        shown = " | ".join(f"{1 - PUBLISHED_MISS[f][i]:.3f}" for f in SHOWN)
        print(f"| {name} | (see paper) | {fdr:.3f} | {shown} | | | | 99% limits |")
    print("\nper fault (FDR):")
    print("| head | " + " | ".join(str(f) for f in DETECTABLE) + " |")
    for name, result, *_ in rows:
        print(f"| {name} | " + " | ".join(f"{result[f][0]:.2f}" for f in DETECTABLE) + " |")
    print("\nper fault (detection delay: readings after the onset at reading 160 to the first flagged one; - never)")
    print("| head | " + " | ".join(str(f) for f in DETECTABLE) + " |")
    for name, result, *_ in rows:
        cells = ("-" if (d := result[f][1]) is None else f"{d:.0f}" for f in DETECTABLE)
        print(f"| {name} | " + " | ".join(cells) + " |")
    synthetic()


def synthetic(rates: tuple[float, ...] = (0.004, 0.01, 0.02)) -> None:
    """The synthetic line (``write_csv``, seed 0): each head's miss rate per fault kind on the test blocks, at
    thresholds that give every head the same over-detection rate on the test blocks' normal readings."""
    from lineguard.training.synthetic_sensor import write_csv

    folder = Path(tempfile.mkdtemp())
    data = write_csv(folder / "line.csv", rows=4000)
    store = ModelStore(folder / "store")
    print("\nsynthetic line, 4000 readings: miss rate per fault kind at the same over-detection rate (test blocks)")
    print("| head | over-detection | AUROC | drift | spike | stuck | all |")
    print("|---|---|---|---|---|---|---|")
    for name, settings in HEADS.items():
        options = SensorFitOptions(
            head=settings["head"],
            window=str(settings.get("window", "10")),
            lags=int(settings.get("lags", 2)),
            train=SensorTrainOptions(workers=0),
        )
        report = fit_sensor_line(f"syn-{abs(hash(name)) % 1000}", data, options, store)
        metrics = report.evaluation
        assert metrics is not None and metrics.test_scores is not None
        scores = np.asarray(metrics.test_scores.scores)
        labels = np.asarray(metrics.test_scores.labels).astype(bool)
        kinds = np.asarray(metrics.test_scores.types)
        for rate in rates:
            threshold = float(np.quantile(scores[~labels], 1 - rate))
            miss = {k: float((scores[labels & (kinds == k)] <= threshold).mean()) for k in ("drift", "spike", "stuck")}
            every = float((scores[labels] <= threshold).mean())
            counts = {k: int((labels & (kinds == k)).sum()) for k in miss}
            cells = " | ".join(f"{miss[k]:.3f} (of {counts[k]})" for k in miss)
            print(f"| {name} | {rate:.3f} | {metrics.image_auroc:.3f} | {cells} | {every:.3f} |")


if __name__ == "__main__":
    main()
