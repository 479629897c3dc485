"""A line's whole network as one graph for ONNX: from the resized uint8 image (or the raw reading) to what
the line decides on, with nothing left to the runtime but decoding, the threshold and drawing.

- image anomaly: ``images`` uint8 ``(B, S, S, 3)`` -> normalisation -> truncated backbone -> head ->
  smoothed map -> ``scores`` ``(B,)`` and ``maps`` ``(B, h, w)``, exactly :class:`AnomalyScorer`'s numbers;
- classifier: ``images`` -> backbone -> tail and head -> ``probabilities`` ``(B, K)``, temperature-scaled;
- the service's shared backbone (:mod:`lineguard.models.feature_runtime`): ``images`` uint8 ``(B, 3, S, S)``
  -> normalisation -> truncated backbone -> one output per feature layer, what the Backbone deployment sends on;
- sensor: ``values`` float64 ``(B, n)`` -> the AutoEncoder -> ``errors`` and ``expected`` ``(B, n)``, the
  squared error per feature and the reconstruction in the sensors' units (float64, as
  :class:`lineguard.models.sensor_model.SensorModel` computes them).

Normalisation sits in the graph so that the edge runtime feeds what :func:`lineguard_edge.images.resize`
gives, with no second copy of the arithmetic. Every graph runs in float32 (float64 where the NumPy path
does): the service's bf16 and fp16 are its own speed choices, and parity is measured against fp32.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lineguard.models.autoencoder import SensorAutoEncoder
from lineguard.models.backbone import FeatureExtractor
from lineguard.models.classifier import ImageClassifier
from lineguard.models.heads.patchcore import PatchCore
from lineguard.models.preprocess import PreprocessConfig
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.sensor_model import Z_CLIP

OPSET = 17


class _Normalise(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, S, S, 3)`` (or ``(B, 3, S, S)``) -> float ``(B, 3, S, S)``: the arithmetic of
        :func:`models.tensors.to_tensor`."""
        x = images.permute(0, 3, 1, 2) if self.channels_last else images
        return x.float().div(255.0).sub(self.mean).div(self.std)


def _fp32_cpu(extractor: FeatureExtractor) -> nn.Module:
    net: nn.Module = extractor.model
    return net.float().cpu().eval()


class AnomalyGraph(nn.Module):
    """Image anomaly line: uint8 images -> ``(scores, maps)``."""

    def __init__(self, extractor: FeatureExtractor, scorer: AnomalyScorer, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.normalise = _Normalise(preprocess.mean, preprocess.std)
        self.net = _fp32_cpu(extractor)
        self.scorer = scorer.cpu().eval()
        head = scorer.head
        if isinstance(head, PatchCore):  # one exact fp32 product over the whole bank: no chunk loop to trace
            head.use_search("fp32", chunk_size=None)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = [f.float() for f in self.net(self.normalise(images))]
        maps, scores = self.scorer.maps_and_scores(features)
        return scores, maps


class BackboneGraph(nn.Module):
    """The service's shared backbone: uint8 ``(B, 3, S, S)`` images -> one float32 map per feature layer."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        super().__init__()
        self.normalise = _Normalise(extractor.mean, extractor.std, channels_last=False)
        self.net = _fp32_cpu(extractor)
        self.outputs = [f"features_{i}" for i in range(len(extractor.layers))]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(f.float() for f in self.net(self.normalise(images)))


class ClassifierGraph(nn.Module):
    """Classifier line: uint8 images -> temperature-scaled class ``probabilities``."""

    def __init__(self, extractor: FeatureExtractor, model: ImageClassifier, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.normalise = _Normalise(preprocess.mean, preprocess.std)
        self.net = _fp32_cpu(extractor)
        self.model = model.float().cpu().eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = [f.float() for f in self.net(self.normalise(images))]
        logits = self.model(features).double() / self.model.temperature.double()
        return torch.softmax(logits, dim=1)


class SensorGraph(nn.Module):
    """Sensor line: float64 readings -> ``(errors, expected)``, standardised and clipped as SensorModel does."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, autoencoder: SensorAutoEncoder) -> None:
        super().__init__()
        self.autoencoder = autoencoder.float().cpu().eval()
        scaler = autoencoder.scaler
        self.register_buffer("mean", scaler.mean.double().clone())
        self.register_buffer("std", scaler.std.double().clone())

    def forward(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (values - self.mean) / self.std
        rebuilt = self.autoencoder.reconstruct_standardised(z.clamp(-Z_CLIP, Z_CLIP).float()).double()
        return (rebuilt - z) ** 2, rebuilt * self.std + self.mean


def to_onnx(graph: nn.Module, example: torch.Tensor, inputs: list[str], outputs: list[str]) -> bytes:
    """The ONNX model of ``graph`` (batch size dynamic), as bytes."""
    buffer = io.BytesIO()
    axes: dict[str, Any] = {name: {0: "batch"} for name in (*inputs, *outputs)}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's notes on Python branches over shapes: each is fixed by the line (image size, grid)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding")  # a strided slice (PatchCore's query grid)
        torch.onnx.export(
            graph, (example,), buffer,  # type: ignore[arg-type]  # a file object: accepted and documented
            input_names=inputs, output_names=outputs, dynamic_axes=axes,
            opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()
