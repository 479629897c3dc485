"""INT8 bundles (``lineguard export --format openvino --int8``): post-training quantization of the backbone
with NNCF, calibrated on the line's normal images, and its accuracy cost measured on labelled test images.

Only the backbone is quantized. The head stays fp32: PatchCore's distance is ``|a|^2 - 2ab + |b|^2`` over
a bank of fp32 features, and in INT8 that difference of large numbers is noise (a whole-graph quantization
scored every magnetic_tile image alike, AUROC 0.5). NNCF is told to leave every node outside the backbone
(``/net/`` in the exported graph's names) alone, and the backbone's first convolution too: it sees the
normalised image itself, and quantizing it cost PatchCore 0.014 of image AUROC on magnetic_tile (0.9590
against fp32's 0.9729; with the stem in fp32, 0.9742), where the layers after it cost nothing measurable.

INT8 moves the scores, not only their noise: on battery_weld PatchCore's INT8 scores were 0.82 x fp32 +
0.56 (correlation 0.96), and at the line's fp32 threshold 23 of 64 decisions changed. The bundle's
threshold (and its reference and heatmap range) is therefore carried onto the INT8 scale by a line fitted
on the line's own images, fp32 score against INT8 score (:class:`ScoreMap`); a monotone map, so it
changes no AUROC, and the parity check then counts the decisions that still differ.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lineguard.errors import ConfigError, DataError
from lineguard.models.metrics import pixel_roc_auc, roc_auc
from lineguard.models.postprocess import upsample
from lineguard.models.preprocess import open_image, resize
from lineguard.training.data import Sample, discover, read_mask

BACKBONE_NODES = "/net/"  # models.export: the graphs' truncated backbone is their ``net`` module


def int8_files(onnx: bytes, calibration: Sequence[np.ndarray]) -> dict[str, bytes]:
    """The ONNX graph as an OpenVINO IR whose backbone runs in INT8, its scales from ``calibration``
    (uint8 ``(S, S, 3)`` images, one at a time as NNCF collects statistics)."""
    try:
        import nncf
        import openvino as ov
    except ImportError as err:
        raise ConfigError("--int8 needs NNCF and OpenVINO: pip install nncf openvino") from err
    nncf.set_log_level(logging.WARNING)  # not a line per node it leaves alone
    if not calibration:
        raise DataError("--int8 needs the line's normal images to calibrate on; none were readable")
    with tempfile.TemporaryDirectory(prefix="lineguard-int8-") as scratch:
        folder = Path(scratch)
        (folder / "model.onnx").write_bytes(onnx)
        model = ov.Core().read_model(folder / "model.onnx")
        dataset = nncf.Dataset([image[None] for image in calibration])
        convolutions = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
        stem = [name for name in convolutions if name.startswith(BACKBONE_NODES)][:1]
        outside = nncf.IgnoredScope(patterns=[f"^(?!{BACKBONE_NODES}).*"], names=stem, validate=False)
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration), ignored_scope=outside)
        ov.save_model(quantized, folder / "model.xml", compress_to_fp16=False)
        return {"model.xml": (folder / "model.xml").read_bytes(), "model.bin": (folder / "model.bin").read_bytes()}


@dataclass(frozen=True)
class ScoreMap:
    """INT8 score ~ ``slope`` x fp32 score + ``intercept``, fitted by least squares on the line's own images."""

    slope: float
    intercept: float
    correlation: float
    items: int

    @classmethod
    def fit(cls, fp32: np.ndarray, int8: np.ndarray) -> ScoreMap:
        if len(fp32) < 3 or float(np.std(fp32)) == 0.0:
            raise DataError("re-calibrating an INT8 threshold needs at least 3 images with different scores")
        slope, intercept = np.polyfit(fp32.astype(np.float64), int8.astype(np.float64), 1)
        correlation = float(np.corrcoef(fp32, int8)[0, 1])
        return cls(float(slope), float(intercept), correlation, len(fp32))

    def __call__(self, value: float) -> float:
        return self.slope * value + self.intercept

    def spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` with its threshold (value and reference) and heatmap range carried onto the INT8 scale."""
        t = spec["threshold"]
        threshold = {**t, "value": self(t["value"]), "reference": self(t["reference"]),
                     "method": f"{t['method']}, carried to INT8 scores (lineguard export --int8)"}  # fmt: skip
        low, high = spec["display_range"]
        return {**spec, "threshold": threshold, "display_range": [self(low), self(high)]}

    def to_dict(self) -> dict[str, Any]:
        return {"slope": self.slope, "intercept": self.intercept, "correlation": self.correlation, "items": self.items}


def normal_images(root: Path, size: int, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` of the line's normal (training) images, resized, evenly spread."""
    train = discover(root).train
    if limit and len(train) > limit:
        train = [train[int(i)] for i in np.linspace(0, len(train) - 1, limit).round()]
    return _readable(train, size)[1]


def _readable(samples: Sequence[Sample], size: int) -> tuple[list[Sample], list[np.ndarray]]:
    """The samples that decode, and their images resized to ``size`` (uint8 ``(S, S, 3)``); the others are
    skipped, as fitting skips them."""
    kept, images = [], []
    for sample in samples:
        try:
            images.append(np.asarray(resize(open_image(sample.path.read_bytes()), size)))
        except DataError:
            continue
        kept.append(sample)
    return kept, images


@dataclass
class Accuracy:
    """Image and pixel AUROC of two bundles of one line on the same labelled test images."""

    test_images: int
    image_auroc: dict[str, float | None]
    pixel_auroc: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {"test_images": self.test_images, "image_auroc": self.image_auroc, "pixel_auroc": self.pixel_auroc}


def labelled_test(root: Path) -> list[Sample]:
    """The test images of an MVTec-layout folder when they hold both good and defective parts, else none."""
    try:
        test = discover(root).test
    except DataError:
        return []
    return test if {s.label for s in test} == {0, 1} else []


def accuracy(graphs: dict[str, Any], samples: Sequence[Sample], size: int) -> Accuracy:
    """Each graph (``{"fp32": graph, "int8": graph}``, anomaly graphs: ``images`` -> scores, maps) on
    ``samples``: image AUROC, and pixel AUROC over good images and defective ones with masks."""
    kept, images = _readable(samples, size)
    labels = np.array([s.label for s in kept])
    masked = [i for i, s in enumerate(kept) if s.label == 0 or s.mask is not None]
    masks = [read_mask(kept[i].mask, size) for i in masked]
    has_masks = any(kept[i].label == 1 for i in masked)
    image_auroc: dict[str, float | None] = {}
    pixel_auroc: dict[str, float | None] = {}
    for name, graph in graphs.items():
        scores, maps = [], []
        for start in range(0, len(images), 16):
            batch_scores, batch_maps = graph.run({"images": np.stack(images[start : start + 16])})
            scores.append(batch_scores)
            maps.append(upsample(torch.from_numpy(np.asarray(batch_maps)), (size, size)).numpy())
        all_maps = np.concatenate(maps)
        image_auroc[name] = _rounded(roc_auc(labels, np.concatenate(scores)))
        pixel_auroc[name] = _rounded(pixel_roc_auc(masks, [all_maps[i] for i in masked])) if has_masks else None
    return Accuracy(len(kept), image_auroc, pixel_auroc)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
