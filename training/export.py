"""``lineguard export``: a stored version of a line as a self-contained bundle for the edge runtime, with
its parity against the torch path measured on the line's own data and stored in the bundle.

One path, proven on export: the bundle is written, loaded back by :mod:`lineguard_edge` exactly as a camera
PC loads it, and the line's own images (or rows) are scored both by it and by the torch (or NumPy) model
the service runs, in fp32. The largest relative score difference and the decisions that differ go into
the manifest; beyond the tolerance the export fails with those figures and leaves no bundle behind.
Anomaly heads are fused into the graph (PatchCore's neighbour search is one matrix product and a minimum),
so the runtime only decodes, resizes, thresholds and draws, with the service's own code for each.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

import lineguard_edge
from lineguard import __version__
from lineguard.errors import ConfigError, DataError, ExportError
from lineguard.models import export as graphs
from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.models.heads.patchcore import PatchCore
from lineguard.models.preprocess import IMAGE_SUFFIXES, PreprocessConfig, open_image, resize
from lineguard.models.spec import Runtime
from lineguard.models.tensors import to_tensor
from lineguard.registry.card import ModelCard
from lineguard.registry.image_models import anomaly_scorer, classifier, extractor_for
from lineguard.registry.kinds import LineKind
from lineguard.registry.sensor_models import sensor_model
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import read_tensors
from lineguard.training import quantize
from lineguard.training.options import ExportSettings
from lineguard.training.sensor_data import read_table
from lineguard_edge import bundle as bundle_mod

FP32 = Runtime(device="cpu", precision="fp32")


@dataclass
class Parity:
    items: int
    reference: str
    max_relative_difference: float
    max_abs_difference: float
    decisions_differ: int
    tolerance: float
    measure: str
    service_default: dict[str, Any] = field(default_factory=dict)
    allowed_decisions: int = 0  # INT8: a share of the items may change; fp32: none
    scores_checked: bool = True  # INT8: the score difference is reported, the decisions are what is held

    @property
    def passed(self) -> bool:
        close = not self.scores_checked or self.max_difference <= self.tolerance
        return self.decisions_differ <= self.allowed_decisions and close

    @property
    def max_difference(self) -> float:
        return self.max_abs_difference if self.measure == "absolute" else self.max_relative_difference

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "reference": self.reference,
            "measure": self.measure,
            "max_relative_difference": self.max_relative_difference,
            "max_abs_difference": self.max_abs_difference,
            "decisions_differ": self.decisions_differ,
            "allowed_decisions": self.allowed_decisions,
            "tolerance": self.tolerance if self.scores_checked else None,
            "passed": self.passed,
            "service_default": self.service_default,
        }


@dataclass
class ExportReport:
    bundle: str  # the folder, or where in the store
    bundle_format: str
    card: ModelCard
    parity: Parity
    seconds: dict[str, float]
    accuracy: dict[str, Any] | None = None  # INT8: image and pixel AUROC against fp32 on labelled test images


@dataclass
class _Plan:
    """What one kind contributes: the graph and its example input, the spec, the parity inputs and the
    reference: inputs -> (numbers compared, decisions)."""

    graph: nn.Module
    example: torch.Tensor
    inputs: list[str]
    outputs: list[str]
    spec: dict[str, Any]
    items: Sequence[Any]
    reference: Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]]
    edge: Callable[[lineguard_edge.EdgeModel, Sequence[Any]], tuple[np.ndarray, np.ndarray]]
    measure: str = "relative"
    service_default: Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]] | None = None
    calibration: Callable[[], list[np.ndarray]] | None = None  # INT8: the line's normal images, resized


def export_line(store: ModelStore, line: str, out: Path, settings: ExportSettings) -> ExportReport:
    """Export ``line`` (its version in service, or ``settings.version``) into the new folder ``out``."""
    settings.validate()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: export into a new folder")
    card = store.read_card(line, settings.version)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    plan = _plan(store, card, settings)
    timings["load"] = time.perf_counter() - start
    files = {"card.json": card.model_dump_json(indent=2).encode(), bundle_mod.SPEC: _json(plan.spec)}
    start = time.perf_counter()
    try:
        onnx = graphs.to_onnx(plan.graph, plan.example, plan.inputs, plan.outputs)
    except RuntimeError as err:  # torch's exporter: an operator or a construct it cannot write
        head = card.head.kind if card.head else str(card.kind)
        raise ExportError(
            f"line {card.line!r} {card.version}: its {head} head cannot be exported to ONNX ({err}); "
            "serve it from the service, or refit it with a head that exports (patchcore, padim, mean)"
        ) from err
    files.update(_graph_files(onnx) if settings.format == "openvino" else {"model.onnx": onnx})
    timings["export"] = time.perf_counter() - start
    fp32_files = dict(files)
    if settings.int8:
        if plan.calibration is None:
            raise ConfigError(f"--int8 is for image-anomaly lines; {card.line!r} is a {card.kind} line")
        start = time.perf_counter()
        files.update(quantize.int8_files(onnx, plan.calibration()))
        timings["quantize"] = time.perf_counter() - start
    manifest: dict[str, Any] = {
        "line": card.line,
        "version": card.version,
        "kind": str(card.kind),
        "runtime": settings.format,
        "precision": "int8" if settings.int8 else "fp32",
        "created": datetime.now(UTC).isoformat(),
        "lineguard": __version__,
        "torch": torch.__version__,
    }
    accuracy = None
    with tempfile.TemporaryDirectory(prefix="lineguard-export-") as scratch:
        staged = Path(scratch) / "bundle"
        model = lineguard_edge.load(bundle_mod.write(staged, files, manifest).folder)
        start = time.perf_counter()
        reference = plan.reference(plan.items)  # torch fp32 on the items, once: the map and the parity use it
        if settings.int8:  # its threshold onto the INT8 scale, from the line's own images (training/quantize.py)
            score_map = quantize.ScoreMap.fit(reference[0], plan.edge(model, plan.items)[0])
            files[bundle_mod.SPEC] = _json(score_map.spec(plan.spec))
            manifest["int8_threshold"] = score_map.to_dict()
            shutil.rmtree(staged)
            model = lineguard_edge.load(bundle_mod.write(staged, files, manifest).folder)
        parity = _parity(plan, model, settings, reference)
        timings["parity"] = time.perf_counter() - start
        if not parity.passed:
            raise ExportError(_disagreement(card, settings, parity))
        if settings.int8:
            start = time.perf_counter()
            accuracy = _int8_accuracy(card, settings, model, fp32_files, manifest, Path(scratch) / "fp32")
            timings["accuracy"] = time.perf_counter() - start
        extra = {"parity": parity.to_dict(), **({"accuracy": accuracy} if accuracy else {})}
        bundle_mod.write(out, files, {**manifest, **extra})
    return ExportReport(str(out), settings.format, card, parity, timings, accuracy)


def _disagreement(card: ModelCard, settings: ExportSettings, parity: Parity) -> str:
    graph = f"the exported {settings.format}{' INT8' if settings.int8 else ''} graph of {card.line!r} {card.version}"
    scores = f"largest {parity.measure} difference {parity.max_difference:.3g}"
    if parity.scores_checked:
        scores += f" (tolerance {parity.tolerance:g})"
    decisions = f"{parity.decisions_differ} decision(s) differ"
    if parity.allowed_decisions:
        decisions += f" (at most {parity.allowed_decisions} allowed, --int8-decisions {settings.int8_decisions:g})"
    items = f"{parity.items} of the line's own items"
    return f"{graph} disagrees with the torch path on {items}: {scores}, {decisions}; no bundle was written"


def _int8_accuracy(
    card: ModelCard,
    settings: ExportSettings,
    int8: lineguard_edge.EdgeModel,
    fp32_files: dict[str, bytes],
    manifest: dict[str, Any],
    folder: Path,
) -> dict[str, Any] | None:
    """Image and pixel AUROC of the INT8 bundle and of its fp32 twin (``fp32_files``, staged in ``folder``)
    on the data's labelled test images (an MVTec-layout folder), or None when there are none."""
    samples = quantize.labelled_test(_data_root(card, settings))
    if not samples:
        return None
    fp32 = lineguard_edge.load(bundle_mod.write(folder, fp32_files, {**manifest, "precision": "fp32"}).folder)
    assert card.backbone is not None
    result = quantize.accuracy({"fp32": fp32.graph, "int8": int8.graph}, samples, card.backbone.image_size)
    return result.to_dict()


