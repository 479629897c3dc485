"""Evaluating a classifier line: on its held-out test images while fitting (cached features), or a stored
line on a folder of labelled images. Every class, and with a normal class defect vs normal at the line's
threshold (:class:`lineguard.registry.sections.Evaluation`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lineguard.errors import DataError
from lineguard.models.backbone import FeatureExtractor
from lineguard.models.calibration import expected_calibration_error, nll, softmax
from lineguard.models.classifier import ImageClassifier, LineClassifier
from lineguard.models.decisions import SeverityRules, decide
from lineguard.models.metrics import class_metrics
from lineguard.registry.card import ModelCard
from lineguard.registry.sections import ClassMetrics, Evaluation
from lineguard.training.classifier_data import discover_classes
from lineguard.training.engine import read_image
from lineguard.training.train_classifier import CachedSplit, logits_of


def evaluate_cached(
    model: ImageClassifier,
    split: CachedSplit,
    folders: list[str],
    classes: list[str],
    normal_index: int | None,
    threshold: float,
    severity: SeverityRules,
    note: str,
) -> Evaluation:
    """Metrics of cached images: every class, and (with a normal class) defect vs normal at ``threshold``."""
    logits = logits_of(model, split).numpy()
    temperature = float(model.temperature)
    probabilities = softmax(logits, temperature)
    predicted = np.array([d.index for d in decide(probabilities, normal_index, threshold, severity)])
    report = class_metrics(split.labels, predicted, probabilities, classes)
    per_class = ClassMetrics(
        accuracy=report.accuracy,
        roc_auc=report.roc_auc,
        per_class=report.per_class,
        confusion_matrix=report.confusion_matrix,
        ece=report.ece,
        n=report.n,
        ece_before_temperature=expected_calibration_error(softmax(logits), split.labels),
        nll=nll(logits, split.labels, temperature),
        nll_before_temperature=nll(logits, split.labels),
        note=note,
        threshold=threshold,
    )
    if normal_index is None:
        return Evaluation(classes=per_class)
    defect = 1.0 - probabilities[:, normal_index]
    is_defect = (split.labels != normal_index).astype(np.int64)
    # defect vs normal, at the line's threshold; the stored scores let a threshold change recompute it
    binary = Evaluation.of_labelled(is_defect, defect, threshold, folders)
    return binary.model_copy(update={"classes": per_class})


def evaluate_folder(
    card: ModelCard,
    extractor: FeatureExtractor,
    classifier: LineClassifier,
    data: Path | str,
    merge: dict[str, list[str]] | None = None,
    batch_size: int = 16,
) -> tuple[Evaluation, list[str]]:
    """Metrics of a stored classifier line on every image of a class-folder ``data`` set; its classes
    must be the line's (folder names, after ``merge``). Returns the metrics and the unreadable files."""
    if card.backbone is None:
        raise DataError(f"line {card.line!r} is a {card.kind} line: it takes no images")
    dataset = discover_classes(data, merge)  # classes are matched to the line's by name
    unknown = sorted(set(dataset.classes) - set(classifier.classes))
    if unknown:
        known = classifier.classes
        raise DataError(f"{data} has class folders {unknown} that line {card.line!r} does not know: {known}")
    config = card.backbone.preprocess()
    pooled, deep, labels, folders, skipped = [], [], [], [], []
    for start in range(0, len(dataset.items), batch_size):
        tensors = []
        for item in dataset.items[start : start + batch_size]:
            tensor, error = read_image(item.path, config)
            if tensor is None:
                skipped.append(error)
                continue
            tensors.append(tensor)
            labels.append(classifier.classes.index(dataset.classes[item.label]))
            folders.append(item.folder)
        if tensors:
            frozen, frozen_deep = classifier.model.frozen_inputs(extractor.extract(torch.stack(tensors)))
            pooled.append(frozen.cpu().numpy())
            deep += [] if frozen_deep is None else [frozen_deep.half().cpu().numpy()]
    if not labels:
        raise DataError(f"no readable image in {data}: {skipped[:10]}")
    split = CachedSplit(np.concatenate(pooled), np.concatenate(deep) if deep else None, np.array(labels, np.int64))
    metrics = evaluate_cached(
        classifier.model,
        split,
        folders,
        classifier.classes,
        classifier.normal_index,
        card.threshold.value,
        classifier.severity,
        f"every image of {data} ({len(split)})",
    )
    return metrics, skipped
