"""Greedy k-center coreset selection (PatchCore's memory-bank subsampling), fast enough for CPUs.

PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) keeps a
coreset of the normal patch features chosen by the greedy k-center rule: repeatedly add the point
farthest from everything selected so far. Selection runs on a random projection of the features (the
paper's own trick, Johnson-Lindenstrauss), which preserves distances well enough to choose points.

Two changes make it fast without changing what is selected in spirit:

- **Two stages.** Greedy k-center is composable: running it on each part, then on the union of the
  parts' selections, is a constant-factor approximation of running it on everything
  (Indyk et al., "Composable core-sets for diversity and coverage maximization", PODS 2014). Stage one
  runs on each image's patches (all images of a batch at once), where the data sits in cache; stage two
  runs on the union of the per-image candidates. On 761 magnetic-tile images this takes seconds where
  one greedy pass over 779k patches takes hours (anomalib's estimate: 8-10 h for a 10% coreset).
- **Vectorised, cache-sized updates.** Each step is one ``addmv`` + ``minimum`` over all points, in place.
  The projection is 64-dimensional by default: 40k candidates x 64 floats (10 MB) stay in the CPU's
  last-level cache, and a step took 0.3 ms here against 2.6 ms at 128 dimensions (20 MB).

The returned order is the greedy order, so any prefix of the result is itself a k-center coreset.
"""

from __future__ import annotations

import math

import torch


def random_projection(dim: int, projection_dim: int, seed: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Gaussian JL projection ``(dim, projection_dim)`` scaled to preserve squared distances on average."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(dim, projection_dim, generator=generator) / math.sqrt(projection_dim)
    return matrix.to(device) if device is not None else matrix


def project(x: torch.Tensor, projection_dim: int | None, seed: int = 0) -> torch.Tensor:
    """``x`` ``(..., d)`` projected to ``projection_dim`` dims (unchanged if None or already smaller)."""
    if projection_dim is None or x.shape[-1] <= projection_dim:
        return x
    return x @ random_projection(x.shape[-1], projection_dim, seed, x.device)


def greedy_coreset(x: torch.Tensor, k: int, projection_dim: int | None = 64, seed: int = 0) -> torch.Tensor:
    """Indices ``(k,)`` of a greedy k-center coreset of ``x`` ``(N, d)``, in selection order.

    ``k >= N`` returns every index (in greedy order). The first point is the one farthest from the mean,
    which makes the result deterministic.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"greedy_coreset needs a non-empty (N, d) tensor, got shape {tuple(x.shape)}")
    n = x.shape[0]
    k = min(k, n)
    z = project(x.float(), projection_dim, seed)
    norms = (z * z).sum(1)
    first = int(((z - z.mean(0)) ** 2).sum(1).argmax())
    selected = torch.empty(k, dtype=torch.long, device=x.device)
    min_dist = torch.empty(n, device=x.device)
    scratch = torch.empty(n, device=x.device)
    index = first
    min_dist.fill_(math.inf)
    for step in range(k):
        selected[step] = index
        # ||z - z_i||^2 = |z|^2 - 2 z.z_i + |z_i|^2, in place
        torch.addmv(norms, z, z[index], alpha=-2.0, out=scratch)
        scratch += norms[index]
        torch.minimum(min_dist, scratch, out=min_dist)
        index = int(min_dist.argmax())
    return selected


def greedy_coreset_batched(x: torch.Tensor, k: int, projection_dim: int | None = 64, seed: int = 0) -> torch.Tensor:
    """Per-item greedy coresets for a batch: ``x`` ``(B, P, d)`` -> indices ``(B, k)`` into dim 1.

    All items advance in lock-step, so a batch of images costs one vectorised step per selected point.
    """
    if x.ndim != 3 or x.shape[1] == 0:
        raise ValueError(f"greedy_coreset_batched needs a (B, P, d) tensor, got shape {tuple(x.shape)}")
    b, p, _ = x.shape
    k = min(k, p)
    z = project(x.float(), projection_dim, seed)
    norms = (z * z).sum(-1)  # (B, P)
    rows = torch.arange(b, device=x.device)
    index = ((z - z.mean(1, keepdim=True)) ** 2).sum(-1).argmax(1)  # (B,)
    selected = torch.empty(b, k, dtype=torch.long, device=x.device)
    min_dist = torch.full((b, p), math.inf, device=x.device)
    for step in range(k):
        selected[:, step] = index
        centre = z[rows, index]  # (B, d')
        dist = norms + norms[rows, index][:, None] - 2.0 * torch.bmm(z, centre[:, :, None]).squeeze(-1)
        torch.minimum(min_dist, dist, out=min_dist)
        index = min_dist.argmax(1)
    return selected
