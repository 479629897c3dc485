"""PaDiM: a Gaussian per feature-grid position, scored by Mahalanobis distance.

Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2020.

Fitting estimates, for every grid cell, the mean and covariance of the (randomly sub-selected) feature
vector over the normal images, regularised by ``eps * I``. The inverse is kept as the inverse Cholesky
factor ``W = L^-1`` (``Sigma = L L^T``) so scoring is one batched product: ``d^2 = |W (x - mu)|^2``.
Cholesky in float64 is used instead of ``torch.linalg.inv``, whose batched form failed on this
project's torch/MKL build for well-conditioned 152x152 covariances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from lineguard.errors import ConfigError, DataError, FeatureMismatchError
from lineguard.models.features import align_and_concat, check_channels
from lineguard.models.heads.base import AnomalyHead, HeadOutput


class Padim(AnomalyHead):
    """Args:
    n_features: random subset of the concatenated channels kept (PaDiM's dimensionality reduction);
        all channels when the backbone has fewer.
    eps: covariance regularisation added to the diagonal.
    seed: seeds the channel subset.
    """

    kind = "padim"
    feature_index: torch.Tensor
    mean: torch.Tensor
    inv_chol: torch.Tensor
    grid: torch.Tensor

    def __init__(self, n_features: int = 100, eps: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        if n_features < 1 or eps <= 0:
            raise ConfigError(f"PaDiM needs n_features >= 1 and eps > 0, got {n_features} and {eps}")
        self.n_features = n_features
        self.eps = eps
        self.seed = seed
        self.register_buffer("feature_index", torch.zeros(0, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(0, 0))  # (P, d)
        self.register_buffer("inv_chol", torch.zeros(0, 0, 0))  # (P, d, d)
        self.register_buffer("grid", torch.zeros(2, dtype=torch.long))

    def params(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "eps": self.eps, "seed": self.seed}

    @property
    def is_fitted(self) -> bool:
        return self.mean.numel() > 0

    def _index(self, total_channels: int) -> torch.Tensor:
        if self.feature_index.numel() == 0:
            generator = torch.Generator().manual_seed(self.seed)
            keep = min(self.n_features, total_channels)
            self.feature_index = torch.randperm(total_channels, generator=generator)[:keep].sort().values
        return self.feature_index

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``(B, d, H, W)``: aligned maps restricted to the chosen channel subset."""
        emb = align_and_concat([f.float() for f in features])
        return emb.index_select(1, self._index(emb.shape[1]).to(emb.device))

    def summarize(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        emb = self.embed(features)
        b = emb.shape[0]
        return {
            "embeddings": emb.flatten(2),  # (B, d, P)
            "grid": torch.tensor(emb.shape[-2:]).expand(b, 2),
            "channels": torch.tensor([int(f.shape[1]) for f in features]).expand(b, -1),
        }

    def fit_summaries(self, summaries: Iterable[Mapping[str, torch.Tensor]]) -> None:
        count = 0
        total: torch.Tensor | None = None
        outer: torch.Tensor | None = None
        grid = channels = None
        for summary in summaries:
            x = summary["embeddings"].double()  # (B, d, P)
            if total is None or outer is None:
                total = torch.zeros(x.shape[2], x.shape[1], dtype=torch.float64, device=x.device)
                outer = torch.zeros(x.shape[2], x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            total += x.sum(0).T
            outer += torch.einsum("bdp,bep->pde", x, x)
            count += x.shape[0]
            grid, channels = summary["grid"][0], summary["channels"][0]
        if total is None or outer is None or grid is None or channels is None or count < 2:
            raise DataError(f"PaDiM needs at least 2 normal images to estimate covariances, got {count}")
        mean = total / count
        cov = (outer - count * mean[:, :, None] * mean[:, None, :]) / (count - 1)
        eye = torch.eye(cov.shape[-1], dtype=torch.float64, device=cov.device)
        chol = torch.linalg.cholesky(cov + self.eps * eye)
        inv_chol = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
        self._index(int(channels.sum()))  # deterministic from the seed; set here when summaries ran elsewhere
        self.mean = mean.float()
        self.inv_chol = inv_chol.float().contiguous()
        self.grid = grid.to(self.mean.device)
        self.channels = channels.to(self.mean.device)

    def forward(self, features: list[torch.Tensor]) -> HeadOutput:
        self.require_fitted("PaDiM Gaussians are not estimated")
        check_channels(features, self.channels.tolist(), "PaDiM")
        emb = self.embed([f.to(self.mean.device) for f in features])  # (B, d, H, W)
        b, _, h, w = emb.shape
        if [h, w] != self.grid.tolist():
            raise FeatureMismatchError(
                f"PaDiM was fitted on a {self.grid.tolist()} grid but got {[h, w]}: use the card's image size"
            )
        diff = emb.flatten(2).permute(2, 1, 0) - self.mean[:, :, None]  # (P, d, B)
        mahalanobis = torch.bmm(self.inv_chol, diff).pow_(2).sum(1).sqrt_()  # (P, B)
        return HeadOutput(patch_scores=mahalanobis.T.reshape(b, h, w))
