"""A sensor bundle written by hand, for the edge runtime's tests without torch: its graph is built with
``onnx.helper`` (reconstruction = the normal mean, so a reading's error is its squared z-score)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lineguard_edge import bundle

FEATURES = ["temp", "pressure", "current"]
MEAN = np.array([20.0, 5.0, 1.0])
STD = np.array([2.0, 0.5, 0.1])


def sensor_graph() -> bytes:
    """``values`` (B, 3) float64 -> ``errors`` = z**2, ``expected`` = the mean."""
    mean = numpy_helper.from_array(MEAN, "mean")
    std = numpy_helper.from_array(STD, "std")
    nodes = [
        helper.make_node("Sub", ["values", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["errors"]),
        helper.make_node("Mul", ["values", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "mean"], ["expected"]),
    ]
    zero = numpy_helper.from_array(np.array(0.0), "zero")
    io = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, ["batch", 3]) for n in ("values", "errors", "expected")]
    graph = helper.make_graph(nodes, "sensor", [io[0]], io[1:], initializer=[mean, std, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def write_bundle(folder: Path, line: str = "spindle") -> Path:
    spec = {
        "kind": "sensor-anomaly",
        "features": FEATURES,
        "top_k": 2,
        "threshold": {"value": 9.0, "reference": 1.0, "method": "manual"},
    }
    files = {"model.onnx": sensor_graph(), "spec.json": json.dumps(spec).encode(), "card.json": b"{}"}
    manifest = {"line": line, "version": "v3", "kind": "sensor-anomaly", "runtime": "onnx", "precision": "fp32"}
    bundle.write(folder, files, manifest)
    return folder
