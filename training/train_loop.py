"""The epoch loop and the Ray Train harness that the sensor AutoEncoder and the image classifier share.

- :func:`run_epochs`: train until ``patience`` epochs pass without a better held-out loss, keeping the
  best weights; the learning rate halves when the held-out loss stalls, so runs settle at the same
  floor instead of stopping wherever the noise of a fixed step leaves them (what makes 1 and N workers
  comparable).
- :func:`fit_with_ray_train`: the driver side of a ``TorchTrainer`` run (workers, GPUs when the cluster
  has them, checkpoints kept in a temporary folder); it returns the best weights and the history.
- :class:`WorkerReports`: the worker side: rank 0 checkpoints the best weights as safetensors (never
  pickles), and every worker reports at the same epochs, only every ``report_every`` epochs (a report
  is a barrier and a round trip to the Train controller: about 2 s an epoch when done every epoch).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineguard.errors import DataError
from lineguard.models.memory import keep_large_buffers
from lineguard.registry.sections import TrainingHistory
from lineguard.training.options import TrainOptions
from lineguard.training.runtime import ensure_ray


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]
    history: dict[str, Any] = field(default_factory=dict)


Report = Callable[[int, float, float, bool, dict[str, torch.Tensor]], None]


def run_epochs(
    net: nn.Module,
    optimiser: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[tuple[torch.Tensor, ...]]],
    validate: Callable[[], float],
    snapshot: Callable[[], dict[str, torch.Tensor]],
    options: TrainOptions,
    report: Report,
    average: Callable[[float], float] = lambda x: x,
) -> dict[str, Any]:
    """The epoch loop. ``net(*batch)`` returns the batch's mean loss (``net`` may be DDP-wrapped);
    ``validate()`` the held-out loss; ``snapshot()`` the weights worth keeping."""
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=max(1, options.patience // 3))
    best, best_epoch, waited = math.inf, -1, 0
    train_losses: list[float] = []
    val_losses: list[float] = []
    for epoch in range(options.epochs):
        net.train()
        total, count = 0.0, 0
        for batch in batches(epoch):
            optimiser.zero_grad(set_to_none=True)
            loss = net(*batch)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch[0])
            count += len(batch[0])
        net.eval()
        with torch.no_grad():
            val_loss = average(validate())
        plateau.step(val_loss)
        train_losses.append(total / max(count, 1))
        val_losses.append(val_loss)
        improved = val_loss < best * (1 - 1e-4)
        if improved:
            best, best_epoch, waited = val_loss, epoch, 0
        else:
            waited += 1
        report(epoch, train_losses[-1], val_loss, improved, snapshot() if improved else {})
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


def thin_history(history: dict[str, Any], points: int = 100) -> TrainingHistory:
    """The card's training history: the loss curves cut to about ``points`` epochs (the card stays small)."""
    out = {k: v for k, v in history.items() if k in TrainingHistory.model_fields}
    for key in ("train_loss", "val_loss"):
        curve = list(history.get(key, []))
        step = max(1, len(curve) // points)
        out[key] = [round(float(v), 6) for v in curve[::step]]
        out[f"{key}_every"] = step
    return TrainingHistory(**out)


def keep_best(initial: dict[str, torch.Tensor]) -> tuple[Report, Callable[[], dict[str, torch.Tensor]]]:
    """A ``report`` for training in this process, and a getter of the best weights it saw."""
    best = [initial]

    def report(epoch: int, train_loss: float, val_loss: float, improved: bool, state: dict[str, torch.Tensor]) -> None:
        if improved:
            best[0] = state

    return report, lambda: best[0]


def fit_with_ray_train(
    worker_loop: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    options: TrainOptions,
    name: str,
    datasets: dict[str, Any] | None = None,
) -> TrainResult:
    """Run ``worker_loop`` on ``options.workers`` Ray Train workers; the best weights and the history.

    The worker loop gets ``config`` (plus ``options``) and reports through :class:`WorkerReports`;
    ``datasets`` are Ray Data datasets the workers read their shards of.
    """
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from safetensors.torch import load_file

    workers = options.worker_count
    ensure_ray()
    free = ray.available_resources()
    use_gpu = options.use_gpu if options.use_gpu is not None else float(free.get("GPU", 0)) >= workers
    cpus = max(0.25, min(1.0, float(free.get("CPU", 1)) / workers))
    with tempfile.TemporaryDirectory(prefix="lineguard-train-") as tmp:
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config={**config, "options": options},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(
                storage_path=options.storage_path or tmp, name=name, checkpoint_config=CheckpointConfig(num_to_keep=1)
            ),
            datasets=datasets,
        )
        result = trainer.fit()
        if result.checkpoint is None:
            raise DataError("Ray Train finished without a checkpoint: no epoch improved the held-out loss")
        with result.checkpoint.as_directory() as folder:
            state = load_file(str(Path(folder) / "model.safetensors"))
            history = json.loads((Path(folder) / "history.json").read_text())
    history["use_gpu"] = use_gpu
    return TrainResult(state, history)


class WorkerReports:
    """Checkpointing and reporting on a Ray Train worker (see the module docstring)."""

    def __init__(self, initial: dict[str, torch.Tensor], report_every: int) -> None:
        import ray.train

        self.rank = ray.train.get_context().get_world_rank()
        self.best = initial
        self.saved = True  # nothing new to checkpoint yet
        self.report_every = report_every

    def __call__(self, epoch: int, train_loss: float, val_loss: float, improved: bool, state: dict[str, Any]) -> None:
        import ray.train

        if improved:
            self.best, self.saved = state, False
        if (epoch + 1) % self.report_every:
            return
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        if self.rank == 0 and not self.saved:
            ray.train.report(metrics, checkpoint=self._checkpoint(metrics))
            self.saved = True
        else:
            ray.train.report(metrics)

    def finish(self, history: dict[str, Any]) -> None:
        """The last report: the best weights and the whole history (Train V2 keeps no metrics of its own)."""
        import ray.train

        ray.train.report(history, checkpoint=self._checkpoint(history) if self.rank == 0 else None)

    def _checkpoint(self, extra: dict[str, Any]) -> Any:
        from ray.train import Checkpoint
        from safetensors.torch import save_file

        folder = tempfile.mkdtemp(prefix="lineguard-ckpt-")
        save_file({k: v.cpu().contiguous() for k, v in self.best.items()}, str(Path(folder) / "model.safetensors"))
        (Path(folder) / "history.json").write_text(json.dumps(extra))
        return Checkpoint.from_directory(folder)


def worker_setup(options: TrainOptions) -> tuple[int, int]:
    """On a Ray Train worker: the allocator's thresholds, seed torch, keep CPU workers to one thread each; the
    world size and rank."""
    import ray.train

    context = ray.train.get_context()
    keep_large_buffers()
    torch.manual_seed(options.seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # workers share the node's cores
    return context.get_world_size(), context.get_world_rank()


def world_average(device: torch.device) -> Callable[[float], float]:
    """Average a number over the Ray Train workers (so all take the same early-stopping decision)."""
    import torch.distributed as dist

    def average(value: float) -> float:
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return value
        tensor = torch.tensor([value], device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / dist.get_world_size()

    return average
