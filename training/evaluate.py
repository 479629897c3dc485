"""Evaluating an image-anomaly line on labelled images: anomaly maps of the test images, image and pixel
metrics at the line's threshold, per defect type (:class:`lineguard.registry.sections.Evaluation`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lineguard.errors import NotFittedError
from lineguard.models.metrics import pixel_roc_auc
from lineguard.models.postprocess import upsample
from lineguard.models.scoring import AnomalyScorer
from lineguard.registry.sections import Evaluation
from lineguard.training import engine
from lineguard.training.data import Sample, read_mask
from lineguard.training.options import RunSettings

log = logging.getLogger(__name__)


@dataclass
class TestScores:
    """Anomaly maps of the readable test images, in the order of ``samples``."""

    samples: list[Sample]
    maps: torch.Tensor  # (N, h, w) smoothed, raw units
    direct: torch.Tensor | None  # (N,) when the head scores images itself
    skipped: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    metrics: Evaluation
    samples: list[Sample]
    scores: np.ndarray
    maps: torch.Tensor
    skipped: list[str] = field(default_factory=list)


def score_samples(samples: Sequence[Sample], spec: engine.WorkerSpec, run: RunSettings) -> TestScores:
    """Maps for ``samples`` through the engine (``spec.mode == "maps"``), unreadable files skipped."""
    by_path: dict[str, tuple[torch.Tensor, float]] = {}
    skipped: list[str] = []
    label = "scoring test images" if run.progress else ""
    for batch in engine.run(spec, [s.path for s in samples], run.worker_count, run.batch_size, label):
        rows, paths, errors = engine.split_errors(batch)
        skipped.extend(errors)
        for i, path in enumerate(paths):
            by_path[path] = (torch.from_numpy(rows["map"][i]), float(rows["direct"][i]))
    kept = [s for s in samples if str(s.path) in by_path]
    if not kept:
        return TestScores([], torch.zeros(0, 1, 1), None, skipped)
    maps = torch.stack([by_path[str(s.path)][0] for s in kept])
    direct = torch.tensor([by_path[str(s.path)][1] for s in kept])
    return TestScores(kept, maps, None if torch.isnan(direct).all() else direct, skipped)


def evaluate_maps(scorer: AnomalyScorer, test: TestScores, image_size: int) -> EvalResult:
    """Image and pixel metrics at the scorer's threshold, overall and per defect type."""
    if scorer.threshold is None:
        raise NotFittedError("evaluation needs a threshold: fit the line first")
    scores = scorer.image_scores(test.maps, test.direct).cpu().numpy()
    labels = np.array([s.label for s in test.samples])
    metrics = Evaluation.of_labelled(labels, scores, scorer.threshold.value, [s.defect_type for s in test.samples])
    metrics = metrics.model_copy(update={"pixel_auroc": _pixel_auroc(test, image_size)})
    return EvalResult(metrics, test.samples, scores, test.maps, test.skipped)


def _pixel_auroc(test: TestScores, image_size: int) -> float | None:
    """Pixel AUROC at the model's input resolution, over good images and defective ones with masks."""
    chosen = [i for i, s in enumerate(test.samples) if s.label == 0 or s.mask is not None]
    if not any(test.samples[i].label == 1 for i in chosen):
        return None
    masks, maps = [], []
    for start in range(0, len(chosen), 64):
        index = chosen[start : start + 64]
        full = upsample(test.maps[index], (image_size, image_size)).numpy()
        for j, i in enumerate(index):
            masks.append(read_mask(test.samples[i].mask, image_size))
            maps.append(full[j])
    return pixel_roc_auc(masks, maps)
