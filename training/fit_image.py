"""Fitting an image-anomaly line: features -> head -> calibration -> threshold -> evaluation -> new version.

Calibration needs anomaly scores of normal images the model has not seen. Two ways to get them:

- ``holdout`` (large sets): a seeded fraction of train/good is kept out of the fit and scored.
- ``crossfit`` (small sets, by default up to 200 images): k models are fitted, each without one fold,
  and every image is scored by the model that did not see it; the final head is then fitted on all
  images. A small line (battery_weld has 37 normal images) keeps every image in its memory bank and
  still gets a score for each one to calibrate on. The fold models have slightly less data than the
  final one, so their normal scores run a little high: the threshold errs towards fewer false alarms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lineguard.errors import ConfigError, DataError
from lineguard.models.heads import build_head
from lineguard.models.preprocess import file_intensities
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.threshold import Threshold, from_labelled, from_normal_scores
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.names import check_line_name
from lineguard.registry.sections import Calibration, DataInfo, Evaluation, HeadInfo, ScoreSummary
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import to_bytes
from lineguard.training import engine
from lineguard.training.data import ImageDataset, Sample, discover, fingerprint
from lineguard.training.evaluate import evaluate_maps, score_samples
from lineguard.training.options import FitOptions
from lineguard.training.provenance import Timer, software_versions
from lineguard.training.report import FitReport

log = logging.getLogger(__name__)


def fit_image_line(line: str, data: Path | str, options: FitOptions, store: ModelStore) -> FitReport:
    """Fit, calibrate, evaluate and store a new version of ``line``; returns its card and report."""
    check_line_name(line)
    options.validate()
    timer = Timer()
    dataset = discover(data)
    train_paths = [s.path for s in dataset.train]
    if len(train_paths) < 2:
        raise DataError(f"{dataset.root} has {len(train_paths)} normal image(s): need at least 2 (fit + calibrate)")
    if options.threshold_objective and not any(s.label == 1 for s in dataset.test):
        raise ConfigError(
            f"--threshold-from-test needs labelled test images with defects in {dataset.root}/test/<defect_type>/: "
            "none found (fit without it: the threshold then comes from normal data alone)"
        )
    data_fingerprint = fingerprint(train_paths + [s.path for s in dataset.test], dataset.root)
    timer.mark("discover")

    base = engine.WorkerSpec(
        "summarize", options.backbone_settings(), head_kind=options.head, head_params=dict(options.head_params),
        scorer_params=options.scorer_params(),
    )  # fmt: skip
    scorer = AnomalyScorer.build(options.head, options.head_params, base.scorer_params)
    scorer.to(_driver_device(options.device))
    mode = options.calibration
    if mode == "auto":
        mode = "crossfit" if len(train_paths) <= options.crossfit_max_images else "holdout"
    skipped: list[str] = []
    if mode == "holdout":
        maps, direct, n_fit = _fit_holdout(scorer, base, train_paths, options, skipped, timer)
    else:
        maps, direct, n_fit = _fit_crossfit(scorer, base, train_paths, options, skipped, timer)
    if maps.shape[0] == 0:
        raise DataError("no calibration image could be read: see the skipped files above")

    scorer.calibrate_aggregation(maps)
    calibration_scores = scorer.image_scores(maps, direct).cpu().numpy()
    threshold = from_normal_scores(calibration_scores, options.over_detection_rate)
    timer.mark("calibrate")

    evaluation: Evaluation | None = None
    if dataset.test and (options.evaluate or options.threshold_objective):
        spec = replace(base, mode="maps", state=_numpy_state(scorer))
        test = score_samples(dataset.test, spec, options.run_settings())
        skipped += test.skipped
        if options.threshold_objective:
            threshold = _labelled_threshold(scorer, test.maps, test.direct, test.samples, calibration_scores, options)
        scorer.threshold = threshold
        if options.evaluate:
            evaluation = evaluate_maps(scorer, test, options.image_size).metrics
            if options.threshold_objective:
                note = "threshold chosen on these test images: the rates are optimistic"
                evaluation = evaluation.model_copy(update={"note": note})
        timer.mark("evaluate")
    scorer.threshold = threshold
    intensities = file_intensities(train_paths, options.image_size)
    calibration = Calibration(
        normal=ScoreSummary.of(calibration_scores),
        input=ScoreSummary.of(intensities) if intensities.size else None,  # the drift checks' input reference
    )
    card = _card(line, options, dataset, data_fingerprint, n_fit, len(calibration_scores), mode, skipped)
    card = card.model_copy(
        update={"threshold": threshold, "calibration": calibration, "metrics": evaluation, "timings": dict(timer.marks)}
    )
    stored = store.write_version(card, to_bytes(scorer.fitted_state()), promote=options.promote)
    timer.mark("store")
    return FitReport(stored, {**timer.marks, "total": timer.total()}, skipped, evaluation, options.promote)


def _fit_holdout(
    scorer: AnomalyScorer,
    base: engine.WorkerSpec,
    paths: list[Path],
    options: FitOptions,
    skipped: list[str],
    timer: Timer,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    order = np.random.default_rng(options.seed).permutation(len(paths))
    n_hold = min(len(paths) - 1, max(1, round(options.holdout_fraction * len(paths))))
    hold = [paths[i] for i in sorted(order[:n_hold])]
    fit = [paths[i] for i in sorted(order[n_hold:])]
    scorer.head.plan(len(fit))
    skipped_before = len(skipped)
    summaries = _rows(
        engine.run(
            replace(base, num_images=len(fit)),
            fit,
            options.run_settings().worker_count,
            options.batch_size,
            _label("features + coreset candidates", options),
        ),
        skipped,
    )
    with torch.inference_mode():
        scorer.head.fit_summaries(summaries)
    timer.mark("fit_head")
    n_fit = len(fit) - (len(skipped) - skipped_before)
    spec = replace(base, mode="maps", state=_numpy_state(scorer))
    workers = options.run_settings().worker_count
    maps, direct = _collect_maps(
        engine.run(spec, hold, workers, options.batch_size, _label("scoring held-out normals", options)), skipped
    )
    timer.mark("score_holdout")
    return maps, direct, n_fit


def _fit_crossfit(
    scorer: AnomalyScorer,
    base: engine.WorkerSpec,
    paths: list[Path],
    options: FitOptions,
    skipped: list[str],
    timer: Timer,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    layers: list[list[torch.Tensor]] = []
    for rows in _rows(
        engine.run(
            replace(base, mode="features"),
            paths,
            options.run_settings().worker_count,
            options.batch_size,
            _label("features", options),
        ),
        skipped,
    ):
        layers.append([rows[f"layer{i}"] for i in range(len(rows))])
    if not layers:
        raise DataError("no training image could be read: see the skipped files above")
    features = [torch.cat([batch[i] for batch in layers]) for i in range(len(layers[0]))]
    n = features[0].shape[0]
    if n < 2:
        raise DataError(f"only {n} readable normal image(s): need at least 2")
    timer.mark("features")
    k = min(options.folds, n)
    folds = np.array_split(np.random.default_rng(options.seed).permutation(n), k)
    maps: list[torch.Tensor] = [torch.empty(0)] * n
    direct: list[torch.Tensor | None] = [None] * n
    for fold in folds:
        rest = np.setdiff1d(np.arange(n), fold)
        fold_scorer = AnomalyScorer.build(options.head, options.head_params, base.scorer_params).to(
            _driver_device(options.device)
        )
        _fit_in_memory(fold_scorer, features, rest, options.batch_size)
        for start in range(0, len(fold), options.batch_size):
            index = fold[start : start + options.batch_size]
            fold_maps, fold_direct = fold_scorer.anomaly_maps([f[index] for f in features])
            for j, i in enumerate(index):
                maps[i] = fold_maps[j].cpu()
                direct[i] = fold_direct[j].cpu() if fold_direct is not None else None
    timer.mark("crossfit")
    _fit_in_memory(scorer, features, np.arange(n), options.batch_size)
    timer.mark("fit_head")
    stacked_direct = torch.stack([d for d in direct if d is not None]) if direct[0] is not None else None
    return torch.stack(maps), stacked_direct, n


def _fit_in_memory(scorer: AnomalyScorer, features: list[torch.Tensor], index: np.ndarray, batch_size: int) -> None:
    scorer.head.plan(len(index))
    batches = ([f[index[s : s + batch_size]] for f in features] for s in range(0, len(index), batch_size))
    scorer.head.fit(batches)


def _labelled_threshold(
    scorer: AnomalyScorer,
    maps: torch.Tensor,
    direct: torch.Tensor | None,
    samples: Sequence[Sample],
    calibration_scores: np.ndarray,
    options: FitOptions,
) -> Threshold:
    test_scores = scorer.image_scores(maps, direct).cpu().numpy()
    labels = np.array([s.label for s in samples])
    scores = np.concatenate([test_scores, calibration_scores])
    labels = np.concatenate([labels, np.zeros(len(calibration_scores), dtype=int)])
    assert options.threshold_objective is not None
    return from_labelled(
        scores,
        labels,
        options.threshold_objective,
        options.threshold_target,
        fallback_over_detection_rate=options.over_detection_rate,
    )


def _rows(batches: Iterable[dict[str, np.ndarray]], skipped: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    for batch in batches:
        rows, _, errors = engine.split_errors(batch)
        skipped.extend(errors)
        if rows and next(iter(rows.values())).shape[0]:
            yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items()}


def _collect_maps(
    batches: Iterable[dict[str, np.ndarray]], skipped: list[str]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    maps, direct = [], []
    for rows in _rows(batches, skipped):
        maps.append(rows["map"])
        direct.append(rows["direct"])
    if not maps:
        return torch.zeros(0, 1, 1), None
    all_direct = torch.cat(direct)
    return torch.cat(maps), None if torch.isnan(all_direct).all() else all_direct


def _numpy_state(scorer: AnomalyScorer) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in scorer.fitted_state().items()}


def _label(text: str, options: FitOptions) -> str:
    return text if options.progress else ""


def _driver_device(device: str) -> torch.device:
    from lineguard.models.device import resolve_device

    return resolve_device(device)


def _card(
    line: str,
    options: FitOptions,
    dataset: ImageDataset,
    data_fingerprint: str,
    n_fit: int,
    n_calibration: int,
    calibration_mode: str,
    skipped: list[str],
) -> ModelCard:
    return ModelCard(
        line=line,
        kind=LineKind.IMAGE_ANOMALY,
        note=options.note,
        backbone=options.backbone_info(),
        head=HeadInfo(
            kind=options.head,
            params=build_head(options.head, **options.head_params).params(),
            scorer=options.scorer_params(),
        ),
        threshold=Threshold(1.0, "unset", 0.0),
        data=DataInfo(
            root=str(dataset.root.resolve()),
            layout=dataset.layout,
            fingerprint=data_fingerprint,
            n_train=len(dataset.train),
            n_fit=n_fit,
            n_calibration=n_calibration,
            calibration=calibration_mode,
            skipped=skipped[:200],
            notes=dataset.notes,
            n_test=len(dataset.test),
        ),
        software=software_versions(),
    )


__all__ = ["FitOptions", "fit_image_line"]
