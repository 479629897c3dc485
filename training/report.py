"""What a person reads of a fit or an evaluation: the fit's report, the one fit summary every kind prints,
the metric tables, and the report files (``metrics.json``, ``histogram.png``, heatmap overlays)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lineguard.models.preprocess import open_image, resize
from lineguard.models.visualize import normalise_map, overlay, score_histogram
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.sections import Evaluation


@dataclass
class FitReport:
    """What a fit returns, for every kind: the stored card (exactly as in the store), the seconds of each
    step (storing included, which the card cannot hold), the files skipped and the evaluation."""

    card: ModelCard
    timings: dict[str, float]
    skipped: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None
    promoted: bool = True


UNITS = {
    LineKind.IMAGE_ANOMALY: "normal images",
    LineKind.SENSOR_ANOMALY: "normal rows",
    LineKind.IMAGE_CLASSIFIER: "views",
}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def fit_summary(report: FitReport, store_uri: str) -> str:
    """The lines ``lineguard fit`` prints, from the typed card (the same code for every kind)."""
    card = report.card
    lines = [f"line {card.line}: stored {card.version}{' (in service)' if report.promoted else ''} in {store_uri}"]
    if card.inputs is not None:
        lines.append(f"{card.inputs.n_features} features: {', '.join(card.inputs.features)}")
    if card.classifier is not None:
        info = card.classifier
        per_split = card.data.per_split if card.data else None
        lines.append(f"classes {info.classes} (normal: {info.normal_class or 'none'}); images per split {per_split}")
    if card.data is not None:
        data = card.data
        lines.append(
            f"fitted on {data.n_fit} {UNITS[card.kind]} of {data.n_train}, calibrated on {data.n_calibration} "
            f"({data.calibration})"
        )
    if card.training is not None:
        h = card.training
        lines.append(
            f"trained {h.epochs_run} epochs ({h.workers} Ray Train worker(s), 0 = in process; {h.seconds} s): "
            f"best held-out loss {h.best_val_loss:.5f} at epoch {h.best_epoch}"
        )
    temperature = card.calibration.temperature
    if temperature is not None:
        lines.append(
            f"confidence temperature {temperature.temperature:.3f} (ECE {_fmt(temperature.ece_before)} -> "
            f"{_fmt(temperature.ece_after)} on the validation images)"
        )
    lines.append(f"threshold {card.threshold.value:.5g} ({card.threshold.method})")
    if report.skipped:
        lines.append("\n  ".join([f"skipped {len(report.skipped)} unreadable file(s):", *report.skipped[:20]]))
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()))
    if report.evaluation is not None:
        lines.append(format_evaluation(report.evaluation, card.kind))
    return "\n".join(lines)


def format_evaluation(metrics: Evaluation, kind: LineKind) -> str:
    """The terminal table of an evaluation: a classifier's classes, else defective vs good at the threshold."""
    if metrics.classes is not None:
        return format_class_table(metrics)
    return format_table(metrics, kind)


def format_table(metrics: Evaluation, kind: LineKind) -> str:
    """Defective vs good at the threshold: AUROC, rates, confusion, and per defect (or fault) type."""
    images = kind.takes_images
    things = ("parts", "defect type") if images else ("readings", "fault type")
    lines = [f"{'image AUROC' if images else 'AUROC':<22}{_fmt(metrics.image_auroc)}"]
    if images:
        lines.append(f"{'pixel AUROC':<22}{_fmt(metrics.pixel_auroc)}")
    counts = metrics.confusion
    lines += [
        f"{'threshold':<22}{_fmt(metrics.threshold)}",
        f"{'miss rate':<22}{_fmt(metrics.miss_rate)}   (defective {things[0]} passed as good)",
        f"{'over-detection rate':<22}{_fmt(metrics.over_detection_rate)}   (good {things[0]} flagged)",
        f"{'F1':<22}{_fmt(metrics.f1)}",
        f"{'confusion':<22}{counts.to_dict() if counts else None}",
    ]
    if metrics.note:
        lines.append(f"{'note':<22}{metrics.note}")
    if metrics.per_defect_type:
        lines.append(f"\n{things[1]:<16}{'n':>5}{'AUROC':>9}{'miss rate':>11}")
        for name, row in metrics.per_defect_type.items():
            lines.append(f"{name:<16}{row.n:>5}{_fmt(row.image_auroc):>9}{_fmt(row.miss_rate):>11}")
    return "\n".join(lines)


def format_class_table(metrics: Evaluation) -> str:
    """Accuracy, ROC AUC, calibration, defect vs normal, per-class precision / recall and the confusion matrix."""
    classes = metrics.classes
    assert classes is not None
    lines = [
        f"{'accuracy':<22}{_fmt(classes.accuracy)}   ({classes.note})",
        f"{'ROC AUC':<22}{_fmt(classes.roc_auc)}",
        f"{'ECE':<22}{_fmt(classes.ece)}   (before temperature {_fmt(classes.ece_before_temperature)})",
    ]
    if metrics.confusion is not None:
        lines += [
            f"{'defect AUROC':<22}{_fmt(metrics.image_auroc)}   (defect confidence, any defect vs normal)",
            f"{'miss rate':<22}{_fmt(metrics.miss_rate)}   (defective parts passed as good)",
            f"{'over-detection rate':<22}{_fmt(metrics.over_detection_rate)}   (good parts flagged)",
        ]
    names = classes.confusion_matrix.classes
    width = max(10, *(len(n) + 2 for n in names))
    lines.append(f"\n{'class':<{width}}{'precision':>10}{'recall':>9}{'n':>6}   predicted: " + " ".join(names))
    for name, row in zip(names, classes.confusion_matrix.rows_true_columns_predicted, strict=True):
        c = classes.per_class[name]
        counts = " ".join(f"{n:>{len(k)}}" for n, k in zip(row, names, strict=True))
        lines.append(f"{name:<{width}}{_fmt(c.precision):>10}{_fmt(c.recall):>9}{c.support:>6}   {counts}")
    return "\n".join(lines)


def write_metrics(out_dir: Path, metrics: Evaluation) -> Path:
    """``metrics.json``: the evaluation without the per-part scores."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    path.write_text(json.dumps(metrics.public(), indent=2))
    return path


def write_histogram(out_dir: Path, metrics: Evaluation, title: str, xlabel: str = "anomaly score") -> Path | None:
    """``histogram.png`` of the evaluated scores, good vs defective, with the threshold."""
    if metrics.test_scores is None or metrics.threshold is None:
        return None
    path = out_dir / "histogram.png"
    scores, labels = np.asarray(metrics.test_scores.scores), np.asarray(metrics.test_scores.labels)
    path.write_bytes(score_histogram(scores, labels, metrics.threshold, title, xlabel))
    return path


def write_overlays(
    out_dir: Path,
    samples: list[Any],
    scores: np.ndarray,
    maps: Any,
    threshold: float,
    display_range: tuple[float, float],
    image_size: int,
    count: int = 12,
) -> list[Path]:
    """Heatmap overlays of the most telling images (``samples``: the evaluated test images, in order)."""
    labels = np.array([s.label for s in samples])
    folder = out_dir / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in _telling(scores, labels, threshold, count):
        sample = samples[i]
        image = resize(open_image(sample.path.read_bytes()), image_size)
        heat = normalise_map(maps[i].numpy(), *display_range)
        verdict = "NG" if scores[i] > threshold else "OK"
        path = folder / f"{sample.defect_type}_{sample.path.stem}_{verdict}_{scores[i]:.3f}.png"
        overlay(image, heat).save(path)
        written.append(path)
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
