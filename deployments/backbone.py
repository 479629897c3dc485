"""Backbone deployment: the shared, batched feature extractor for every image line.

One pool of replicas serves all lines with the same backbone; ``@serve.batch`` merges the image
batches of concurrent calls (from any line) into one forward pass. The device follows the replica's
resources: with ``num_gpus`` in ``ray_actor_options`` (fractional is fine) it runs on the GPU in fp16,
otherwise on the CPU (bf16 where the CPU has native bf16). Features leave as float16.

torch and timm are imported inside the replica, not at module level: the controller imports this
module just to build the application, and that import took 3 s of the cold start.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray
from ray import serve

from lineguard.deployments.config import BackboneArgs, BackboneTuning, tune_batching
from lineguard.deployments.messages import FeatureBatch, ImageBatch
from lineguard.models.preprocess import image_intensity

DEFAULTS = BackboneTuning()  # the decorator's batching and the constructor's, until a user_config arrives


def replica_device() -> str:
    """CUDA when Ray gave this replica a GPU, else the CPU."""
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


@serve.deployment
class Backbone:
    def __init__(self, backbone: dict[str, Any]) -> None:
        import torch

        from lineguard.models.backbone import FeatureExtractor
        from lineguard.models.memory import keep_large_buffers

        keep_large_buffers()  # torch's layer buffers stay in the heap: 2.5x at batch 16 here (models/memory.py)
        self.args = BackboneArgs(**backbone)
        self.extractor = FeatureExtractor(
            self.args.name, self.args.layers, self.args.weights, replica_device(), self.args.precision
        )
        device = self.extractor.device
        self._mean = torch.tensor(self.extractor.mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.extractor.std, device=device).view(1, 3, 1, 1) * 255.0
        self.reconfigure({})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        tuning = BackboneTuning(**user_config)
        self.max_batch_size = tuning.max_batch_size
        tune_batching(self.extract_batch, tuning.max_batch_size, tuning.batch_wait_timeout_s)
        if self.extractor.device.type == "cpu":
            import torch

            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
            torch.set_num_threads(tuning.threads or max(1, int(cpus)))

    def _forward(self, images: np.ndarray) -> list[np.ndarray]:
        import torch

        x = torch.from_numpy(images).to(self.extractor.device).float().sub_(self._mean).div_(self._std)
        return [m.half().cpu().numpy() for m in self.extractor.extract(x)]

    @serve.batch(
        max_batch_size=DEFAULTS.max_batch_size,
        batch_wait_timeout_s=DEFAULTS.batch_wait_timeout_s,
        batch_size_fn=lambda items: sum(len(b.images) for b in items),
    )
    async def extract_batch(self, batches: list[ImageBatch]) -> list[FeatureBatch]:
        started = time.perf_counter()
        images = np.concatenate([b.images for b in batches]) if batches else np.zeros((0, 3, 1, 1), np.uint8)
        layers: list[list[np.ndarray]] = []
        for start in range(0, len(images), self.max_batch_size):
            layers.append(self._forward(images[start : start + self.max_batch_size]))
        merged = [np.concatenate([chunk[i] for chunk in layers]) for i in range(len(layers[0]))] if layers else []
        intensity = image_intensity(images)
        elapsed = (time.perf_counter() - started) * 1000
        out, offset = [], 0
        for batch in batches:
            n = len(batch.images)
            layers_n = [m[offset : offset + n] for m in merged]
            out.append(FeatureBatch(layers_n, batch.rows, batch.errors, elapsed, intensity[offset : offset + n]))
            offset += n
        return out

    async def __call__(self, batch: ImageBatch, keep_images: bool = False) -> FeatureBatch:
        """Features of the batch; with ``keep_images`` the resized images go on with them (for heatmaps: the
        ingress then never decodes a full-size original to draw one)."""
        if len(batch.images) == 0:
            return FeatureBatch([], batch.rows, batch.errors)
        features: FeatureBatch = await self.extract_batch(batch)
        if keep_images:
            features.images = batch.images
        return features

    def ping(self) -> str:
        return "ok"