def export_to_store(store: ModelStore, line: str, settings: ExportSettings) -> ExportReport:
    """Export ``line`` into the store beside its version (``<version>/bundles/<format>/``), where the service
    hands it out (``GET /v1/lines/{line}/bundle?format=``); replaces an earlier export in that format."""
    version = settings.version or store.current_version(line)
    with tempfile.TemporaryDirectory(prefix="lineguard-export-") as scratch:
        folder = Path(scratch) / "bundle"
        report = export_line(store, line, folder, replace(settings, version=version))
        store.write_bundle(line, version, settings.format, {p.name: p.read_bytes() for p in folder.iterdir()})
    report.bundle = f"{store.uri} ({line}/{version}/bundles/{settings.format})"
    return report


def _json(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _graph_files(onnx: bytes) -> dict[str, bytes]:
    """The ONNX graph as OpenVINO's IR (``model.xml`` + ``model.bin``), weights kept in fp32.

    Read by the ONNX frontend (``Core.read_model``), not ``ov.convert_model``: OpenVINO 2026.4's
    ``convert_model`` turned an anomaly graph's batch of 16 into 4 answers (the parity check caught it),
    where ``read_model`` of the same file answers every batch size correctly.
    """
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="lineguard-ov-") as scratch:
        folder = Path(scratch)
        (folder / "model.onnx").write_bytes(onnx)
        model = ov.Core().read_model(folder / "model.onnx")
        ov.save_model(model, folder / "model.xml", compress_to_fp16=False)
        return {"model.xml": (folder / "model.xml").read_bytes(), "model.bin": (folder / "model.bin").read_bytes()}


