"""Fitting an image-classifier line: class folders -> split -> cached features -> training (Ray Train)
-> temperature -> evaluation on held-out images -> new version.

The images are split once, seeded and stratified: ``train`` (augmented views fit the head),
``validation`` (early stopping, then the temperature of the confidences) and ``test``
(``test_fraction``; touched by nothing but the final evaluation, so its figures are honest).
Unreadable files are skipped and named; a class left without a readable training or validation
image is an error naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lineguard.models.classifier import POOLINGS, TAILS, ImageClassifier, SeverityRules, decide, fit_temperature
from lineguard.models.metrics import class_metrics, expected_calibration_error
from lineguard.models.preprocess import file_intensities
from lineguard.models.threshold import Threshold
from lineguard.registry.card import BackboneInfo, ClassifierInfo, DataInfo, HeadInfo, ModelCard, check_line_name
from lineguard.registry.store import ModelStore
from lineguard.training import features as engine
from lineguard.training.augment import AUGMENTS
from lineguard.training.classifier_data import ClassDataset, LabelledImage, discover_classes, stratified_split
from lineguard.training.data import fingerprint
from lineguard.training.evaluate import calibration_summary, json_safe, labelled_metrics
from lineguard.training.provenance import Timer, software_versions
from lineguard.training.train_classifier import (
    CachedSplit,
    classifier_train_options,
    fit_standardizer,
    logits_of,
    train_classifier,
)
from lineguard.training.train_loop import TrainOptions, thin_history

if TYPE_CHECKING:
    from lineguard.models.backbone import FeatureExtractor
    from lineguard.models.classifier import LineClassifier

log = logging.getLogger(__name__)


@dataclass
class ClassifierFitOptions(engine.BackboneSettings):
    merge: dict[str, list[str]] = field(default_factory=dict)
    normal_class: str | None = None  # default: the one class named good / normal / ok / pass, if any
    tail: str = "frozen"
    hidden: int = 256
    dropout: float = 0.2
    pooling: str = "avgmax"
    views: int = 4  # per training image: the clean one and views - 1 augmented ones
    augment: str = "default"
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    threshold: float = 0.5  # defect confidence at which a part is called defective
    severity: dict[str, float] = field(default_factory=lambda: SeverityRules().to_dict())
    tail_lr_ratio: float = 0.1
    workers: int = 0  # feature extraction: 0 = this process, N = a Ray Data pool (training: train.workers)
    batch_size: int = 16
    train: TrainOptions = field(default_factory=lambda: classifier_train_options(workers=0))
    seed: int = 0
    promote: bool = True
    note: str | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.tail not in TAILS or self.pooling not in POOLINGS or self.augment not in AUGMENTS:
            raise ValueError(
                f"tail must be one of {TAILS}, pooling one of {POOLINGS}, augment one of {AUGMENTS}; "
                f"got {self.tail!r}, {self.pooling!r}, {self.augment!r}"
            )
        if not 1 <= self.views <= 32:
            raise ValueError(f"views must be between 1 and 32, got {self.views}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"the defect-confidence threshold must be in (0, 1), got {self.threshold}")
        if not self.severity:
            raise ValueError("give at least one severity level, e.g. high=0.9,low=0.6")
        SeverityRules.from_dict(self.severity)
        if self.image_size < 32 or self.image_size > 2048 or self.batch_size < 1 or self.workers < 0:
            raise ValueError("image size must be 32-2048 pixels, batch size >= 1 and workers >= 0")
        self.train.validate()


@dataclass
class ClassifierFitReport:
    card: ModelCard
    metrics: dict[str, Any] | None
    skipped: list[str]
    timings: dict[str, float]


def fit_classifier_line(
    line: str, data: Path | str, options: ClassifierFitOptions, store: ModelStore
) -> ClassifierFitReport:
    """Fit, calibrate, evaluate and store a new version of the classifier line ``line``."""
    check_line_name(line)
    options.validate()
    timer = Timer()
    dataset = discover_classes(data, options.merge, options.normal_class)
    labels = dataset.labels
    train_idx, val_idx, test_idx = stratified_split(
        labels, options.val_fraction, options.test_fraction, options.seed, dataset.classes
    )
    data_fingerprint = fingerprint([item.path for item in dataset.items], dataset.root)
    timer.mark("discover")

    spec = engine.worker_spec(
        "classifier",
        options,
        classifier={"tail": options.tail, "pooling": options.pooling},
        views=options.views,
        augment=options.augment,
        seed=options.seed,
    )
    from dataclasses import replace

    skipped: list[str] = []
    items = dataset.items
    train = _cached(spec, [items[i] for i in train_idx], options, skipped, "training views")
    val = _cached(replace(spec, views=1), [items[i] for i in val_idx], options, skipped, "validation images")
    test = _cached(replace(spec, views=1), [items[i] for i in test_idx], options, skipped, "test images")
    _check_coverage(dataset, train[0], val[0], skipped)
    timer.mark("features")

    backbone = options.backbone_info()
    model = ImageClassifier(
        backbone.channels,
        len(dataset.classes),
        tail=options.tail,
        backbone=options.backbone,
        tap=options.layers[-1],
        hidden=options.hidden,
        dropout=options.dropout,
        pooling=options.pooling,
        tail_weights=options.weights,
    )
    fit_standardizer(model, train[0])
    if options.train.workers == 0:  # in this process: on the fit's device (Ray Train workers pick their own)
        from lineguard.models.device import resolve_device

        model.to(resolve_device(options.device))
    trained = train_classifier(model, train[0], val[0], options.train, options.tail_lr_ratio)
    timer.mark("train")

    val_logits = logits_of(model, val[0]).numpy()
    temperature = fit_temperature(val_logits, val[0].labels)
    model.temperature.fill_(temperature)
    calibration = {
        "method": "temperature scaling on the validation images",
        "temperature": temperature,
        "ece_before": expected_calibration_error(_softmax(val_logits, 1.0), val[0].labels),
        "ece_after": expected_calibration_error(_softmax(val_logits, temperature), val[0].labels),
        "nll_before": _nll(val_logits, val[0].labels, 1.0),
        "nll_after": _nll(val_logits, val[0].labels, temperature),
        "n": len(val[0]),
    }
    normal_index = None if dataset.normal_class is None else dataset.classes.index(dataset.normal_class)
    if normal_index is not None:
        defect = 1.0 - _softmax(val_logits, temperature)[:, normal_index]
        calibration["defect_confidence"] = calibration_summary(defect)
        normal_val = defect[val[0].labels == normal_index]
        if normal_val.size:  # what a good part scores: the reference of the drift checks
            calibration["normal_defect_confidence"] = calibration_summary(normal_val)
        normal_paths = [item.path for item in dataset.items if item.label == normal_index]
        intensities = file_intensities(normal_paths, options.image_size)
        if intensities.size:
            calibration["input"] = calibration_summary(intensities)
    timer.mark("calibrate")

    metrics = None
    if len(test[0]):
        metrics = evaluate_cached(model, test[0], test[1], dataset.classes, normal_index, options)
        timer.mark("evaluate")

    card = _card(line, options, dataset, data_fingerprint, (train, val, test), skipped, backbone, model, calibration)
    card.metrics = metrics
    card.training = thin_history(trained.history)
    card.timings = dict(timer.marks)
    stored = store.write_version(card, model.fitted_state(), promote=options.promote)
    timer.mark("store")
    return ClassifierFitReport(stored, metrics, skipped, {**timer.marks, "total": timer.total()})


def evaluate_cached(
    model: ImageClassifier,
    split: CachedSplit,
    folders: list[str],
    classes: list[str],
    normal_index: int | None,
    options: ClassifierFitOptions,
) -> dict[str, Any]:
    """Metrics of the held-out images: every class, and (with a normal class) defect vs normal."""
    logits = logits_of(model, split).numpy()
    probabilities = _softmax(logits, float(model.temperature))
    decisions = decide(probabilities, normal_index, options.threshold, SeverityRules.from_dict(options.severity))
    predicted = np.array([d.index for d in decisions])
    metrics: dict[str, Any] = {}
    if normal_index is not None:
        defect = 1.0 - probabilities[:, normal_index]
        is_defect = (split.labels != normal_index).astype(np.int64)
        # defect vs normal, at the line's threshold; the stored scores let a threshold change recompute it
        metrics.update(labelled_metrics(is_defect, defect, options.threshold, folders))
    metrics["classes"] = json_safe(class_metrics(split.labels, predicted, probabilities, classes))
    metrics["classes"]["ece_before_temperature"] = expected_calibration_error(_softmax(logits, 1.0), split.labels)
    metrics["classes"]["nll"] = _nll(logits, split.labels, float(model.temperature))
    metrics["classes"]["nll_before_temperature"] = _nll(logits, split.labels, 1.0)
    metrics["classes"]["note"] = f"held-out test images ({len(split)}), never used for training or calibration"
    metrics["classes"]["threshold"] = options.threshold
    return metrics


def evaluate_folder(
    card: ModelCard,
    extractor: FeatureExtractor,
    classifier: LineClassifier,
    data: Path | str,
    merge: dict[str, list[str]] | None = None,
    batch_size: int = 16,
) -> tuple[dict[str, Any], list[str]]:
    """Metrics of a stored classifier line on every image of a class-folder ``data`` set; its classes
    must be the line's (folder names, after ``merge``). Returns the metrics and the unreadable files."""
    from lineguard.registry.loaders import preprocess_config
    from lineguard.training.data import read_image

    assert card.classifier is not None
    dataset = discover_classes(data, merge)  # classes are matched to the line's by name
    unknown = sorted(set(dataset.classes) - set(classifier.classes))
    if unknown:
        known = classifier.classes
        raise ValueError(f"{data} has class folders {unknown} that line {card.line!r} does not know: {known}")
    config = preprocess_config(card)
    pooled, deep, labels, folders, skipped = [], [], [], [], []
    for start in range(0, len(dataset.items), batch_size):
        chunk = dataset.items[start : start + batch_size]
        tensors = []
        for item in chunk:
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
        raise ValueError(f"no readable image in {data}: {skipped[:10]}")
    split = CachedSplit(
        np.concatenate(pooled), np.concatenate(deep) if deep else None, np.array(labels, dtype=np.int64)
    )
    options = ClassifierFitOptions(threshold=float(card.threshold["value"]), severity=classifier.severity.to_dict())
    metrics = evaluate_cached(classifier.model, split, folders, classifier.classes, classifier.normal_index, options)
    metrics["classes"]["note"] = f"every image of {data} ({len(split)})"
    return metrics, skipped


