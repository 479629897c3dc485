"""The whole image-anomaly pipeline in one process: bytes -> preprocess -> backbone -> line scorer.

Serving splits the same three steps over deployments; the CLI, the evaluation and the benchmarks use
this class, so both paths run identical code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from lineguard.models.backbone import FeatureExtractor
from lineguard.models.decisions import AnomalyDecision
from lineguard.models.preprocess import PreprocessConfig, open_image
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.tensors import to_tensor


class ImageAnomalyModel:
    def __init__(self, extractor: FeatureExtractor, scorer: AnomalyScorer, preprocess: PreprocessConfig) -> None:
        self.extractor = extractor
        self.scorer = scorer.to(extractor.device)
        self.preprocess = preprocess

    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, S, S)`` normalised images -> backbone feature maps."""
        return self.extractor.extract(batch)

    def predict_batch(self, batch: torch.Tensor, with_maps: bool = False) -> list[AnomalyDecision]:
        return self.scorer.predict(self.features(batch), with_maps=with_maps)

    def predict_images(self, images: Sequence[Image.Image], with_maps: bool = False) -> list[AnomalyDecision]:
        batch = torch.stack([to_tensor(image, self.preprocess) for image in images])
        return self.predict_batch(batch, with_maps=with_maps)

    def predict_bytes(self, data: Sequence[bytes], with_maps: bool = False) -> list[AnomalyDecision]:
        return self.predict_images([open_image(d, self.preprocess.max_pixels) for d in data], with_maps)
