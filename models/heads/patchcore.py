"""PatchCore: nearest-neighbour distance of locally aware patch features to a coreset memory bank.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022.

Each feature-grid cell is described by the backbone's mid-level maps, averaged over its ``pool x pool``
neighbourhood and upsampled to the finest grid (``(B, C, H, W)``). Fitting keeps a greedy k-center
coreset of the normal patches (see :mod:`lineguard.models.coreset`); scoring gives each cell its distance to the
nearest patch in that bank. Turning the ``(B, H, W)`` distances into an anomaly map and an image score
is the scorer's job (:mod:`lineguard.models.scoring`).

The bank size, not the data size, sets the scoring cost (one ``(queries, d) x (d, M)`` product per
image), so it is capped by ``bank_size``; ``coreset_ratio`` shrinks it further for small data sets.

Queries are taken on every ``query_stride``-th cell and the distances interpolated back to the full
grid. The 3x3-averaged features of neighbouring cells overlap heavily and the map is smoothed anyway,
so on magnetic_tile stride 2 (a quarter of the queries) gave the same AUROC as stride 1 (image
0.961 / pixel 0.849 vs 0.961 / 0.851 with a 4096 bank), and spending the saving on a bank twice as
large gave 0.973 / 0.853 at half the original search cost. These are the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from lineguard.errors import ConfigError, DataError
from lineguard.models.coreset import greedy_coreset, greedy_coreset_batched
from lineguard.models.features import align_and_concat, check_channels, local_average
from lineguard.models.heads.base import AnomalyHead, HeadOutput
from lineguard.models.nn_search import NearestNeighbourSearch


class PatchCore(AnomalyHead):
    """Args:
    bank_size: most patches kept in the memory bank (scoring cost grows linearly with it).
    coreset_ratio: at most this fraction of all training patches is kept.
    pool: neighbourhood size of the local averaging (3 in the paper).
    projection_dim: random-projection size used only while choosing the coreset.
    candidate_factor: stage one keeps ``candidate_factor * bank`` candidates in all, spread over images.
    search_precision: "auto" | "fp32" | "bf16" | "fp16" for the neighbour search (see nn_search).
    query_stride: score every n-th feature-grid cell and interpolate between them (1 = every cell).
    seed: seeds the coreset projection.
    """

    kind = "patchcore"
    memory_bank: torch.Tensor

    def __init__(
        self,
        bank_size: int = 8192,
        coreset_ratio: float = 0.25,
        pool: int = 3,
        projection_dim: int = 64,
        candidate_factor: float = 10.0,
        search_precision: str = "auto",
        query_stride: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if bank_size < 1 or not 0 < coreset_ratio <= 1 or pool < 1 or candidate_factor < 1 or query_stride < 1:
            raise ConfigError(
                "PatchCore needs bank_size >= 1, 0 < coreset_ratio <= 1, pool >= 1, candidate_factor >= 1, "
                f"query_stride >= 1; got {bank_size}, {coreset_ratio}, {pool}, {candidate_factor}, {query_stride}"
            )
        self.bank_size = bank_size
        self.coreset_ratio = coreset_ratio
        self.pool = pool
        self.projection_dim = projection_dim
        self.candidate_factor = candidate_factor
        self.search_precision = search_precision
        self.query_stride = query_stride
        self.seed = seed
        self._num_images: int | None = None
        self.register_buffer("memory_bank", torch.zeros(0, 0))
        self.search: NearestNeighbourSearch | None = None

    def params(self) -> dict[str, Any]:
        return {
            "bank_size": self.bank_size,
            "coreset_ratio": self.coreset_ratio,
            "pool": self.pool,
            "projection_dim": self.projection_dim,
            "candidate_factor": self.candidate_factor,
            "search_precision": self.search_precision,
            "query_stride": self.query_stride,
            "seed": self.seed,
        }

    @property
    def is_fitted(self) -> bool:
        return self.memory_bank.shape[0] > 0

    def embed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Locally aware patch features ``(B, C, H, W)`` on the finest grid."""
        return align_and_concat([local_average(f.float(), self.pool) for f in features])

    # --- fitting -----------------------------------------------------------------------------------
    def plan(self, num_images: int) -> None:
        self._num_images = num_images

    def _per_image(self, patches_per_image: int) -> int:
        images = self._num_images or 1
        bank = min(self.bank_size, math.ceil(self.coreset_ratio * images * patches_per_image))
        return max(1, min(patches_per_image, math.ceil(self.candidate_factor * bank / images)))

    def summarize(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        emb = self.embed(features)
        b, c, h, w = emb.shape
        patches = emb.permute(0, 2, 3, 1).reshape(b, h * w, c)
        per = self._per_image(h * w)
        if per < h * w:
            index = greedy_coreset_batched(patches, per, self.projection_dim, self.seed)
            patches = torch.gather(patches, 1, index[:, :, None].expand(-1, -1, c))
        return {
            "candidates": patches,  # (B, per, C)
            "grid": torch.tensor([h, w]).expand(b, 2),
            "channels": torch.tensor([int(f.shape[1]) for f in features]).expand(b, -1),
        }

    def fit_summaries(self, summaries: Iterable[Mapping[str, torch.Tensor]]) -> None:
        parts, images, grid, channels = [], 0, (0, 0), None
        for summary in summaries:
            candidates = summary["candidates"].float()
            parts.append(candidates.reshape(-1, candidates.shape[-1]))
            images += candidates.shape[0]
            grid, channels = (int(summary["grid"][0, 0]), int(summary["grid"][0, 1])), summary["channels"][0]
        if not parts or channels is None:
            raise DataError("PatchCore got no training features: the line needs at least one normal image")
        candidates = torch.cat(parts)
        bank = min(self.bank_size, math.ceil(self.coreset_ratio * images * grid[0] * grid[1]))
        index = greedy_coreset(candidates, bank, self.projection_dim, self.seed)
        self.memory_bank = candidates[index].contiguous()
        self.channels = channels.to(self.memory_bank.device)
        self.on_state_loaded()

    def on_state_loaded(self) -> None:
        self.search = NearestNeighbourSearch(self.memory_bank, self.search_precision) if self.is_fitted else None

    def use_search(self, precision: str, chunk_size: int | None = 256) -> None:
        """Search the bank in ``precision`` from now on (``chunk_size=None``: one product over all queries,
        the form an exported graph takes); the card's own precision is what a loaded line starts with."""
        self.search_precision = precision
        self.search = NearestNeighbourSearch(self.memory_bank, precision, chunk_size) if self.is_fitted else None

    # --- scoring -----------------------------------------------------------------------------------
    def forward(self, features: list[torch.Tensor]) -> HeadOutput:
        self.require_fitted("PatchCore memory bank is empty")
        assert self.search is not None
        check_channels(features, self.channels.tolist(), "PatchCore")
        emb = self.embed([f.to(self.memory_bank.device) for f in features])
        b, c, h, w = emb.shape
        s = self.query_stride
        grid = emb[:, :, ::s, ::s] if s > 1 else emb
        gh, gw = grid.shape[-2:]
        distances = self.search(grid.permute(0, 2, 3, 1).reshape(-1, c))
        scores = distances.view(b, gh, gw)
        if s > 1:  # sampled cells are 0, s, 2s, ...: interpolate exactly between them, replicate the edge
            dense = F.interpolate(
                scores[:, None],
                size=((gh - 1) * s + 1, (gw - 1) * s + 1),
                mode="bilinear",
                align_corners=True,
            )
            scores = F.pad(dense, (0, w - dense.shape[-1], 0, h - dense.shape[-2]), mode="replicate")[:, 0]
        return HeadOutput(patch_scores=scores)
