"""Sensor lines: reading tables, fitting (in process and with Ray Train), the card, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lineguard.cli.main import main
from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.registry.loaders import sensor_model_from_card
from lineguard.registry.store import ModelStore
from lineguard.training.fit_sensor import SensorFitOptions, fit_sensor_line, split_rows
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic_sensor import FEATURES, write_csv
from lineguard.training.train_sensor import TrainOptions, train_autoencoder


@pytest.fixture(scope="module")
def sensor_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4000 readings of 12 correlated channels with drift, spike and stuck-sensor faults."""
    return write_csv(tmp_path_factory.mktemp("sensor") / "line.csv", rows=4000, seed=0)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_table_finds_features_labels_and_faults(sensor_csv: Path, tmp_path: Path) -> None:
    table = read_table(sensor_csv)
    assert table.features == FEATURES and table.values.shape == (4000, 12) and table.values.dtype == np.float32
    assert table.labels is not None and 0.03 < table.labels.mean() < 0.12
    assert table.groups is not None and {"drift", "spike", "stuck"} <= set(table.groups)
    assert read_table(sensor_csv, ["temp_1", "current_1"]).features == ["temp_1", "current_1"]
    parquet = tmp_path / "line.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "b": [2, 4, 7]}), parquet)
    assert read_table(parquet).values.tolist() == [[1, 2], [2, 4], [3, 7]]


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("a,b\n1,2\n3,x\n5,6\n", None, "column 'b' row 2 holds 'x', not a number"),
        ("a,b\n1,2\n3,\n5,6\n", None, "column 'b' is empty at row 2"),
        ("a,b\n1,2\n3,4\n", ["a", "c"], "column(s) ['c'] are not in"),
        ("a,b,label\n1,2,0\n3,4,2\n", None, "row 2 has 2"),
        ("a,name\n1,x\n2,y\n", None, "need at least 2"),
        ("a,b\n1,2\n", None, "at least 2 normal rows"),
        ("a,b\n1,2\n3,inf\n", None, "values must be finite"),
    ],
)
def test_bad_tables_name_the_column_and_row(tmp_path: Path, text: str, columns: list[str] | None, message: str) -> None:
    with pytest.raises(ValueError) as err:
        read_table(write(tmp_path / "bad.csv", text), columns)
    assert message in str(err.value)


def test_split_keeps_rows_apart() -> None:
    labels = np.array([0] * 900 + [1] * 100)
    split = split_rows(labels, 1000, 0.15, labelled=True, seed=0)
    parts = [split.train, split.holdout, split.calibrate, split.test]
    assert sum(len(p) for p in parts) == 1000 and len(np.unique(np.concatenate(parts))) == 1000
    assert labels[split.train].sum() == labels[split.holdout].sum() == 0
    assert labels[split.calibrate].sum() == labels[split.test].sum() == 50
    with pytest.raises(ValueError, match="too few"):
        split_rows(np.zeros(3, dtype=int), 3, 0.15, labelled=False, seed=0)


def test_fit_detects_injected_faults_at_the_calibrated_threshold(sensor_csv: Path, store: ModelStore) -> None:
    report = fit_sensor_line("press-1", sensor_csv, SensorFitOptions(train=TrainOptions(workers=0)), store)
    card = report.card
    assert card.kind == "sensor-anomaly" and card.version == "v1" and store.current_version("press-1") == "v1"
    assert card.inputs is not None and card.inputs.features == FEATURES and len(card.inputs.std) == 12
    assert card.head is not None and card.head.kind == "autoencoder" and card.head.params["n_features"] == 12
    assert card.threshold["method"] == "labelled_f1" and card.training["epochs_run"] >= 10
    metrics = report.metrics
    assert metrics is not None
    assert metrics["image_auroc"] > 0.98 and metrics["over_detection_rate"] < 0.05
    assert metrics["per_defect_type"]["drift"]["miss_rate"] < 0.1
    assert metrics["per_defect_type"]["spike"]["miss_rate"] < 0.1
    assert metrics["per_defect_type"]["stuck"]["miss_rate"] < 0.25  # a stuck sensor looks right at first
    model = sensor_model_from_card(store, card)  # reloads from safetensors + JSON
    table = read_table(sensor_csv)
    scores = model.predict(table.values).scores
    assert scores[table.labels == 1].mean() > 10 * np.median(scores[table.labels == 0])

    normal_only = SensorFitOptions(threshold_source="normal", train=TrainOptions(workers=0, epochs=80))
    second = fit_sensor_line("press-1", sensor_csv, normal_only, store).card
    assert second.version == "v2" and second.threshold["method"] == "normal_conformal_quantile"
    assert second.calibration["n"] == second.data.n_calibration  # type: ignore[union-attr]


def test_cli_fit_evaluate_predict(sensor_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "store")
    common = ["--store", root]
    assert main([*common, "fit", "--kind", "sensor", "--line", "l1", "--data", str(sensor_csv), "--workers", "0",
                 "--epochs", "40", "--hidden", "24,12", "--latent", "4"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "stored v1" in out and "fault type" in out
    assert main([*common, "evaluate", "--line", "l1", "--data", str(sensor_csv), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["image_auroc"] > 0.9
    assert (tmp_path / "ev" / "histogram.png").stat().st_size > 5000
    capsys.readouterr()
    reading = ",".join(["1.0"] * 12)
    assert main([*common, "predict", "--line", "l1", "--values", reading]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[0])
    assert answer["status"] == "anomaly" and len(answer["top_features"]) == 3
    assert main([*common, "predict", "--line", "l1", "--values", "1,2,3"]) == 2
    assert "expects 12 finite values" in capsys.readouterr().err
    bad = write(tmp_path / "bad.csv", "a,b\n1,2\n3,oops\n")
    assert main([*common, "fit", "--kind", "sensor", "--line", "l2", "--data", str(bad), "--workers", "0"]) == 2
    assert "column 'b' row 2 holds 'oops'" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_train_two_workers_match_one(ray_session: None, sensor_csv: Path) -> None:
    """Data-parallel training (2 CPU workers, DDP) reaches the held-out loss of 1 worker within 5%."""
    table = read_table(sensor_csv)
    normal = table.values[table.labels == 0]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(normal))
    train, val = normal[order[:3000]], normal[order[3000:]]
    losses, runs = {}, {}
    for workers in (1, 2):
        model = SensorAutoEncoder(12)
        model.scaler.fit(torch.from_numpy(train))
        with torch.no_grad():
            train_z, val_z = (model.scaler(torch.from_numpy(v)).numpy() for v in (train, val))
        runs[workers] = train_autoencoder(model, train_z, val_z, TrainOptions(workers=workers, seed=1)).history
        with torch.no_grad():
            losses[workers] = float(model.loss(torch.from_numpy(val_z)))
        assert losses[workers] == pytest.approx(runs[workers]["best_val_loss"], rel=1e-4)  # the best weights came back
    seconds = f"{runs[1]['seconds']} s vs {runs[2]['seconds']} s"
    print(f"held-out loss: 1 worker {losses[1]:.5f}, 2 workers {losses[2]:.5f}; {seconds}")
    assert runs[2]["workers"] == 2 and runs[2]["epochs_run"] >= 10
    assert abs(losses[2] - losses[1]) / losses[1] < 0.05, (losses, runs[1]["epochs_run"], runs[2]["epochs_run"])
