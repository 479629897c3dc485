"""What runs the service's shared backbone: torch, ONNX Runtime or OpenVINO, behind one call.

    runner = feature_runner("tf_efficientnet_lite0", ["blocks.2", "blocks.4"], 256, runtime="auto")
    maps = runner(images)     # uint8 (B, 3, S, S) -> one float16 (B, C_i, h_i, w_i) map per feature layer

torch is the GPU path and the reference. On the CPU the backbone can also run as the ONNX graph of
:class:`lineguard.models.export.BackboneGraph`, the same export as a bundle's, compiled by ONNX Runtime or
OpenVINO. ``auto`` picks the fastest path whose decisions are those of fp32 (``python -m
benchmarks.backbone_runtime``: on both shared data sets no decision of OpenVINO fp32 differed, where torch
bf16 changed 7 of 583 and 1 of 128): OpenVINO in fp32 where it is installed, else torch with its own rule
(bf16 on CPUs with native bf16). ``precision: bf16`` asks OpenVINO for bf16, faster still and with bf16's
changed decisions; ONNX Runtime runs fp32 only.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lineguard.errors import ConfigError
from lineguard.models import export as graphs
from lineguard.models.backbone import FeatureExtractor
from lineguard_edge.runtime import Graph, open_graph

RUNTIMES = ("auto", "torch", "onnx", "openvino")
PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class FeatureRunner(Protocol):
    runtime: str
    precision: str

    def __call__(self, images: np.ndarray) -> list[np.ndarray]: ...

    def set_threads(self, threads: int) -> None: ...


def resolve_runtime(runtime: str, device: torch.device) -> str:
    """``auto`` -> torch on a GPU, OpenVINO on the CPU where it is installed, else torch. An exported runtime
    asked for on a GPU replica is refused: those graphs run on the CPU here."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"backbone runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if device.type != "cpu":
        if runtime in ("onnx", "openvino"):
            raise ConfigError(
                f"backbone runtime {runtime!r} runs on the CPU and this replica has a GPU: "
                "set runtime: torch (or auto), or remove num_gpus from the Backbone's ray_actor_options"
            )
        return "torch"
    if runtime == "auto":
        return "openvino" if importlib.util.find_spec("openvino") is not None else "torch"
    return runtime


class TorchFeatures:
    """The extractor itself, normalising on its device (the image is sent as uint8)."""

    runtime = "torch"

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self.precision = PRECISION_NAMES[extractor.dtype]
        device = extractor.device
        self._mean = torch.tensor(extractor.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(extractor.std, device=device).view(1, 3, 1, 1) * 255.0

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(images).to(self.extractor.device).float().sub_(self._mean).div_(self._std)
        return [m.half().cpu().numpy() for m in self.extractor.extract(x)]

    def set_threads(self, threads: int) -> None:
        if self.extractor.device.type == "cpu":
            torch.set_num_threads(threads)


class CompiledFeatures:
    """The extractor exported to ONNX (fp32 weights) and compiled by ``runtime`` at ``precision``."""

    def __init__(
        self, extractor: FeatureExtractor, image_size: int, runtime: str, precision: str, threads: int | None = None
    ) -> None:
        if runtime == "onnx" and precision != "fp32":
            precision = "fp32"  # ONNX Runtime's CPU kernels are fp32; bf16 is OpenVINO's
        self.runtime, self.precision = runtime, precision
        example = torch.zeros((2, 3, image_size, image_size), dtype=torch.uint8)
        graph = graphs.BackboneGraph(extractor)
        self._onnx = graphs.to_onnx(graph, example, ["images"], graph.outputs)
        self._threads = threads
        self._graph = self._compile()

    def _compile(self) -> Graph:
        with tempfile.TemporaryDirectory(prefix="lineguard-backbone-") as scratch:
            path = Path(scratch) / "backbone.onnx"
            path.write_bytes(self._onnx)
            return open_graph(self.runtime, path, self._threads, self.precision)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return [m.astype(np.float16) for m in self._graph.run({"images": images})]

    def set_threads(self, threads: int) -> None:
        if threads != self._threads:
            self._threads = threads
            self._graph = self._compile()


def feature_runner(
    backbone: str,
    layers: Sequence[str],
    image_size: int,
    weights: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    runtime: str = "auto",
) -> FeatureRunner:
    """The backbone ``backbone`` truncated after ``layers`` for ``image_size`` px images, run by ``runtime``
    (see the module's docstring); ``weights``, ``device`` and ``precision`` as for FeatureExtractor."""
    extractor = FeatureExtractor(backbone, layers, weights, device, precision)
    chosen = resolve_runtime(runtime, extractor.device)
    if chosen == "torch":
        return TorchFeatures(extractor)
    compute = "fp32" if precision == "auto" else PRECISION_NAMES[extractor.dtype]  # auto: fp32's decisions
    fp32 = extractor if extractor.dtype == torch.float32 else FeatureExtractor(backbone, layers, weights, "cpu", "fp32")
    return CompiledFeatures(fp32, image_size, chosen, compute)
