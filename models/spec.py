"""What identifies a backbone's features: the one backbone descriptor that every other refers to (a line's
card, the service's ``backbones`` list and a fit's options each carry one). Torch-free, so light processes
can import it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
DEFAULT_LAYERS: tuple[str, ...] = ("blocks.2", "blocks.4")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # of the backbone (models.device) and of PatchCore's search
Aggregation = Literal["local_global", "max", "mean"]  # how an anomaly map becomes an image score (models.scoring)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
Tail = Literal["none", "frozen", "finetune"]  # a classifier's backbone stages after the shared ones
Pooling = Literal["avg", "avgmax"]  # how a classifier pools each feature map


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that decides the features a line was fitted on; lines with equal specs share a backbone."""

    name: str = DEFAULT_BACKBONE
    layers: tuple[str, ...] = DEFAULT_LAYERS
    image_size: int = 256

    def key(self) -> str:
        """``name|layer,layer|size``: lines whose keys are equal share one backbone deployment."""
        return f"{self.name}|{','.join(self.layers)}|{self.image_size}"


@dataclass(frozen=True)
class Runtime:
    """Where and how a backbone runs (not part of what a line was fitted on): the weights' source, the
    device and the numeric precision, each ``"auto"`` by default
    (see :class:`lineguard.models.backbone.FeatureExtractor`)."""

    weights: str = "auto"
    device: str = "auto"
    precision: str = "auto"
