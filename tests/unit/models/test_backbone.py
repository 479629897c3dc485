"""The feature extractor: layers by name, dimensions from timm, truncated network, precision."""

from __future__ import annotations

import pytest
import torch

from lineguard.models.backbone import FeatureExtractor, feature_layers


def test_layers_by_name_and_dimensions_from_feature_info() -> None:
    extractor = FeatureExtractor(weights="none", device="cpu", precision="fp32")
    maps = extractor.extract(torch.randn(2, 3, 128, 128))
    assert [m.shape[1] for m in maps] == extractor.channels == [40, 112]
    assert [128 // m.shape[-1] for m in maps] == extractor.reductions == [8, 16]


def test_network_stops_after_the_last_layer_used() -> None:
    extractor = FeatureExtractor(weights="none", device="cpu")
    modules = list(extractor.modules_run())
    assert modules[-1] == "blocks_4"
    assert "blocks_5" not in modules and "conv_head" not in modules


def test_other_timm_families_work() -> None:
    extractor = FeatureExtractor("resnet18", ["layer2", "layer3"], weights="none", device="cpu")
    assert extractor.channels == [128, 256]
    assert list(extractor.modules_run())[-1] == "layer3"
    assert [m.shape[1] for m in extractor.extract(torch.randn(1, 3, 64, 64))] == [128, 256]


def test_unknown_layer_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['layer9'\].*choose from \['blocks.0'"):
        FeatureExtractor(layers=["layer9"], weights="none")
    assert feature_layers("tf_efficientnet_lite0") == [
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.4",
        "blocks.6",
    ]


def test_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="unknown timm model 'not_a_net'"):
        FeatureExtractor("not_a_net", weights="none")


def test_bf16_features_match_fp32() -> None:
    x = torch.randn(2, 3, 128, 128)
    fp32 = FeatureExtractor(weights="offline", device="cpu", precision="fp32").extract(x)
    bf16 = FeatureExtractor(weights="offline", device="cpu", precision="bf16").extract(x)
    for a, b in zip(fp32, bf16, strict=True):
        assert b.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        FeatureExtractor(weights="none", device="cpu", precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where there is no GPU")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        FeatureExtractor(weights="none", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_runs_fp16() -> None:
    extractor = FeatureExtractor(weights="none", device="auto")
    assert extractor.device.type == "cuda" and extractor.dtype == torch.float16
    maps = extractor.extract(torch.randn(2, 3, 128, 128))
    assert maps[0].is_cuda and maps[0].dtype == torch.float32
