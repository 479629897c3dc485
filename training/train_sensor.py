"""Training a sensor AutoEncoder: in this process, or data-parallel with Ray Train.

One epoch loop (:func:`run_epochs`) serves both paths:

- ``workers == 0``: plain PyTorch here (fast for small lines; no Ray start-up).
- ``workers >= 1``: Ray Train's ``TorchTrainer`` with that many workers (GPUs when the cluster has
  them). Each worker takes its shard of the training rows from Ray Data once and keeps it in memory
  (sensor tables are small: a million rows of 50 values is 200 MB); streaming the shard again every
  epoch cost about 2 s per epoch, 585 s for a 300-epoch fit against 5 s in process. Gradients are
  averaged by DDP, and the per-worker batch is ``batch_size / workers`` so the optimisation matches
  one worker. The held-out loss is averaged over workers, so all take the same early-stopping decision.

Early stopping: training stops after ``patience`` epochs without a better held-out loss and the best
weights are kept. Checkpoints (rank 0, on every improvement) are safetensors files, never pickles.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.autoencoder import SensorAutoEncoder


@dataclass
class TrainOptions:
    epochs: int = 300
    patience: int = 15
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 1e-5
    seed: int = 0
    workers: int = 1
    use_gpu: bool | None = None  # None: when the Ray cluster has GPUs
    storage_path: str | None = None  # Ray Train checkpoints; a temporary folder by default
    report_every: int = 25  # epochs between Ray Train reports (each costs a round trip to the controller)

    def validate(self) -> None:
        if min(self.epochs, self.patience, self.batch_size, self.report_every) < 1 or self.workers < 0 or self.lr <= 0:
            raise ValueError(
                f"epochs, patience, batch size and report_every must be >= 1, workers >= 0, lr > 0; got {self}"
            )


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]
    history: dict[str, Any] = field(default_factory=dict)


class _LossModule(nn.Module):
    """What DDP wraps: standardised rows in, reconstruction loss out."""

    def __init__(self, model: SensorAutoEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.loss(z)


Report = Callable[[int, float, float, bool, dict[str, torch.Tensor]], None]


def run_epochs(
    net: nn.Module,
    model: SensorAutoEncoder,
    batches: Callable[[int], Iterator[torch.Tensor]],
    val: torch.Tensor,
    options: TrainOptions,
    report: Report,
    average: Callable[[float], float] = lambda x: x,
) -> dict[str, Any]:
    """The epoch loop; ``net`` is ``model`` wrapped for training (DDP or not)."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    # halve the step when the held-out loss stalls: runs settle at the same floor instead of stopping
    # wherever the noise of a fixed step leaves them (what makes 1 and 2 workers comparable)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=max(1, options.patience // 3))
    best, best_epoch, waited = math.inf, -1, 0
    train_losses: list[float] = []
    val_losses: list[float] = []
    for epoch in range(options.epochs):
        net.train()
        total, count = 0.0, 0
        for z in batches(epoch):
            optimiser.zero_grad(set_to_none=True)
            loss = net(z)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(z)
            count += len(z)
        net.eval()
        with torch.no_grad():
            val_loss = average(float(model.loss(val)))
        plateau.step(val_loss)
        train_losses.append(total / max(count, 1))
        val_losses.append(val_loss)
        improved = val_loss < best * (1 - 1e-4)
        if improved:
            best, best_epoch, waited = val_loss, epoch, 0
        else:
            waited += 1
        report(epoch, train_losses[-1], val_loss, improved, model.fitted_state() if improved else {})
        if waited >= options.patience:
            break
    return {
        "epochs_run": len(val_losses),
        "best_epoch": best_epoch,
        "best_val_loss": best,
        "stopped_early": len(val_losses) < options.epochs,
        "train_loss": train_losses,
        "val_loss": val_losses,
    }


def train_autoencoder(
    model: SensorAutoEncoder, train_z: np.ndarray, val_z: np.ndarray, options: TrainOptions
) -> TrainResult:
    """Fit ``model`` (its scaler already fitted) on standardised rows; returns the best weights."""
    options.validate()
    started = time.perf_counter()
    if options.workers == 0:
        result = _train_here(model, train_z, val_z, options)
    else:
        result = _train_ray(model, train_z, val_z, options)
    result.history["seconds"] = round(time.perf_counter() - started, 2)
    result.history["workers"] = options.workers
    return result