def _cached(
    spec: engine.WorkerSpec,
    items: list[LabelledImage],
    options: ClassifierFitOptions,
    skipped: list[str],
    what: str,
) -> tuple[CachedSplit, list[str]]:
    """The frozen-part outputs of ``items`` (every view a row) and each row's source folder."""
    by_path: dict[str, dict[str, np.ndarray]] = {}
    label = f"features of {what}" if options.progress else ""
    for batch in engine.run(spec, [item.path for item in items], options.workers, options.batch_size, label):
        rows, paths, errors = engine.split_errors(batch)
        skipped.extend(errors)
        for i, path in enumerate(paths):
            by_path[path] = {k: v[i] for k, v in rows.items()}
    kept = [item for item in items if str(item.path) in by_path]
    views = max(1, spec.views)
    if not kept:
        return CachedSplit(np.zeros((0, 1), np.float32), None, np.zeros(0, np.int64)), []
    pooled = np.concatenate([by_path[str(item.path)]["pooled"] for item in kept]).astype(np.float32)
    deep = None
    if "deep" in by_path[str(kept[0].path)]:
        deep = np.concatenate([by_path[str(item.path)]["deep"] for item in kept]).astype(np.float16)
    labels = np.repeat(np.array([item.label for item in kept], dtype=np.int64), views)
    folders = [item.folder for item in kept for _ in range(views)]
    return CachedSplit(pooled, deep, labels), folders


