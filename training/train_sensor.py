"""Training a sensor AutoEncoder: in this process, or data-parallel with Ray Train.

The epoch loop, early stopping and the Ray Train harness are shared (:mod:`lineguard.training.train_loop`):

- ``workers == 0``: plain PyTorch here (fast for small lines; no Ray start-up).
- ``workers >= 1``: Ray Train's ``TorchTrainer`` with that many workers (GPUs when the cluster has
  them). Each worker takes its shard of the training rows from Ray Data once and keeps it in memory
  (sensor tables are small: a million rows of 50 values is 200 MB); streaming the shard again every
  epoch cost about 2 s per epoch, 585 s for a 300-epoch fit against 5 s in process. Gradients are
  averaged by DDP, and the per-worker batch is ``batch_size / workers`` so the optimisation matches
  one worker. The held-out loss is averaged over workers, so all take the same early-stopping decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.training.options import TrainOptions
from lineguard.training.runtime import ensure_ray
from lineguard.training.train_loop import (
    TrainResult,
    WorkerReports,
    fit_with_ray_train,
    keep_best,
    run_epochs,
    worker_setup,
    world_average,
)

__all__ = ["TrainResult", "train_autoencoder"]


class _LossModule(nn.Module):
    """What DDP wraps: standardised rows in, reconstruction loss out."""

    def __init__(self, model: SensorAutoEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.loss(z)


def _optimiser(model: SensorAutoEncoder, options: TrainOptions) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)


def train_autoencoder(
    model: SensorAutoEncoder, train_z: np.ndarray, val_z: np.ndarray, options: TrainOptions
) -> TrainResult:
    """Fit ``model`` (its scaler already fitted) on standardised rows; returns the best weights."""
    options.validate()
    started = time.perf_counter()
    if options.worker_count == 0:
        result = _train_here(model, train_z, val_z, options)
    else:
        config = {
            "params": model.params(),
            "scaler": {k: v.tolist() for k, v in model.scaler.state_dict().items()},
            "val": val_z.astype(np.float32),
        }
        import ray

        ensure_ray()
        datasets = {"train": ray.data.from_numpy(train_z.astype(np.float32))}
        result = fit_with_ray_train(_worker_loop, config, options, "sensor-autoencoder", datasets)
        model.load_state_dict(result.state)
    result.history["seconds"] = round(time.perf_counter() - started, 2)
    result.history["workers"] = options.worker_count
    return result


def _train_here(model: SensorAutoEncoder, train_z: np.ndarray, val_z: np.ndarray, options: TrainOptions) -> TrainResult:
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    data = torch.from_numpy(train_z.astype(np.float32))
    val = torch.from_numpy(val_z.astype(np.float32))

    def batches(_: int) -> Iterator[tuple[torch.Tensor]]:
        order = torch.from_numpy(rng.permutation(len(data)))
        for start in range(0, len(data), options.batch_size):
            yield (data[order[start : start + options.batch_size]],)

    report, best = keep_best(model.fitted_state())
    history = run_epochs(
        _LossModule(model),
        _optimiser(model, options),
        batches,
        lambda: float(model.loss(val)),
        model.fitted_state,
        options,
        report,
    )
    model.load_state_dict(best())
    return TrainResult(best(), history)


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    from ray.train.torch import get_device, prepare_model

    options: TrainOptions = config["options"]
    world, rank = worker_setup(options)
    model = SensorAutoEncoder(**config["params"])
    model.scaler.load_state_dict({k: torch.tensor(v) for k, v in config["scaler"].items()})
    net = prepare_model(_LossModule(model))  # moves `model` to the device in place; DDP with more than one worker
    device = get_device()
    val = torch.from_numpy(config["val"]).to(device)
    shard = ray.train.get_dataset_shard("train")
    rows = torch.cat([b["data"] for b in shard.iter_torch_batches(batch_size=65536, dtypes=torch.float32)]).to(device)
    per_worker = max(1, options.batch_size // world)
    generator = torch.Generator().manual_seed(options.seed + rank)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor]]:
        order = torch.randperm(len(rows), generator=generator).to(device)
        for start in range(0, len(rows), per_worker):
            yield (rows[order[start : start + per_worker]],)

    reports = WorkerReports(model.fitted_state(), options.report_every)
    history = run_epochs(
        net,
        _optimiser(model, options),
        batches,
        lambda: float(model.loss(val)),
        model.fitted_state,
        options,
        reports,
        world_average(device),
    )
    reports.finish(history)