def _train_here(model: SensorAutoEncoder, train_z: np.ndarray, val_z: np.ndarray, options: TrainOptions) -> TrainResult:
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    data = torch.from_numpy(train_z.astype(np.float32))
    val = torch.from_numpy(val_z.astype(np.float32))
    best: dict[str, torch.Tensor] = model.fitted_state()

    def batches(_: int) -> Iterator[torch.Tensor]:
        order = torch.from_numpy(rng.permutation(len(data)))
        for start in range(0, len(data), options.batch_size):
            yield data[order[start : start + options.batch_size]]

    def report(epoch: int, train_loss: float, val_loss: float, improved: bool, state: dict[str, torch.Tensor]) -> None:
        nonlocal best
        if improved:
            best = state

    history = run_epochs(_LossModule(model), model, batches, val, options, report)
    model.load_state_dict(best)
    return TrainResult(best, history)


def _train_ray(model: SensorAutoEncoder, train_z: np.ndarray, val_z: np.ndarray, options: TrainOptions) -> TrainResult:
    import ray
    import ray.train
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from safetensors.torch import load_file

    free = ray.available_resources()
    use_gpu = options.use_gpu if options.use_gpu is not None else float(free.get("GPU", 0)) >= options.workers
    cpus = max(0.25, min(1.0, float(free.get("CPU", 1)) / options.workers))
    config = {
        "params": model.params(),
        "scaler": {k: v.tolist() for k, v in model.scaler.state_dict().items()},
        "val": val_z.astype(np.float32),
        "options": options,
    }
    with tempfile.TemporaryDirectory(prefix="lineguard-train-") as tmp:
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config=config,
            scaling_config=ScalingConfig(
                num_workers=options.workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}
            ),
            run_config=RunConfig(
                storage_path=options.storage_path or tmp,
                name="sensor-autoencoder",
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
            datasets={"train": ray.data.from_numpy(train_z.astype(np.float32))},
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError("Ray Train finished without a checkpoint: no epoch improved the held-out loss")
        with result.checkpoint.as_directory() as folder:
            state = load_file(str(Path(folder) / "model.safetensors"))
            history = json.loads((Path(folder) / "history.json").read_text())
    model.load_state_dict(state)
    history["use_gpu"] = use_gpu
    return TrainResult(state, history)


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch.distributed as dist
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model
    from safetensors.torch import save_file

    options: TrainOptions = config["options"]
    context = ray.train.get_context()
    world, rank = context.get_world_size(), context.get_world_rank()
    torch.manual_seed(options.seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    model = SensorAutoEncoder(**config["params"])
    model.scaler.load_state_dict({k: torch.tensor(v) for k, v in config["scaler"].items()})
    net = prepare_model(_LossModule(model))  # moves `model` to the device in place; DDP with more than one worker
    device = get_device()
    val = torch.from_numpy(config["val"]).to(device)
    shard = ray.train.get_dataset_shard("train")
    rows = torch.cat([b["data"] for b in shard.iter_torch_batches(batch_size=65536, dtypes=torch.float32)]).to(device)
    per_worker = max(1, options.batch_size // world)
    generator = torch.Generator().manual_seed(options.seed + rank)

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(rows), generator=generator).to(device)
        for start in range(0, len(rows), per_worker):
            yield rows[order[start : start + per_worker]]

    def average(value: float) -> float:
        if world == 1 or not dist.is_initialized():
            return value
        tensor = torch.tensor([value], device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / float(world)

    best: dict[str, torch.Tensor] = model.fitted_state()

    def checkpoint(state: dict[str, torch.Tensor], extra: dict[str, Any] | None = None) -> Checkpoint:
        folder = tempfile.mkdtemp(prefix="lineguard-ckpt-")
        save_file({k: v.cpu().contiguous() for k, v in state.items()}, str(Path(folder) / "model.safetensors"))
        (Path(folder) / "history.json").write_text(json.dumps(extra or {}))
        return Checkpoint.from_directory(folder)

    saved = True  # nothing new to checkpoint yet

    def report(epoch: int, train_loss: float, val_loss: float, improved: bool, state: dict[str, torch.Tensor]) -> None:
        # Every worker reports at the same epochs (a report is a barrier), and only every few epochs:
        # each report is a round trip to the Train controller (about 2 s per epoch when done every epoch).
        nonlocal best, saved
        if improved:
            best, saved = state, False
        if (epoch + 1) % options.report_every:
            return
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        if rank == 0 and not saved:
            ray.train.report(metrics, checkpoint=checkpoint(best, metrics))
            saved = True
        else:
            ray.train.report(metrics)

    history = run_epochs(net, model, batches, val, options, report, average)
    # the last checkpoint holds the best weights and the whole history (Train V2 keeps its metrics)
    final = dict(history)
    ray.train.report(final, checkpoint=checkpoint(best, final) if rank == 0 else None)