# --- the kinds -------------------------------------------------------------------------------------------
def _threshold_spec(card: ModelCard) -> dict[str, Any]:
    t = card.threshold
    return {"value": t.value, "reference": t.reference, "method": t.method}


def _image_spec(preprocess: PreprocessConfig) -> dict[str, Any]:
    return {
        "image": {"size": preprocess.image_size, "max_pixels": preprocess.max_pixels, "colour": "RGB"},
        "input": {"images": "uint8 (B, S, S, 3), RGB, resized to S x S (bilinear), not normalised"},
        "normalisation": {"mean": list(preprocess.mean), "std": list(preprocess.std), "in_graph": True},
    }


def _plan(store: ModelStore, card: ModelCard, settings: ExportSettings) -> _Plan:
    if card.kind is LineKind.IMAGE_ANOMALY:
        return _anomaly_plan(store, card, settings)
    if card.kind is LineKind.IMAGE_CLASSIFIER:
        return _classifier_plan(store, card, settings)
    return _sensor_plan(store, card, settings)


def _data_root(card: ModelCard, settings: ExportSettings) -> Path:
    root = settings.data or (Path(card.data.root) if card.data else None)
    if root is None or not root.exists():
        raise DataError(
            f"the parity check needs the line's own data and {root or 'its card names no folder'} is not there: "
            "pass --data with the images (or CSV) the line was fitted on"
        )
    return root


def _spread(items: list[Any], limit: int) -> list[Any]:
    if limit == 0 or len(items) <= limit:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, limit).round()]


