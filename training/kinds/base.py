"""What every kind of line does, as one adapter per kind: fit, evaluate, load (the in-process model) and
answer (what that model says of the parts it is given, as the answers the HTTP API gives too).

The command line and the demo go through :data:`lineguard.training.kinds.ADAPTERS`, never through
``if kind == ...``: a new kind is a new module here, registered there (and its :class:`LineKind`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from lineguard.errors import ConfigError
from lineguard.models.spec import Runtime
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.sections import Evaluation
from lineguard.registry.store import ModelStore
from lineguard.training.options import CLUSTER, RuntimeSettings, option
from lineguard.training.report import FitReport

Options = TypeVar("Options")


@dataclass
class EvaluateRequest(RuntimeSettings):
    """How ``lineguard evaluate`` runs a stored version over labelled data."""

    workers: int | None = option(None, help=f"image lines: 0 = this process, N = a Ray Data actor pool; {CLUSTER}")
    batch_size: int = option(16, help="images per backbone batch")
    overlays: int = option(12, help="image-anomaly lines: heatmap overlays to write")
    merge: dict[str, list[str]] = option(
        default_factory=dict, help="classifier lines: make one class of several folders, as for fit (repeatable)"
    )


@dataclass
class EvaluationReport:
    metrics: Evaluation
    evaluated: str  # what was evaluated, for a person: "583 images of data/tiles"
    written: list[Path]
    skipped: list[str] = field(default_factory=list)


@dataclass
class PredictRequest:
    """What ``lineguard predict`` is given: files (images, or CSV/Parquet tables), readings typed as numbers,
    and where to draw heatmaps."""

    files: list[Path] = field(default_factory=list)
    readings: list[list[float]] = field(default_factory=list)
    heatmap: Path | None = None


class Predictor(ABC):
    """A line's model in this process."""

    @abstractmethod
    def answers(self, request: PredictRequest) -> Iterator[dict[str, Any]]:
        """One JSON-ready answer per part or reading (a failed file: ``{"file": ..., "error": ...}``)."""


class KindAdapter(ABC, Generic[Options]):
    kind: ClassVar[LineKind]
    options: ClassVar[type]  # the fit options dataclass: the flags of `lineguard fit <kind.short>`
    summary: ClassVar[str]  # what the kind is, for a person
    data_help: ClassVar[str]  # what --data is

    @abstractmethod
    def fit(self, line: str, data: Path, options: Options, store: ModelStore) -> FitReport: ...

    @abstractmethod
    def evaluate(
        self, store: ModelStore, card: ModelCard, data: Path, out: Path, request: EvaluateRequest
    ) -> EvaluationReport:
        """Metrics of ``card``'s version on the labelled ``data``, and the report files written to ``out``."""

    @abstractmethod
    def load(self, store: ModelStore, card: ModelCard, runtime: Runtime) -> Predictor: ...

    def with_workers(self, options: Options, workers: int) -> Options:
        """``options`` with every unset worker count set to ``workers`` (a fit sized from a cluster)."""
        return options

    @staticmethod
    def refuse(what: str, card: ModelCard, hint: str) -> ConfigError:
        return ConfigError(f"line {card.line} is a {card.kind} line: {what} ({hint})")
