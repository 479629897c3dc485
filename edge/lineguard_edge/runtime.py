"""The graph of a bundle, run by ONNX Runtime or OpenVINO behind one call: named arrays in, arrays out.

Either runtime is imported only when a bundle needs it, so a machine with one of them installed runs its
bundles. ``threads`` sets the intra-op threads (default: the runtime's own, one per core). ``precision`` is
the arithmetic: fp32 for a bundle (its parity was measured in fp32); OpenVINO also runs bf16, which the
service's Backbone uses on CPUs with native bf16.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lineguard_edge.errors import ConfigError, CorruptModelError


class Graph(Protocol):
    outputs: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...


class OnnxGraph:
    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ConfigError(
                f"{path} is an ONNX bundle and onnxruntime is not installed: pip install onnxruntime"
            ) from err
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for a graph it cannot load
            raise CorruptModelError(f"{path}: ONNX Runtime cannot load it ({err})") from err
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        result: list[np.ndarray] = self.session.run(self.outputs, inputs)
        return result


OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoGraph:
    def __init__(self, path: Path, threads: int | None = None, precision: str = "fp32") -> None:
        try:
            import openvino as ov
        except ImportError as err:
            raise ConfigError(
                f"{path} is an OpenVINO bundle and openvino is not installed: pip install 'lineguard-edge[openvino]'"
            ) from err
        if precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"OpenVINO runs a graph in {' or '.join(OPENVINO_PRECISIONS)}, not {precision!r}")
        # explicit: OpenVINO's own default is bf16 on CPUs that have it, and a bundle's parity is fp32
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.model = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses of its own
            raise CorruptModelError(f"{path}: OpenVINO cannot load it ({err})") from err
        self.outputs = [o.get_any_name() for o in self.model.outputs]
        self._local = threading.local()  # one infer request per thread: a request is not safe to share

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.model.create_infer_request()
        result = request.infer(inputs)
        # copies: the request's output tensors are overwritten by its next call
        return [np.array(result[name], copy=True) for name in self.outputs]


def open_graph(runtime: str, path: Path, threads: int | None = None, precision: str = "fp32") -> Graph:
    if runtime == "onnx":
        if precision != "fp32":
            raise ConfigError(f"ONNX Runtime runs these graphs in fp32 only, not {precision!r}: use openvino for bf16")
        return OnnxGraph(path, threads)
    if runtime == "openvino":
        return OpenVinoGraph(path, threads, precision)
    raise ConfigError(f"unknown runtime {runtime!r}: onnx or openvino")
