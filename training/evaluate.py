"""Evaluating a line on labelled images: metrics, per-defect-type breakdown, histogram and overlays."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from lineguard.models.metrics import image_metrics, pixel_roc_auc, roc_auc
from lineguard.models.postprocess import upsample
from lineguard.models.preprocess import open_image, resize
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.visualize import normalise_map, overlay
from lineguard.training import features as engine
from lineguard.training.data import Sample, read_mask

log = logging.getLogger(__name__)


class RunOptions(Protocol):
    workers: int
    batch_size: int
    progress: bool


@dataclass
class RunSettings:
    """How to run the backbone over many files (FitOptions carries the same fields)."""

    workers: int = 0
    batch_size: int = 16
    progress: bool = True


@dataclass
class TestScores:
    """Anomaly maps of the readable test images, in the order of ``samples``."""

    samples: list[Sample]
    maps: torch.Tensor  # (N, h, w) smoothed, raw units
    direct: torch.Tensor | None  # (N,) when the head scores images itself
    skipped: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    samples: list[Sample]
    scores: np.ndarray
    maps: torch.Tensor
    skipped: list[str] = field(default_factory=list)


def score_samples(samples: Sequence[Sample], spec: engine.WorkerSpec, options: RunOptions) -> TestScores:
    """Maps for ``samples`` through the engine (``spec.mode == "maps"``), unreadable files skipped."""
    by_path: dict[str, tuple[torch.Tensor, float]] = {}
    skipped: list[str] = []
    label = "scoring test images" if options.progress else ""
    for batch in engine.run(spec, [s.path for s in samples], options.workers, options.batch_size, label):
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
        raise ValueError("evaluation needs a threshold: fit the line first")
    scores = scorer.image_scores(test.maps, test.direct).cpu().numpy()
    labels = np.array([s.label for s in test.samples])
    metrics = labelled_metrics(labels, scores, scorer.threshold.value, [s.defect_type for s in test.samples])
    metrics["pixel_auroc"] = _pixel_auroc(test, image_size)
    return EvalResult(json_safe(metrics), test.samples, scores, test.maps, test.skipped)


def labelled_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float, types: Sequence[str]) -> dict[str, Any]:
    """AUROC, rates and confusion at ``threshold``, per defect (or fault) type, and the scores themselves
    (kept so a later threshold change can recompute the rates)."""
    metrics = image_metrics(labels, scores, threshold)
    kinds = np.asarray(types)
    good = labels == 0
    per_type: dict[str, Any] = {}
    for kind in sorted({str(t) for t, y in zip(types, labels, strict=True) if y == 1}):
        of_type = (kinds == kind) & ~good
        per_type[kind] = {
            "n": int(of_type.sum()),
            "image_auroc": roc_auc(labels[good | of_type], scores[good | of_type]),
            "miss_rate": float((scores[of_type] <= threshold).mean()),
        }
    metrics["per_defect_type"] = per_type
    metrics["test_scores"] = {
        "scores": [round(float(x), 6) for x in scores],
        "labels": labels.tolist(),
        "types": [str(t) for t in types],
    }
    clean: dict[str, Any] = json_safe(metrics)
    return clean


def calibration_summary(scores: np.ndarray) -> dict[str, Any]:
    """What a card keeps of the held-out normal scores: moments, quantiles, a histogram, the scores."""
    quantiles = np.quantile(scores, [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]).tolist()
    counts, edges = np.histogram(scores, bins=20)
    return {
        "n": len(scores),
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "quantiles": dict(zip(["min", "p25", "p50", "p75", "p90", "p99", "max"], quantiles, strict=True)),
        "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "scores": [round(float(s), 6) for s in scores[:2000]],
    }


def _pixel_auroc(test: TestScores, image_size: int) -> float:
    """Pixel AUROC at the model's input resolution, over good images and defective ones with masks."""
    chosen = [i for i, s in enumerate(test.samples) if s.label == 0 or s.mask is not None]
    if not any(test.samples[i].label == 1 for i in chosen):
        return math.nan
    masks, maps = [], []
    for start in range(0, len(chosen), 64):
        index = chosen[start : start + 64]
        full = upsample(test.maps[index], (image_size, image_size)).numpy()
        for j, i in enumerate(index):
            masks.append(read_mask(test.samples[i].mask, image_size))
            maps.append(full[j])
    return pixel_roc_auc(masks, maps)


