"""Sensor lines trained with Ray Train: data-parallel workers reach what one worker reaches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.training.options import SensorTrainOptions
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic_sensor import write_csv
from lineguard.training.train_sensor import train_autoencoder


@pytest.fixture(scope="module")
def sensor_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("sensor") / "line.csv", rows=4000, seed=0)


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
        runs[workers] = train_autoencoder(model, train_z, val_z, SensorTrainOptions(workers=workers, seed=1)).history
        with torch.no_grad():
            losses[workers] = float(model.loss(torch.from_numpy(val_z)))
        assert losses[workers] == pytest.approx(runs[workers]["best_val_loss"], rel=1e-4)  # the best weights came back
    seconds = f"{runs[1]['seconds']} s vs {runs[2]['seconds']} s"
    print(f"held-out loss: 1 worker {losses[1]:.5f}, 2 workers {losses[2]:.5f}; {seconds}")
    assert runs[2]["workers"] == 2 and runs[2]["epochs_run"] >= 10
    assert abs(losses[2] - losses[1]) / losses[1] < 0.05, (losses, runs[1]["epochs_run"], runs[2]["epochs_run"])
