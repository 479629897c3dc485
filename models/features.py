"""Feature-map plumbing shared by the heads: local neighbourhood averaging and layer alignment."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lineguard.errors import FeatureMismatchError


def local_average(feature_map: torch.Tensor, size: int) -> torch.Tensor:
    """Average each position with its ``size x size`` neighbourhood (PatchCore's locally aware features).

    ``(B, C, H, W)`` -> ``(B, C, H, W)``; ``size <= 1`` returns the input unchanged.
    """
    if size <= 1:
        return feature_map
    return F.avg_pool2d(feature_map, size, stride=1, padding=size // 2)


def align_and_concat(feature_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Upsample every map to the finest one's grid (bilinear) and stack channels.

    ``[(B, C_i, H_i, W_i)]`` -> ``(B, sum C_i, H_0, W_0)`` where ``H_0, W_0`` is the largest grid.
    """
    if not feature_maps:
        raise FeatureMismatchError("no feature maps given: the backbone must return at least one layer")
    target = max((m.shape[-2:] for m in feature_maps), key=lambda s: s[0] * s[1])
    aligned = [
        m if m.shape[-2:] == target else F.interpolate(m, size=tuple(target), mode="bilinear", align_corners=False)
        for m in feature_maps
    ]
    return torch.cat(aligned, dim=1)


def check_channels(feature_maps: Sequence[torch.Tensor], expected: Sequence[int], head: str) -> None:
    """Refuse features from a different backbone than the head was fitted on, naming both."""
    got = [int(m.shape[1]) for m in feature_maps]
    if list(expected) and got != list(expected):
        raise FeatureMismatchError(
            f"{head} was fitted on feature maps with channels {list(expected)} but got {got}: "
            "score with the backbone and layers recorded in the line's model card"
        )