def json_safe(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text summary of an evaluation for the terminal."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    images = "pixel_auroc" in metrics
    things = ("parts", "defect type") if images else ("readings", "fault type")
    lines = [f"{'image AUROC' if images else 'AUROC':<22}{fmt(metrics.get('image_auroc'))}"]
    if images:
        lines.append(f"{'pixel AUROC':<22}{fmt(metrics.get('pixel_auroc'))}")
    lines += [
        f"{'threshold':<22}{fmt(metrics.get('threshold'))}",
        f"{'miss rate':<22}{fmt(metrics.get('miss_rate'))}   (defective {things[0]} passed as good)",
        f"{'over-detection rate':<22}{fmt(metrics.get('over_detection_rate'))}   (good {things[0]} flagged)",
        f"{'F1':<22}{fmt(metrics.get('f1'))}",
        f"{'confusion':<22}{metrics.get('confusion')}",
    ]
    per_type = metrics.get("per_defect_type") or {}
    if per_type:
        lines.append(f"\n{things[1]:<16}{'n':>5}{'AUROC':>9}{'miss rate':>11}")
        for name, row in per_type.items():
            lines.append(f"{name:<16}{row['n']:>5}{fmt(row['image_auroc']):>9}{fmt(row['miss_rate']):>11}")
    return "\n".join(lines)


def format_class_table(metrics: dict[str, Any]) -> str:
    """Accuracy, ROC AUC, per-class precision / recall and the confusion matrix, for the terminal."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    classes = metrics["classes"]
    lines = [
        f"{'accuracy':<22}{fmt(classes.get('accuracy'))}   ({classes.get('note')})",
        f"{'ROC AUC':<22}{fmt(classes.get('roc_auc'))}",
        f"{'ECE':<22}{fmt(classes.get('ece'))}   (before temperature {fmt(classes.get('ece_before_temperature'))})",
    ]
    if "miss_rate" in metrics:
        lines += [
            f"{'defect AUROC':<22}{fmt(metrics.get('image_auroc'))}   (defect confidence, any defect vs normal)",
            f"{'miss rate':<22}{fmt(metrics.get('miss_rate'))}   (defective parts passed as good)",
            f"{'over-detection rate':<22}{fmt(metrics.get('over_detection_rate'))}   (good parts flagged)",
        ]
    names = classes["confusion_matrix"]["classes"]
    width = max(10, *(len(n) + 2 for n in names))
    lines.append(f"\n{'class':<{width}}{'precision':>10}{'recall':>9}{'n':>6}   predicted: " + " ".join(names))
    for name, row in zip(names, classes["confusion_matrix"]["rows_true_columns_predicted"], strict=True):
        c = classes["per_class"][name]
        counts = " ".join(f"{n:>{len(k)}}" for n, k in zip(row, names, strict=True))
        lines.append(f"{name:<{width}}{fmt(c['precision']):>10}{fmt(c['recall']):>9}{c['support']:>6}   {counts}")
    return "\n".join(lines)


def write_report(
    result: EvalResult, scorer: AnomalyScorer, out_dir: Path, image_size: int, title: str, overlays: int = 12
) -> list[Path]:
    """``metrics.json``, ``histogram.png`` and heatmap overlays of the most telling images."""
    from lineguard.models.plots import score_histogram

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "histogram.png"]
    written[0].write_text(json.dumps({k: v for k, v in result.metrics.items() if k != "test_scores"}, indent=2))
    labels = np.array([s.label for s in result.samples])
    assert scorer.threshold is not None
    written[1].write_bytes(score_histogram(result.scores, labels, scorer.threshold.value, title))
    low, high = scorer.display_range()
    overlay_dir = out_dir / "overlays"
    overlay_dir.mkdir(exist_ok=True)
    for i in _telling(result.scores, labels, scorer.threshold.value, overlays):
        sample = result.samples[i]
        image = resize(open_image(sample.path.read_bytes()), image_size)
        heat = normalise_map(result.maps[i].numpy(), low, high)
        verdict = "NG" if result.scores[i] > scorer.threshold.value else "OK"
        name = f"{sample.defect_type}_{sample.path.stem}_{verdict}_{result.scores[i]:.3f}.png"
        overlay(image, heat).save(overlay_dir / name)
        written.append(overlay_dir / name)
    return written


def _telling(scores: np.ndarray, labels: np.ndarray, threshold: float, count: int) -> list[int]:
    """Misses and false alarms first, then the highest-scoring defects and a few typical good parts."""
    order = np.argsort(-scores)
    misses = [i for i in order[::-1] if labels[i] == 1 and scores[i] <= threshold]
    false_alarms = [i for i in order if labels[i] == 0 and scores[i] > threshold]
    top_defects = [i for i in order if labels[i] == 1 and scores[i] > threshold]
    typical_good = [i for i in order[::-1] if labels[i] == 0]
    picked: list[int] = []
    for group, share in ((misses, 0.25), (false_alarms, 0.25), (top_defects, 0.3), (typical_good, 0.2)):
        picked += [i for i in group[: max(1, round(count * share))] if i not in picked]
    picked += [i for i in order if i not in picked]  # top up when a group was short
    return [int(i) for i in picked[:count]]