def _image_items(card: ModelCard, settings: ExportSettings, size: int) -> list[Image.Image]:
    root = _data_root(card, settings)
    paths = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and "ground_truth" not in p.parts
    )  # fmt: skip
    images = []
    for path in _spread(paths, settings.parity_items):
        try:
            images.append(resize(open_image(path.read_bytes()), size))
        except DataError:
            continue  # fitting skipped it too
    if not images:
        raise DataError(f"no readable images under {root} for the parity check: pass --data with the line's images")
    return images


def _batch(images: Sequence[Image.Image], card: ModelCard) -> torch.Tensor:
    assert card.backbone is not None
    config = card.backbone.preprocess()
    return torch.stack([to_tensor(image, config) for image in images])


def _chunks(items: Sequence[Any], size: int = 16) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _anomaly_plan(store: ModelStore, card: ModelCard, settings: ExportSettings) -> _Plan:
    assert card.backbone is not None
    preprocess = card.backbone.preprocess()
    exported = anomaly_scorer(store, card)
    graph = graphs.AnomalyGraph(extractor_for(card, FP32), exported, preprocess)
    display = exported.display_range()
    spec = {
        "kind": str(card.kind),
        **_image_spec(preprocess),
        "outputs": {"scores": "(B,) image scores", "maps": "(B, h, w) smoothed anomaly maps, raw units"},
        "threshold": _threshold_spec(card),
        "display_range": [display[0], display[1]],
        "head": card.head.kind if card.head else None,
    }  # fmt: skip

    def torch_path(runtime: Runtime, search: str) -> Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]]:
        extractor = extractor_for(card, runtime)
        scorer = anomaly_scorer(store, card).to(extractor.device)
        if isinstance(scorer.head, PatchCore):
            scorer.head.use_search(search)

        def run(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
            decided = [d for part in _chunks(items) for d in scorer.predict(extractor.extract(_batch(part, card)))]
            return np.array([d.anomaly_score for d in decided]), np.array([d.is_anomaly for d in decided])

        return run

    def edge(model: lineguard_edge.EdgeModel, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        answers = [a for part in _chunks(items) for a in model.predict_many(part)]
        return np.array([a["anomaly_score"] for a in answers]), np.array([a["is_anomaly"] for a in answers])

    example = torch.from_numpy(np.zeros((2, preprocess.image_size, preprocess.image_size, 3), dtype=np.uint8))

    def calibration() -> list[np.ndarray]:
        return quantize.normal_images(_data_root(card, settings), preprocess.image_size, settings.calibration_items)

    return _Plan(
        graph, example, ["images"], ["scores", "maps"], spec, _image_items(card, settings, preprocess.image_size),
        torch_path(FP32, "fp32"), edge, service_default=torch_path(Runtime(device="cpu"), "auto"),
        calibration=calibration,
    )  # fmt: skip


def _classifier_plan(store: ModelStore, card: ModelCard, settings: ExportSettings) -> _Plan:
    assert card.backbone is not None and card.classifier is not None
    preprocess = card.backbone.preprocess()
    fitted = classifier(store, card)
    graph = graphs.ClassifierGraph(extractor_for(card, FP32), fitted.model, preprocess)
    info = card.classifier
    spec = {
        "kind": str(card.kind),
        **_image_spec(preprocess),
        "outputs": {"probabilities": "(B, K) temperature-scaled class probabilities, in the order of classes"},
        "classes": info.classes,
        "normal_class": info.normal_class,
        "severity": info.severity,
        "threshold": _threshold_spec(card),
    }  # fmt: skip

    def torch_path(runtime: Runtime) -> Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]]:
        extractor = extractor_for(card, runtime)
        line = classifier(store, card)
        line.model.to(extractor.device)

        def run(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
            decided = [d for part in _chunks(items) for d in line.predict(extractor.extract(_batch(part, card)))]
            return np.stack([d.probabilities for d in decided]).ravel(), np.array([d.index for d in decided])

        return run

    def edge(model: lineguard_edge.EdgeModel, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        answers = [a for part in _chunks(items) for a in model.predict_many(part)]
        p = np.array([[a["probabilities"][c] for c in info.classes] for a in answers])
        return p.ravel(), np.array([info.classes.index(a["prediction"]) for a in answers])

    example = torch.from_numpy(np.zeros((2, preprocess.image_size, preprocess.image_size, 3), dtype=np.uint8))
    return _Plan(
        graph, example, ["images"], ["probabilities"], spec, _image_items(card, settings, preprocess.image_size),
        torch_path(FP32), edge, measure="absolute", service_default=torch_path(Runtime(device="cpu")),
    )  # fmt: skip


def _sensor_plan(store: ModelStore, card: ModelCard, settings: ExportSettings) -> _Plan:
    assert card.head is not None and card.inputs is not None
    if card.head.kind != "autoencoder":
        raise ConfigError(
            f"line {card.line!r} has the {card.head.kind} head, which scores a window of readings: the edge runtime "
            "scores each reading alone, so export a line fitted with --head autoencoder (the service streams windows)"
        )
    autoencoder = SensorAutoEncoder(**card.head.params)
    autoencoder.load_state_dict(read_tensors(store, card))
    reference = sensor_model(store, card)
    table = read_table(_data_root(card, settings), reference.features)
    rows = _spread(list(range(len(table.values))), 4 * settings.parity_items)
    values = list(table.values[rows].astype(np.float64))
    spec = {
        "kind": str(card.kind),
        "input": {"values": "float64 (B, n): readings in the sensors' units, in the order of features"},
        "outputs": {"errors": "(B, n) squared errors of the standardised reading", "expected": "(B, n) reconstruction"},
        "features": reference.features,
        "top_k": reference.top_k,
        "threshold": _threshold_spec(card),
    }  # fmt: skip

    def numpy_path(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        out = reference.predict(np.asarray(items))
        return out.scores, out.is_anomaly

    def edge(model: lineguard_edge.EdgeModel, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        from lineguard_edge.readings import Readings

        answer = model.predict_readings(Readings(np.asarray(items), single=False, sensor_id=None))
        return np.array(answer["scores"]), np.array([s == "anomaly" for s in answer["status"]])

    example = torch.zeros((2, card.inputs.n_features), dtype=torch.float64)
    return _Plan(
        graphs.SensorGraph(autoencoder), example, ["values"], ["errors", "expected"], spec, values,
        numpy_path, edge,
    )  # fmt: skip


# --- parity ----------------------------------------------------------------------------------------------
def _difference(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    absolute = np.abs(got.astype(np.float64) - want.astype(np.float64))
    relative = absolute / np.maximum(np.abs(want.astype(np.float64)), 1e-12)
    return float(relative.max(initial=0.0)), float(absolute.max(initial=0.0))


def _parity(
    plan: _Plan, model: lineguard_edge.EdgeModel, settings: ExportSettings, reference: tuple[np.ndarray, np.ndarray]
) -> Parity:
    """The bundle's answers on the plan's items against ``reference``, the plan's reference on the same items."""
    got, got_decisions = plan.edge(model, plan.items)
    want, want_decisions = reference
    relative, absolute = _difference(got, want)
    parity = Parity(
        items=len(plan.items),
        reference="torch fp32, CPU" if plan.service_default else "the service's NumPy model",
        max_relative_difference=relative,
        max_abs_difference=absolute,
        decisions_differ=int((got_decisions != want_decisions).sum()),
        tolerance=settings.tolerance,
        measure=plan.measure,
        allowed_decisions=math.ceil(settings.int8_decisions * len(plan.items)) if settings.int8 else 0,
        scores_checked=not settings.int8,
    )
    if plan.service_default is not None:  # the service's own precision on this machine (bf16 or fp16 where fast)
        served, served_decisions = plan.service_default(plan.items)
        rel, ab = _difference(got, served)
        parity.service_default = {
            "max_relative_difference": rel,
            "max_abs_difference": ab,
            "decisions_differ": int((got_decisions != served_decisions).sum()),
        }
    return parity
