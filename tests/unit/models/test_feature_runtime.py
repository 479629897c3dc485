"""The service's backbone on ONNX Runtime and OpenVINO gives torch's feature maps, and the choice of runtime
is refused where it cannot run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lineguard.errors import ConfigError
from lineguard.models.device import cpu_has_native_bf16
from lineguard.models.feature_runtime import CompiledFeatures, TorchFeatures, feature_runner, resolve_runtime

SIZE = 96
LAYERS = ["blocks.2", "blocks.4"]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 3, SIZE, SIZE), dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(images: np.ndarray) -> list[np.ndarray]:
    """torch fp32 with real weights, float32 (not rounded to float16 as the replica sends them)."""
    runner = feature_runner("tf_efficientnet_lite0", LAYERS, SIZE, device="cpu", precision="fp32", runtime="torch")
    assert isinstance(runner, TorchFeatures)
    x = torch.from_numpy(images).float().sub_(runner._mean).div_(runner._std)
    return [m.numpy() for m in runner.extractor.extract(x)]


def _relative(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(float(np.abs(g.astype(np.float32) - w).max() / np.abs(w).max()) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_exported_runtimes_in_fp32_give_torchs_maps(
    runtime: str, images: np.ndarray, reference: list[np.ndarray]
) -> None:
    runner = feature_runner("tf_efficientnet_lite0", LAYERS, SIZE, device="cpu", precision="fp32", runtime=runtime)
    assert isinstance(runner, CompiledFeatures) and (runner.runtime, runner.precision) == (runtime, "fp32")
    maps = runner(images)
    assert all(m.dtype == np.float16 for m in maps)
    assert _relative(maps, reference) < 2e-3  # float16 rounding of the output, nothing more
    runner.set_threads(1)  # recompiled with one thread: the same numbers
    assert _relative(runner(images), reference) < 2e-3


def test_auto_is_openvino_in_fp32(images: np.ndarray, reference: list[np.ndarray]) -> None:
    """The default: fp32's decisions, even on CPUs where torch's own auto would run bf16."""
    runner = feature_runner("tf_efficientnet_lite0", LAYERS, SIZE, device="cpu")
    assert (runner.runtime, runner.precision) == ("openvino", "fp32")
    assert _relative(runner(images), reference) < 2e-3


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="OpenVINO runs bf16 natively only on CPUs with it")
def test_openvino_in_bf16_when_asked(images: np.ndarray, reference: list[np.ndarray]) -> None:
    runner = feature_runner("tf_efficientnet_lite0", LAYERS, SIZE, device="cpu", precision="bf16")
    assert (runner.runtime, runner.precision) == ("openvino", "bf16")
    assert 1e-4 < _relative(runner(images), reference) < 0.05  # bf16 arithmetic: close, not equal


def test_onnx_runtime_runs_fp32_whatever_the_precision_asked() -> None:
    runner = feature_runner("tf_efficientnet_lite0", LAYERS, 64, weights="none", device="cpu", runtime="onnx")
    assert runner.precision == "fp32"


def test_runtime_choice_and_refusals() -> None:
    assert resolve_runtime("auto", torch.device("cpu")) == "openvino"  # installed with the service
    assert resolve_runtime("auto", torch.device("cuda")) == "torch"
    assert resolve_runtime("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ConfigError, match=r"'openvino' runs on the CPU.*num_gpus"):
        resolve_runtime("openvino", torch.device("cuda"))
    with pytest.raises(ConfigError, match=r"'tensorrt' is not one of auto, torch, onnx, openvino"):
        resolve_runtime("tensorrt", torch.device("cpu"))
