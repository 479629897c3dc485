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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lineguard.models.preprocess import file_intensities
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.threshold import Threshold, from_labelled, from_normal_scores
from lineguard.registry.card import DataInfo, HeadInfo, ModelCard, check_line_name
from lineguard.registry.store import ModelStore
from lineguard.training import features as engine
from lineguard.training.data import ImageDataset, Sample, discover, fingerprint
from lineguard.training.evaluate import EvalResult, calibration_summary, evaluate_maps, score_samples
from lineguard.training.provenance import Timer, software_versions

log = logging.getLogger(__name__)

CALIBRATIONS = ("auto", "holdout", "crossfit")


@dataclass
class FitOptions(engine.BackboneSettings):
    head: str = "patchcore"
    head_params: dict[str, Any] = field(default_factory=dict)
    aggregation: str = "local_global"
    blur_sigma: float = 2.0
    calibration: str = "auto"
    holdout_fraction: float = 0.15
    folds: int = 5
    crossfit_max_images: int = 200
    over_detection_rate: float = 0.01
    threshold_objective: str | None = (
        None  # None: normal data only; else labelled test data: f1 | miss_rate | over_detection_rate
    )
    threshold_target: float | None = None
    evaluate: bool = True
    workers: int = 0
    batch_size: int = 16
    seed: int = 0
    promote: bool = True
    note: str | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration {self.calibration!r} is not one of {CALIBRATIONS}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"holdout fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.folds < 2:
            raise ValueError(f"cross-fitting needs at least 2 folds, got {self.folds}")
        if self.image_size < 32 or self.image_size > 2048:
            raise ValueError(f"image size must be between 32 and 2048 pixels, got {self.image_size}")
        if self.batch_size < 1 or self.workers < 0:
            raise ValueError(f"batch size must be >= 1 and workers >= 0, got {self.batch_size} and {self.workers}")


@dataclass
class FitReport:
    card: ModelCard
    timings: dict[str, float]
    skipped: list[str]
    evaluation: EvalResult | None


def fit_image_line(line: str, data: Path | str, options: FitOptions, store: ModelStore) -> FitReport:
    """Fit, calibrate, evaluate and store a new version of ``line``; returns its card and report."""
    check_line_name(line)
    options.validate()
    timer = Timer()
    dataset = discover(data)
    train_paths = [s.path for s in dataset.train]
    if len(train_paths) < 2:
        raise ValueError(f"{dataset.root} has {len(train_paths)} normal image(s): need at least 2 (fit + calibrate)")
    data_fingerprint = fingerprint(train_paths + [s.path for s in dataset.test], dataset.root)
    timer.mark("discover")

    base = engine.worker_spec(
        "summarize",
        options,
        head_kind=options.head,
        head_params=dict(options.head_params),
        scorer_params={"aggregation": options.aggregation, "blur_sigma": options.blur_sigma},
    )
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
        raise ValueError("no calibration image could be read: see the skipped files above")

    scorer.calibrate_aggregation(maps)
    calibration_scores = scorer.image_scores(maps, direct).cpu().numpy()
    threshold = from_normal_scores(calibration_scores, options.over_detection_rate)
    timer.mark("calibrate")

    evaluation: EvalResult | None = None
    state = _numpy_state(scorer)
    if dataset.test and (options.evaluate or options.threshold_objective):
        test = score_samples(dataset.test, _replace(base, mode="maps", state=state), options)
        skipped += test.skipped
        if options.threshold_objective:
            threshold = _labelled_threshold(scorer, test.maps, test.direct, test.samples, calibration_scores, options)
        scorer.threshold = threshold
        if options.evaluate:
            evaluation = evaluate_maps(scorer, test, options.image_size)
            if options.threshold_objective:
                evaluation.metrics["note"] = "threshold chosen on these test images: the rates are optimistic"
        timer.mark("evaluate")
    scorer.threshold = threshold
    intensities = file_intensities(train_paths, options.image_size)

    card = _card(
        line,
        options,
        dataset,
        data_fingerprint,
        n_fit,
        len(calibration_scores),
        mode,
        skipped,
        threshold,
        calibration_scores,
        evaluation,
        timer,
    )
    if intensities.size:  # the reference of the served input statistic (drift checks)
        card.calibration["input"] = calibration_summary(intensities)
    stored = store.write_version(card, scorer.fitted_state(), promote=options.promote)
    timer.mark("store")
    stored.timings.update({**timer.marks, "total": timer.total()})
    return FitReport(stored, {**timer.marks, "total": timer.total()}, skipped, evaluation)


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
            _replace(base, num_images=len(fit)),
            fit,
            options.workers,
            options.batch_size,
            _label("features + coreset candidates", options),
        ),
        skipped,
    )
    with torch.inference_mode():
        scorer.head.fit_summaries(summaries)
    timer.mark("fit_head")
    n_fit = len(fit) - (len(skipped) - skipped_before)
    spec = _replace(base, mode="maps", state=_numpy_state(scorer))
    maps, direct = _collect_maps(
        engine.run(spec, hold, options.workers, options.batch_size, _label("scoring held-out normals", options)),
        skipped,
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
            _replace(base, mode="features"),
            paths,
            options.workers,
            options.batch_size,
            _label("features", options),
        ),
        skipped,
    ):
        layers.append([rows[f"layer{i}"] for i in range(len(rows))])
    if not layers:
        raise ValueError("no training image could be read: see the skipped files above")
    features = [torch.cat([batch[i] for batch in layers]) for i in range(len(layers[0]))]
    n = features[0].shape[0]
    if n < 2:
        raise ValueError(f"only {n} readable normal image(s): need at least 2")
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


def _replace(spec: engine.WorkerSpec, **changes: Any) -> engine.WorkerSpec:
    from dataclasses import replace

    return replace(spec, **changes)


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
    threshold: Threshold,
    calibration_scores: np.ndarray,
    evaluation: EvalResult | None,
    timer: Timer,
) -> ModelCard:
    return ModelCard(
        line=line,
        kind="image-anomaly",
        note=options.note,
        backbone=options.backbone_info(),
        head=HeadInfo(
            kind=options.head,
            params=_head_params(options),
            scorer={"aggregation": options.aggregation, "blur_sigma": options.blur_sigma},
        ),
        threshold=threshold.to_dict(),
        calibration=calibration_summary(calibration_scores),
        metrics=evaluation.metrics if evaluation else None,
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
        timings={**timer.marks},
        software=software_versions(),
    )


def _head_params(options: FitOptions) -> dict[str, Any]:
    from lineguard.models.heads import build_head

    return build_head(options.head, **options.head_params).params()


__all__ = ["FitOptions", "FitReport", "fit_image_line"]