def _check_coverage(dataset: ClassDataset, train: CachedSplit, val: CachedSplit, skipped: list[str]) -> None:
    """Every class needs readable training and validation images; name the ones that have none."""
    for index, name in enumerate(dataset.classes):
        for split, role in ((train, "training"), (val, "validation")):
            if not (split.labels == index).any():
                unreadable = [s for s in skipped if any(str(i.path) in s for i in dataset.items if i.label == index)]
                raise ValueError(
                    f"class {name!r} has no readable {role} image; unreadable files of the class: "
                    f"{unreadable[:10] or 'none'}: replace them, add images or merge the class"
                )


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels``: what the temperature minimises."""
    p = _softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def classifier_threshold(normal_class: str | None, value: float) -> Threshold:
    """The card's threshold: the defect confidence at which a part is defective (argmax without a normal class)."""
    if normal_class is None:
        return Threshold(0.5, "argmax", 0.0, details={"note": "no normal class: the most likely class is answered"})
    return Threshold(float(value), "defect_confidence", 0.0, details={"normal_class": normal_class})


def _card(
    line: str,
    options: ClassifierFitOptions,
    dataset: ClassDataset,
    data_fingerprint: str,
    splits: tuple[tuple[CachedSplit, list[str]], ...],
    skipped: list[str],
    backbone: BackboneInfo,
    model: ImageClassifier,
    calibration: dict[str, Any],
) -> ModelCard:
    train, val, test = (s[0] for s in splits)
    views = max(1, options.views)
    per_split = {
        name: {
            c: int((s.labels == i).sum()) // (views if name == "train" else 1) for i, c in enumerate(dataset.classes)
        }
        for name, s in (("train", train), ("validation", val), ("test", test))
    }
    return ModelCard(
        line=line,
        kind="image-classifier",
        note=options.note,
        backbone=backbone,
        head=HeadInfo(
            kind="classifier",
            params=model.params(),
            scorer={"views": views, "augment": options.augment, "tail_lr_ratio": options.tail_lr_ratio},
        ),
        classifier=ClassifierInfo(
            classes=dataset.classes,
            normal_class=dataset.normal_class,
            temperature=calibration["temperature"],
            severity=SeverityRules.from_dict(options.severity).to_dict() if dataset.normal_class else {},
        ),
        threshold=classifier_threshold(dataset.normal_class, options.threshold).to_dict(),
        calibration=json_safe(calibration),
        data=DataInfo(
            root=str(dataset.root.resolve()),
            layout="class-folders",
            fingerprint=data_fingerprint,
            n_train=len(train) // views,
            n_fit=len(train),
            n_calibration=len(val),
            calibration="temperature",
            n_test=len(test),
            skipped=skipped[:200],
            notes=dataset.warnings + [f"merged: {options.merge}"] * bool(options.merge),
            per_split=per_split,
        ),
        software=software_versions(),
    )


__all__ = ["ClassifierFitOptions", "ClassifierFitReport", "classifier_threshold", "fit_classifier_line"]
