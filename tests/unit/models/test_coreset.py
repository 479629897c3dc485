"""Greedy k-center coreset: covers the data better than random picks, deterministic, composable."""

from __future__ import annotations

import torch

from lineguard.models.coreset import greedy_coreset, greedy_coreset_batched


def covering_radius(x: torch.Tensor, chosen: torch.Tensor) -> float:
    return float(torch.cdist(x, x[chosen]).min(1).values.max())


def clustered(n: int = 3000, d: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, d, generator=g) * 6
    sizes = [n // 2] + [n // 22] * 11  # one big cluster, eleven small ones
    return torch.cat([c + torch.randn(s, d, generator=g) for c, s in zip(centres, sizes, strict=True)])


def test_covers_better_than_random_and_finds_every_cluster() -> None:
    x = clustered()
    chosen = greedy_coreset(x, 60, projection_dim=None)
    random = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:60]
    assert covering_radius(x, chosen) < 0.8 * covering_radius(x, random)
    labels = torch.cdist(x, x[chosen]).argmin(1)
    assert len(set(labels.tolist())) == 60


def test_projection_keeps_quality() -> None:
    x = clustered(d=152)
    exact = covering_radius(x, greedy_coreset(x, 80, projection_dim=None))
    projected = covering_radius(x, greedy_coreset(x, 80, projection_dim=64))
    assert projected < 1.25 * exact


def test_deterministic_unique_and_prefix_is_a_coreset() -> None:
    x = clustered()
    a, b = greedy_coreset(x, 50), greedy_coreset(x, 50)
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == 50
    assert torch.equal(greedy_coreset(x, 20), a[:20])


def test_k_at_least_n_returns_everything() -> None:
    x = torch.randn(10, 4)
    assert sorted(greedy_coreset(x, 25).tolist()) == list(range(10))


def test_batched_matches_one_by_one() -> None:
    batch = torch.stack([clustered(400, 16, seed=s) for s in range(3)])
    together = greedy_coreset_batched(batch, 30, projection_dim=None)
    for i in range(3):
        assert torch.equal(together[i], greedy_coreset(batch[i], 30, projection_dim=None))
