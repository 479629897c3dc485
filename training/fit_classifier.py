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
from dataclasses import replace
from pathlib import Path

import numpy as np

from lineguard.errors import DataError
from lineguard.models.calibration import expected_calibration_error, fit_temperature, nll, softmax
from lineguard.models.classifier import ImageClassifier
from lineguard.models.decisions import SeverityRules
from lineguard.models.device import resolve_device
from lineguard.models.preprocess import file_intensities
from lineguard.models.threshold import Threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.names import check_line_name
from lineguard.registry.sections import (
    BackboneInfo,
    Calibration,
    ClassifierInfo,
    DataInfo,
    HeadInfo,
    ScoreSummary,
    TemperatureFit,
)
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import to_bytes
from lineguard.training import engine
from lineguard.training.classifier_data import ClassDataset, LabelledImage, discover_classes, stratified_split
from lineguard.training.data import fingerprint
from lineguard.training.evaluate_classifier import evaluate_cached
from lineguard.training.options import ClassifierFitOptions
from lineguard.training.provenance import Timer, software_versions
from lineguard.training.report import FitReport
from lineguard.training.train_classifier import CachedSplit, fit_standardizer, logits_of, train_classifier
from lineguard.training.train_loop import thin_history

log = logging.getLogger(__name__)


def fit_classifier_line(line: str, data: Path | str, options: ClassifierFitOptions, store: ModelStore) -> FitReport:
    """Fit, calibrate, evaluate and store a new version of the classifier line ``line``."""
    check_line_name(line)
    options.validate()
    timer = Timer()
    dataset = discover_classes(data, options.merge, options.normal_class)
    train_idx, val_idx, test_idx = stratified_split(
        dataset.labels, options.val_fraction, options.test_fraction, options.seed, dataset.classes
    )
    data_fingerprint = fingerprint([item.path for item in dataset.items], dataset.root)
    timer.mark("discover")

    spec = engine.WorkerSpec(
        "classifier",
        options.backbone_settings(),
        classifier={"tail": options.tail, "pooling": options.pooling},
        views=options.views,
        augment=options.augment,
        seed=options.seed,
    )
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
    train_options = replace(options.train, seed=options.seed)
    if train_options.worker_count == 0:  # in this process: on the fit's device (Ray Train workers pick their own)
        model.to(resolve_device(options.device))
    trained = train_classifier(model, train[0], val[0], train_options, options.tail_lr_ratio)
    timer.mark("train")

    calibration = _calibrate(model, val[0], dataset, options)
    timer.mark("calibrate")

    metrics = None
    if len(test[0]):
        note = f"held-out test images ({len(test[0])}), never used for training or calibration"
        severity = SeverityRules.from_dict(options.severity)
        normal_index = dataset.classes.index(dataset.normal_class) if dataset.normal_class else None
        metrics = evaluate_cached(
            model, test[0], test[1], dataset.classes, normal_index, options.threshold, severity, note
        )
        timer.mark("evaluate")

    card = _card(line, options, dataset, data_fingerprint, (train[0], val[0], test[0]), skipped, backbone, model)
    card = card.model_copy(
        update={
            "calibration": calibration,
            "metrics": metrics,
            "training": thin_history(trained.history),
            "timings": dict(timer.marks),
        }
    )
    stored = store.write_version(card, to_bytes(model.fitted_state()), promote=options.promote)
    timer.mark("store")
    return FitReport(stored, {**timer.marks, "total": timer.total()}, skipped, metrics, options.promote)


def _calibrate(
    model: ImageClassifier, val: CachedSplit, dataset: ClassDataset, options: ClassifierFitOptions
) -> Calibration:
    """The temperature of the confidences (fitted on the validation images), and the references of the
    drift checks: the defect confidence of good validation parts, the intensity of the good images."""
    val_logits = logits_of(model, val).numpy()
    temperature = fit_temperature(val_logits, val.labels)
    model.temperature.fill_(temperature)
    fit = TemperatureFit(
        temperature=temperature,
        ece_before=expected_calibration_error(softmax(val_logits), val.labels),
        ece_after=expected_calibration_error(softmax(val_logits, temperature), val.labels),
        nll_before=nll(val_logits, val.labels),
        nll_after=nll(val_logits, val.labels, temperature),
        n=len(val),
    )
    if dataset.normal_class is None:
        return Calibration(temperature=fit)
    normal_index = dataset.classes.index(dataset.normal_class)
    defect = 1.0 - softmax(val_logits, temperature)[:, normal_index]
    normal_val = defect[val.labels == normal_index]
    normal_paths = [item.path for item in dataset.items if item.label == normal_index]
    intensities = file_intensities(normal_paths, options.image_size)
    return Calibration(
        normal=ScoreSummary.of(normal_val) if normal_val.size else None,
        input=ScoreSummary.of(intensities) if intensities.size else None,
        defect_confidence=ScoreSummary.of(defect),
        temperature=fit,
    )


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
    workers = options.feature_workers or 0
    for batch in engine.run(spec, [item.path for item in items], workers, options.feature_batch_size, label):
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
                raise DataError(
                    f"class {name!r} has no readable {role} image; unreadable files of the class: "
                    f"{unreadable[:10] or 'none'}: replace them, add images or merge the class"
                )


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
    splits: tuple[CachedSplit, CachedSplit, CachedSplit],
    skipped: list[str],
    backbone: BackboneInfo,
    model: ImageClassifier,
) -> ModelCard:
    train, val, test = splits
    views = max(1, options.views)
    per_split = {
        name: {
            c: int((s.labels == i).sum()) // (views if name == "train" else 1) for i, c in enumerate(dataset.classes)
        }
        for name, s in (("train", train), ("validation", val), ("test", test))
    }
    return ModelCard(
        line=line,
        kind=LineKind.IMAGE_CLASSIFIER,
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
            temperature=float(model.temperature),
            severity=SeverityRules.from_dict(options.severity).to_dict() if dataset.normal_class else {},
        ),
        threshold=classifier_threshold(dataset.normal_class, options.threshold),
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


__all__ = ["ClassifierFitOptions", "classifier_threshold", "fit_classifier_line"]
