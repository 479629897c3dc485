"""Mean embedding: distance of an image's pooled feature vector to the mean of the normal ones.

The simplest useful baseline in this field (e.g. the "mean embedding distance" of one-class transfer
learning; Rippel et al., "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for
Anomaly Detection", ICPR 2020, use it with a Gaussian). It sees global changes (colour, texture, shape)
and little of small local defects. The image score is the pooled distance; the anomaly map is each
cell's distance to the same mean, a coarse "where" for the overlay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from lineguard.errors import ConfigError, DataError
from lineguard.models.features import align_and_concat, check_channels
from lineguard.models.heads.base import AnomalyHead, HeadOutput

METRICS = ("euclidean", "cosine")


class MeanEmbedding(AnomalyHead):
    """Args:
    metric: "euclidean" or "cosine" distance to the mean embedding.
    """

    kind = "mean"
    mean_embedding: torch.Tensor

    def __init__(self, metric: str = "euclidean") -> None:
        super().__init__()
        if metric not in METRICS:
            raise ConfigError(f"metric {metric!r} is not one of {METRICS}")
        self.metric = metric
        self.register_buffer("mean_embedding", torch.zeros(0))

    def params(self) -> dict[str, Any]:
        return {"metric": self.metric}

    @property
    def is_fitted(self) -> bool:
        return self.mean_embedding.numel() > 0

    @staticmethod
    def pool(features: list[torch.Tensor]) -> torch.Tensor:
        """``(B, sum C_i)``: global average of every layer, concatenated."""
        return torch.cat([f.float().mean((2, 3)) for f in features], dim=1)

    def summarize(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = self.pool(features)
        channels = torch.tensor([int(f.shape[1]) for f in features]).expand(pooled.shape[0], -1)
        return {"pooled": pooled, "channels": channels}

    def fit_summaries(self, summaries: Iterable[Mapping[str, torch.Tensor]]) -> None:
        total, count, channels = None, 0, None
        for summary in summaries:
            pooled = summary["pooled"].double()
            total = pooled.sum(0) if total is None else total + pooled.sum(0)
            count += pooled.shape[0]
            channels = summary["channels"][0]
        if total is None or channels is None:
            raise DataError("mean embedding got no training features: the line needs at least one normal image")
        self.mean_embedding = (total / count).float()
        self.channels = channels.to(self.mean_embedding.device)

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., C)`` -> distance to the mean ``(...)``."""
        distance: torch.Tensor
        if self.metric == "cosine":
            distance = 1.0 - F.cosine_similarity(x, self.mean_embedding.expand_as(x), dim=-1)
        else:
            distance = (x - self.mean_embedding).norm(dim=-1)
        return distance

    def forward(self, features: list[torch.Tensor]) -> HeadOutput:
        self.require_fitted("mean embedding is not computed")
        check_channels(features, self.channels.tolist(), "mean embedding")
        features = [f.to(self.mean_embedding.device) for f in features]
        cells = align_and_concat([f.float() for f in features]).permute(0, 2, 3, 1)  # (B, H, W, C)
        return HeadOutput(patch_scores=self._distance(cells), image_scores=self._distance(self.pool(features)))
