"""The typed sections of a model card: what a version was fitted on, calibrated on, how it did, and how it
trained. Writers and readers share these types, so a field is spelled once (``card.threshold.value``,
``card.calibration.normal``) and a card that does not fit them is refused when it is read.

The math's own result types are used as they are where they fit (the threshold, confusion counts, a
classifier's per-class scores are dataclasses of :mod:`lineguard.models`); everything here is plain data
plus the few rules that belong to it: how scores are summarised, and how an evaluation is recomputed at
another threshold (so a threshold change leaves no rate stale).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lineguard.models.metrics import ClassScore, Confusion, ConfusionMatrix, roc_auc
from lineguard.models.preprocess import PreprocessConfig
from lineguard.models.spec import BackboneSpec


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Histogram(Section):
    counts: list[int]
    edges: list[float]


MAX_KEPT_SCORES = 2000


class ScoreSummary(Section):
    """A set of scores as a card keeps it: moments, quantiles, a histogram and (the first 2000 of) the scores."""

    n: int
    mean: float
    std: float
    quantiles: dict[str, float]
    histogram: Histogram
    scores: list[float] = Field(default_factory=list, description=f"the first {MAX_KEPT_SCORES}, 6 decimals")

    @classmethod
    def of(cls, scores: Any) -> ScoreSummary:
        values = np.asarray(scores, dtype=np.float64).ravel()
        quantiles = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]).tolist()
        counts, edges = np.histogram(values, bins=20)
        return cls(
            n=int(values.size),
            mean=float(values.mean()),
            std=float(values.std()),
            quantiles=dict(zip(["min", "p25", "p50", "p75", "p90", "p99", "max"], quantiles, strict=True)),
            histogram=Histogram(counts=counts.tolist(), edges=edges.tolist()),
            scores=[round(float(s), 6) for s in values[:MAX_KEPT_SCORES]],
        )


class TemperatureFit(Section):
    """A classifier's confidence temperature and what it did on the validation images."""

    method: str = "temperature scaling on the validation images"
    temperature: float = Field(gt=0)
    ece_before: float | None
    ece_after: float | None
    nll_before: float
    nll_after: float
    n: int


class Calibration(Section):
    """What a version was calibrated on. ``normal`` and ``input`` are also the references of the drift checks."""

    normal: ScoreSummary | None = Field(
        None,
        description="held-out normal parts: their anomaly scores (the threshold's data), or for a classifier the "
        "defect confidence of its normal validation images",
    )
    input: ScoreSummary | None = Field(None, description="the input statistic of the fitting data")
    defect_confidence: ScoreSummary | None = Field(None, description="classifiers: every validation image")
    temperature: TemperatureFit | None = None

    def reference_scores(self) -> list[float]:
        """The scores recent answers are compared with (drift): the normal parts', else every validation image's."""
        reference = self.normal or self.defect_confidence
        return list(reference.scores) if reference else []


class TypeMetrics(Section):
    """One defect (or fault) type against the good parts."""

    n: int
    image_auroc: float | None
    miss_rate: float | None


class TestScores(Section):
    """The evaluated parts' scores, labels (1 = defective) and types, kept so that a threshold change can
    recompute every rate."""

    scores: list[float]
    labels: list[int]
    types: list[str]


class ClassMetrics(Section):
    """A classifier on held-out images: per class, and how well its confidences are calibrated."""

    accuracy: float | None
    roc_auc: float | None
    per_class: dict[str, ClassScore]
    confusion_matrix: ConfusionMatrix
    ece: float | None
    n: int
    ece_before_temperature: float | None = None
    nll: float | None = None
    nll_before_temperature: float | None = None
    note: str | None = None
    threshold: float | None = Field(None, description="the defect-confidence threshold these were measured at")
    stale: str | None = Field(None, description="set when the line's threshold has changed since")


