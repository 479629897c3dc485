"""Training an image classifier's head (and, if asked, the last backbone stage) on cached features.

The shared backbone is frozen, so its output for every view of every training image is computed once
(:mod:`lineguard.training.engine`, mode ``"classifier"``) and the epochs run on those cached tensors: seconds
per epoch on a CPU instead of a backbone pass per image per epoch. What trains is exactly what serves:
the line's tail stage (when fine-tuned) and its head, on the shared backbone's features.

- Class-balanced sampling: each epoch draws as many rows as there are, with replacement, each class
  equally likely, so a rare defect class is seen as often as the normal one.
- Early stopping on the validation loss (clean views of held-out images), best weights kept.
- ``workers == 0``: in this process; ``workers >= 1``: Ray Train's ``TorchTrainer`` (GPUs when the
  cluster has them). The cached tensors go to the object store once; every worker draws the same
  balanced sample and takes its share of it, with a per-worker batch of ``batch_size / workers``,
  DDP averaging the gradients.
- The fine-tuned stage learns at ``tail_lr_ratio`` times the head's rate, so the pretrained
  features are adjusted rather than overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lineguard.models.classifier import ImageClassifier
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


@dataclass
class CachedSplit:
    """Frozen-part outputs of one split: ``pooled (N, D0)`` float32, ``deep (N, C, h, w)`` float16 or
    None, ``labels (N,)`` int64."""

    pooled: np.ndarray
    deep: np.ndarray | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self, rows: Any = slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        deep = None if self.deep is None else torch.from_numpy(np.ascontiguousarray(self.deep[rows]))
        return torch.from_numpy(self.pooled[rows]), torch.from_numpy(self.labels[rows]), deep


class _LossModule(nn.Module):
    """What DDP wraps: cached inputs and labels in, cross-entropy out."""

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: torch.Tensor, labels: torch.Tensor, deep: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(self.model.logits_from(pooled, deep), labels)


@torch.no_grad()
def logits_of(model: ImageClassifier, split: CachedSplit, chunk: int = 512) -> torch.Tensor:
    """Raw logits ``(N, K)`` of a cached split, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(split), chunk):
        pooled, _, deep = split.tensors(slice(start, start + chunk))
        device = model.mean.device
        out.append(model.logits_from(pooled.to(device), None if deep is None else deep.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.num_classes)


@torch.no_grad()
def fit_standardizer(model: ImageClassifier, split: CachedSplit, chunk: int = 512) -> None:
    """The head's input standardisation, from the training rows (the tail as it starts)."""
    vectors = []
    device = model.mean.device
    for start in range(0, len(split), chunk):
        pooled, _, deep = split.tensors(slice(start, start + chunk))
        vectors.append(model.vector(pooled.to(device), None if deep is None else deep.to(device)))
    model.fit_standardizer(torch.cat(vectors))


def _optimiser(model: ImageClassifier, options: TrainOptions, tail_lr_ratio: float) -> torch.optim.Optimizer:
    groups: list[dict[str, Any]] = [{"params": list(model.head.parameters()), "lr": options.lr}]
    if model.tail is not None and model.tail_mode == "finetune":
        groups.append({"params": list(model.tail.last.parameters()), "lr": options.lr * tail_lr_ratio})
    return torch.optim.AdamW(groups, lr=options.lr, weight_decay=options.weight_decay)


def _balanced_batches(
    split: CachedSplit,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch: as many rows as the split has, drawn with replacement over the whole split, every
    class equally likely. With ``world`` workers (the same ``generator`` seed on each) worker ``rank``
    takes every ``world``-th draw, so each runs the same number of batches (DDP needs that) and a rare
    class is as likely on every worker."""
    counts = np.bincount(split.labels)
    weights = torch.from_numpy(1.0 / counts[split.labels])
    drawn = torch.multinomial(weights, len(split), replacement=True, generator=generator).numpy()
    per_rank = len(drawn) // world
    drawn = drawn[rank::world][:per_rank]
    for start in range(0, len(drawn), batch_size):
        pooled, y, deep = split.tensors(np.sort(drawn[start : start + batch_size]))
        batch = (pooled.to(device), y.to(device))
        yield batch if deep is None else (*batch, deep.to(device))


def train_classifier(
    model: ImageClassifier,
    train: CachedSplit,
    val: CachedSplit,
    options: TrainOptions,
    tail_lr_ratio: float = 0.1,
) -> TrainResult:
    """Train ``model`` (standardiser already fitted) and load its best weights; returns them and the history."""
    options.validate()
    started = time.perf_counter()
    if options.worker_count == 0:
        result = _train_here(model, train, val, options, tail_lr_ratio)
    else:
        import ray

        ensure_ray()
        config = {
            "params": model.params(),
            "state": {k: v.numpy() for k, v in model.fitted_state().items()},
            "data": ray.put({"train": train, "val": val}),
            "tail_lr_ratio": tail_lr_ratio,
        }
        result = fit_with_ray_train(_worker_loop, config, options, "image-classifier")
        model.load_fitted_state(result.state)
        model.eval()
    result.history["seconds"] = round(time.perf_counter() - started, 2)
    result.history["workers"] = options.worker_count
    return result


def _train_here(
    model: ImageClassifier, train: CachedSplit, val: CachedSplit, options: TrainOptions, tail_lr_ratio: float
) -> TrainResult:
    torch.manual_seed(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    device = model.mean.device
    val_pooled, val_labels, val_deep = (None if t is None else t.to(device) for t in val.tensors())
    assert val_pooled is not None and val_labels is not None

    def validate() -> float:
        return float(F.cross_entropy(model.logits_from(val_pooled, val_deep), val_labels))

    report, best = keep_best(model.fitted_state())
    history = run_epochs(
        _LossModule(model),
        _optimiser(model, options, tail_lr_ratio),
        lambda _: _balanced_batches(train, options.batch_size, generator, device),
        validate,
        model.fitted_state,
        options,
        report,
    )
    model.load_fitted_state(best())
    model.eval()
    return TrainResult(best(), history)


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray
    from ray.train.torch import get_device, prepare_model

    options: TrainOptions = config["options"]
    world, rank = worker_setup(options)
    model = ImageClassifier(**config["params"])
    model.load_fitted_state({k: torch.from_numpy(np.array(v)) for k, v in config["state"].items()})
    net = prepare_model(_LossModule(model))  # moves `model` to the device in place; DDP with more than one worker
    device = get_device()
    data = ray.get(config["data"])
    train, val = data["train"], data["val"]
    per_worker = max(1, options.batch_size // world)
    generator = torch.Generator().manual_seed(options.seed)  # the same draws on every worker: each takes its share
    val_pooled, val_labels, val_deep = (None if t is None else t.to(device) for t in val.tensors())
    assert val_pooled is not None and val_labels is not None

    def validate() -> float:
        return float(F.cross_entropy(model.logits_from(val_pooled, val_deep), val_labels))

    reports = WorkerReports(model.fitted_state(), options.report_every)
    history = run_epochs(
        net,
        _optimiser(model, options, config["tail_lr_ratio"]),
        lambda _: _balanced_batches(train, per_worker, generator, device, rank, world),
        validate,
        model.fitted_state,
        options,
        reports,
        world_average(device),
    )
    reports.finish(history)
