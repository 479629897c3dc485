"""What every anomaly head is: fitted on normal features only, state kept in buffers, scored in one call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lineguard.errors import CorruptModelError, NotFittedError


@dataclass
class HeadOutput:
    """``patch_scores``: ``(B, h, w)`` anomaly per feature-grid cell (higher = more anomalous).
    ``image_scores``: ``(B,)`` when the head scores whole images itself, else None (the scorer aggregates).
    """

    patch_scores: torch.Tensor
    image_scores: torch.Tensor | None = None


class AnomalyHead(nn.Module, ABC):
    """Base class of the heads.

    Fitting is split so that the heavy half can run next to the backbone (in a Ray Data actor, say):
    ``summarize(features)`` reduces one batch of feature maps to what fitting needs (PatchCore: candidate
    patches; PaDiM: embeddings; mean: pooled vectors), and ``fit_summaries`` builds the fitted state from
    all summaries. ``fit`` does both in one process.
    """

    kind: ClassVar[str]
    channels: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("channels", torch.zeros(0, dtype=torch.long))

    # --- configuration -----------------------------------------------------------------------------
    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable): enough to rebuild an unfitted head."""

    def plan(self, num_images: int) -> None:
        """Told how many images the fit will see before ``summarize`` runs (PatchCore sizes its stages)."""

    # --- fitting -----------------------------------------------------------------------------------
    @abstractmethod
    def summarize(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One batch of feature maps ``[(B, C_i, H_i, W_i)]`` -> tensors that ``fit_summaries`` consumes.

        Every tensor has the batch as its first dimension (one row per image), so summaries of
        different batches, or of single images, can be split and concatenated freely.
        """

    @abstractmethod
    def fit_summaries(self, summaries: Iterable[Mapping[str, torch.Tensor]]) -> None:
        """Build the fitted state from the summaries of all fitting batches."""

    def fit(self, feature_batches: Iterable[list[torch.Tensor]]) -> None:
        with torch.inference_mode():
            self.fit_summaries(self.summarize(batch) for batch in feature_batches)

    # --- scoring -----------------------------------------------------------------------------------
    @abstractmethod
    def forward(self, features: list[torch.Tensor]) -> HeadOutput:
        """Score a batch of feature maps; raises NotFittedError before fitting."""

    @property
    @abstractmethod
    def is_fitted(self) -> bool: ...

    def require_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{what}: fit the line first (lineguard fit image --line NAME --data DIR)")

    # --- persistence -------------------------------------------------------------------------------
    def fitted_state(self) -> dict[str, torch.Tensor]:
        """Persistent buffers, detached and on the CPU, ready for safetensors."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_fitted_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Assign saved buffers by name (their shapes are only known after fitting), then rebuild caches."""
        expected = set(self.state_dict())
        if set(tensors) != expected:
            raise CorruptModelError(
                f"saved {self.kind} state does not match the head: missing {sorted(expected - set(tensors))}, "
                f"unexpected {sorted(set(tensors) - expected)}"
            )
        device = next(iter(self.buffers())).device
        for name, value in tensors.items():
            setattr(self, name, value.to(device))
        self.on_state_loaded()

    def on_state_loaded(self) -> None:
        """Rebuild derived, non-persistent tensors after fitting or loading."""