class Evaluation(Section):
    """A version on labelled data. The binary part (defective vs good, at ``threshold``) for anomaly lines and
    for classifiers with a normal class; ``classes`` for classifiers."""

    image_auroc: float | None = Field(None, description="ROC AUC of the score against the labels")
    pixel_auroc: float | None = None
    miss_rate: float | None = None
    over_detection_rate: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    accuracy: float | None = None
    confusion: Confusion | None = None
    n_normal: int = 0
    n_defect: int = 0
    threshold: float | None = None
    per_defect_type: dict[str, TypeMetrics] = Field(default_factory=dict)
    test_scores: TestScores | None = None
    note: str | None = None
    classes: ClassMetrics | None = None

    @classmethod
    def of_labelled(cls, labels: Any, scores: Any, threshold: float, types: Sequence[str]) -> Evaluation:
        """AUROC, rates and confusion at ``threshold`` (a score above it is flagged), per defect type, with the
        scores themselves."""
        y = np.asarray(labels).astype(np.int64).ravel()
        s = np.asarray(scores, dtype=np.float64).ravel()
        test = TestScores(scores=[round(float(x), 6) for x in s], labels=y.tolist(), types=[str(t) for t in types])
        return cls(image_auroc=roc_auc(y, s), test_scores=test, note=None).at(threshold, exact=s)

    def at(self, threshold: float, exact: np.ndarray | None = None) -> Evaluation:
        """This evaluation with every threshold-dependent figure recomputed at ``threshold`` from the stored
        scores (``exact``: the unrounded scores, while fitting). A classifier's per-class figures were measured
        at the fit's threshold and are marked as such."""
        if self.test_scores is None:
            note = "rates were measured at an earlier threshold" if self.threshold != threshold else self.note
            return self.model_copy(update={"note": note})
        y = np.asarray(self.test_scores.labels, dtype=np.int64)
        s = np.asarray(self.test_scores.scores, dtype=np.float64) if exact is None else exact
        kinds = np.asarray(self.test_scores.types)
        counts = Confusion.at(y, s, threshold)
        good = y == 0
        per_type = {}
        for kind in sorted({str(t) for t, label in zip(kinds, y, strict=True) if label == 1}):
            of_type = (kinds == kind) & ~good
            per_type[kind] = TypeMetrics(
                n=int(of_type.sum()),
                image_auroc=roc_auc(y[good | of_type], s[good | of_type]),
                miss_rate=float((s[of_type] <= threshold).mean()),
            )
        classes = self.classes
        if classes is not None and self.threshold is not None and threshold != self.threshold:
            fitted = classes.threshold if classes.threshold is not None else self.threshold
            classes = classes.model_copy(update={"threshold": fitted, "stale": f"measured at threshold {fitted}"})
        return self.model_copy(
            update={
                "miss_rate": counts.miss_rate,
                "over_detection_rate": counts.over_detection_rate,
                "precision": counts.precision,
                "recall": counts.recall,
                "f1": counts.f1,
                "accuracy": counts.accuracy,
                "confusion": counts,
                "n_normal": int(good.sum()),
                "n_defect": int((~good).sum()),
                "threshold": float(threshold),
                "per_defect_type": per_type,
                "classes": classes,
            }
        )

    def public(self) -> dict[str, Any]:
        """As the API and ``metrics.json`` show it: without the per-part scores."""
        return self.model_dump(mode="json", exclude={"test_scores"})


class TrainingHistory(Section):
    """How a network trained (the sensor AutoEncoder, a classifier's head): loss curves cut to about 100
    points (``*_every``: epochs between points) and where it stopped."""

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    train_loss: list[float] = Field(default_factory=list)
    val_loss: list[float] = Field(default_factory=list)
    train_loss_every: int = 1
    val_loss_every: int = 1
    seconds: float | None = None
    workers: int | None = Field(None, description="Ray Train workers; 0 = trained in the fitting process")
    use_gpu: bool | None = None


class BackboneInfo(Section):
    """The shared backbone an image line was fitted on (its identity is :meth:`spec`)."""

    name: str
    layers: list[str]
    image_size: int
    weights: str
    mean: list[float]
    std: list[float]
    channels: list[int]
    reductions: list[int]

    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.name, tuple(self.layers), self.image_size)

    def preprocess(self) -> PreprocessConfig:
        """How this line's images become the backbone's input (size and normalisation)."""
        mean, std = self.mean, self.std
        return PreprocessConfig(self.image_size, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


class HeadInfo(Section):
    """The per-line model: its kind (``patchcore``, ``autoencoder``, ``classifier``...), the constructor
    arguments that rebuild it, and the scorer's settings around it."""

    kind: str
    params: dict[str, Any]
    scorer: dict[str, Any] = Field(default_factory=dict)
    selection: dict[str, Any] | None = Field(
        None, description="sensor lines fitted with --head auto: what each head measured, and why this one"
    )


class AlarmSettings(Section):
    """A sensor line's alarm logic (:mod:`lineguard.models.alarm`): a stream alarms when ``k`` of its last ``n``
    readings are over the threshold; while alarmed a reading still counts as bad above ``clear_ratio`` times the
    threshold (hysteresis); an alarm lasts at least ``min_duration`` readings."""

    k: int = Field(3, ge=1, le=10_000)
    n: int = Field(5, ge=1, le=10_000)
    clear_ratio: float = Field(1.0, gt=0, le=1)
    min_duration: int = Field(1, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _k_of_n(self) -> AlarmSettings:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) cannot exceed n ({self.n}): k of the last n readings raise an alarm")
        return self


class DataInfo(Section):
    root: str
    layout: str
    fingerprint: str
    n_train: int
    n_fit: int
    n_calibration: int
    calibration: str
    n_test: int = 0
    skipped: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    per_split: dict[str, dict[str, int]] | None = Field(None, description="classifiers: images per split and class")


class SensorInputs(Section):
    """What a sensor line reads: the feature names in order, and the scaler fitted on normal rows."""

    features: list[str] = Field(min_length=2)
    mean: list[float]
    std: list[float]

    @property
    def n_features(self) -> int:
        return len(self.features)


class ClassifierInfo(Section):
    """What a classifier line answers: its classes, which one is normal, calibration and severity rules."""

    classes: list[str] = Field(min_length=2)
    normal_class: str | None = None
    temperature: float = Field(gt=0)
    severity: dict[str, float] = Field(default_factory=dict, description="level -> lowest defect confidence")

    @property
    def normal_index(self) -> int | None:
        return None if self.normal_class is None else self.classes.index(self.normal_class)
