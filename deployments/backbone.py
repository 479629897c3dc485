"""Backbone deployment: the shared, batched feature extractor for every image line.

One pool of replicas serves all lines with the same backbone; ``@serve.batch`` merges the image
batches of concurrent calls (from any line) into one forward pass. The device follows the replica's
resources: with ``num_gpus`` in ``ray_actor_options`` (fractional is fine) it runs on the GPU in fp16 with
torch, otherwise on the CPU (bf16 where the CPU has native bf16) with the runtime of the backbone's
``runtime`` in serve_config.yaml: OpenVINO by default, the same graph as an exported bundle's
(:mod:`lineguard.models.feature_runtime`). Features leave as float16.

torch and timm are imported inside the replica, not at module level: the controller imports this
module just to build the application, and that import took 3 s of the cold start.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import ray
from ray import serve

from lineguard.deployments.config import BackboneArgs, BackboneTuning, tune_batching
from lineguard.deployments.messages import FeatureBatch, ImageBatch
from lineguard.models.preprocess import image_intensity

logger = logging.getLogger("ray.serve")
DEFAULTS = BackboneTuning()  # the decorator's batching and the constructor's, until a user_config arrives


def replica_device() -> str:
    """CUDA when Ray gave this replica a GPU, else the CPU."""
    import torch

    return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"


@serve.deployment
class Backbone:
    def __init__(self, backbone: dict[str, Any]) -> None:
        from lineguard.models.feature_runtime import feature_runner
        from lineguard.models.memory import keep_large_buffers

        keep_large_buffers()  # torch's layer buffers stay in the heap: 2.5x at batch 16 here (models/memory.py)
        self.args = BackboneArgs(**backbone)
        a = self.args
        self.features = feature_runner(
            a.name, a.layers, a.image_size, a.weights, replica_device(), a.precision, a.runtime
        )  # fmt: skip
        logger.info("backbone %s runs on %s in %s", a.name, self.features.runtime, self.features.precision)
        self.reconfigure({})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        tuning = BackboneTuning(**user_config)
        self.max_batch_size = tuning.max_batch_size
        tune_batching(self.extract_batch, tuning.max_batch_size, tuning.batch_wait_timeout_s)
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.features.set_threads(tuning.threads or max(1, int(cpus)))

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
            layers.append(self.features(images[start : start + self.max_batch_size]))
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

    def describe(self) -> dict[str, str]:
        """What runs this replica's backbone (benchmarks and tests ask)."""
        return {"runtime": self.features.runtime, "precision": self.features.precision}
