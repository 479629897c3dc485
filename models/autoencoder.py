"""An AutoEncoder for sensor vectors: fitted on normal operation, it flags readings it cannot rebuild.

Each reading ``x`` (``(B, n)``, one value per sensor) is standardised per feature with the normal
data's mean and standard deviation (kept as buffers), squeezed through a small latent space and
reconstructed. Normal operation is correlated (load drives current and temperature...), so the
network learns those relations; a reading that breaks them (a drifting, spiking or stuck sensor)
comes back wrong. The score is the mean squared reconstruction error in standardised units, and each
feature's share of that error says which sensor is off.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lineguard.errors import ConfigError, DataError, FeatureMismatchError, NotFittedError


class FeatureScaler(nn.Module):
    """Per-feature standardisation ``(x - mean) / std``, fitted on normal rows."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.zeros(n_features))

    @property
    def is_fitted(self) -> bool:
        return bool((self.std > 0).all())

    def fit(self, x: torch.Tensor) -> None:
        """``x`` ``(N, n)``. A feature that never varied gets a small floor, not a division by zero."""
        if x.ndim != 2 or x.shape[0] < 2:
            raise DataError(f"scaler needs at least 2 rows of shape (N, {self.mean.numel()}), got {tuple(x.shape)}")
        x = x.double()
        std = x.std(0)
        floor = 1e-6 + 1e-3 * float(std[std > 0].mean()) if bool((std > 0).any()) else 1.0
        self.mean = x.mean(0).float()
        self.std = std.clamp_min(floor).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_fitted:
            raise NotFittedError("the sensor scaler is not fitted: fit the line first (lineguard fit sensor)")
        return (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std + self.mean


def _mlp(sizes: Sequence[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


@dataclass
class SensorOutput:
    """``score`` ``(B,)``; ``errors`` ``(B, n)`` squared errors per feature (standardised);
    ``expected`` ``(B, n)``: the reconstruction in the sensors' own units."""

    score: torch.Tensor
    errors: torch.Tensor
    expected: torch.Tensor

    def shares(self) -> torch.Tensor:
        """Each feature's share of the reading's error, rows sum to 1."""
        return self.errors / self.errors.sum(1, keepdim=True).clamp_min(1e-12)


class SensorAutoEncoder(nn.Module):
    """Args:
    n_features: values per reading.
    hidden: widths of the encoder's hidden layers (the decoder mirrors them); default ``(2n, n)``.
    latent: size of the bottleneck; default ``max(2, n // 3)``.
    """

    def __init__(self, n_features: int, hidden: Sequence[int] | None = None, latent: int | None = None) -> None:
        super().__init__()
        if n_features < 2:
            raise ConfigError(f"an AutoEncoder needs at least 2 features, got {n_features}")
        self.n_features = n_features
        self.hidden = list(hidden) if hidden is not None else [max(8, 2 * n_features), max(4, n_features)]
        self.latent = latent if latent is not None else max(2, n_features // 3)
        if self.latent < 1 or any(w < 1 for w in self.hidden):
            raise ConfigError(f"widths must be positive, got hidden={self.hidden}, latent={self.latent}")
        self.scaler = FeatureScaler(n_features)
        self.encoder = _mlp([n_features, *self.hidden, self.latent], final_activation=False)
        self.decoder = _mlp([self.latent, *reversed(self.hidden), n_features], final_activation=False)

    def params(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "hidden": self.hidden, "latent": self.latent}

    def reconstruct_standardised(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised ``(B, n)`` in, standardised reconstruction out (what training optimises)."""
        out: torch.Tensor = self.decoder(self.encoder(z))
        return out

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error of standardised rows: the training objective."""
        return ((self.reconstruct_standardised(z) - z) ** 2).mean()

    def forward(self, x: torch.Tensor) -> SensorOutput:
        """Raw readings ``(B, n)`` -> scores, per-feature errors and expected values."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise FeatureMismatchError(f"expected readings of shape (B, {self.n_features}), got {tuple(x.shape)}")
        z = self.scaler(x.float())
        rebuilt = self.reconstruct_standardised(z)
        errors = (rebuilt - z) ** 2
        return SensorOutput(score=errors.mean(1), errors=errors, expected=self.scaler.inverse(rebuilt))

    def fitted_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}  # a copy, not a view
