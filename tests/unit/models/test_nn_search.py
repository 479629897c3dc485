"""Nearest-neighbour distances: exact in fp32, within a fraction of a percent in bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lineguard.models.backbone import FeatureExtractor
from lineguard.models.heads import PatchCore
from lineguard.models.nn_search import NearestNeighbourSearch
from lineguard.models.preprocess import PreprocessConfig
from lineguard.models.tensors import load_file


def test_fp32_is_exact() -> None:
    bank, queries = torch.randn(700, 48) + 3, torch.randn(600, 48) + 3
    got = NearestNeighbourSearch(bank, precision="fp32", chunk_size=128)(queries)
    assert torch.allclose(got, torch.cdist(queries, bank).min(1).values, rtol=1e-4, atol=1e-4)


def test_bf16_is_close_on_real_patch_features(synthetic_line: Path) -> None:
    """Real backbone features (where the nearest neighbour is about as far as the centred norm)."""
    extractor = FeatureExtractor(weights="offline", device="cpu", precision="fp32")
    config = PreprocessConfig(128, extractor.mean, extractor.std)
    images = torch.stack([load_file(p, config) for p in sorted((synthetic_line / "train" / "good").glob("*.png"))])
    head = PatchCore()
    patches = head.embed(extractor.extract(images)).permute(0, 2, 3, 1).reshape(len(images), -1, 152)
    bank, queries = patches[:16].reshape(-1, 152), patches[16:].reshape(-1, 152)
    exact = torch.cdist(queries, bank).min(1).values
    got = NearestNeighbourSearch(bank, precision="bf16")(queries)
    relative = (got - exact).abs() / exact
    assert float(relative.mean()) < 0.005 and float(relative.quantile(0.99)) < 0.02, relative.max()


def test_empty_bank_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        NearestNeighbourSearch(torch.zeros(0, 8))
