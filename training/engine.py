"""Running the backbone over many image files: in this process, or in parallel with Ray Data.

One :class:`BatchWorker` does the per-batch work in both engines: decode the files (an unreadable file
becomes an error row naming it, never a crash), run the backbone, then either

- ``"summarize"``: reduce the features to what the head's fit needs (the heavy half of fitting runs
  next to the backbone, so only e.g. PatchCore's per-image coreset candidates travel),
- ``"features"``: return the raw feature maps (small data sets keep them for cross-fitting), or
- ``"maps"``: score with a fitted line scorer and return smoothed anomaly maps, or
- ``"classifier"``: the frozen part of an image classifier (pooled features, and the input of the
  tail stage it fine-tunes), for ``views`` views of each image: the clean one, then augmented ones.

Engines:

- ``run_local``: one process, with the next batch decoded on a thread while the model runs. Faster for
  small fits on a few cores (Ray's start-up and per-batch hops cost more than they save there).
- ``run_ray``: Ray Data ``map_batches`` over an actor pool of ``workers`` actors, each holding a
  backbone (one GPU each when the cluster has GPUs). This is what scales to clusters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lineguard.errors import DataError
from lineguard.models.backbone import FeatureExtractor
from lineguard.models.memory import keep_large_buffers
from lineguard.models.preprocess import PreprocessConfig, open_image
from lineguard.models.scoring import AnomalyScorer
from lineguard.models.tensors import load_file, to_tensor
from lineguard.training.augment import Augment, view_rng
from lineguard.training.options import BackboneSettings
from lineguard.training.runtime import ensure_ray

log = logging.getLogger(__name__)

Mode = Literal["summarize", "features", "maps", "classifier"]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its models, picklable for Ray actors."""

    mode: Mode
    backbone: BackboneSettings
    head_kind: str = "patchcore"
    head_params: dict[str, Any] = field(default_factory=dict)
    scorer_params: dict[str, Any] = field(default_factory=dict)
    state: dict[str, np.ndarray] | None = None  # fitted scorer state, for "maps"
    num_images: int = 0  # for the head's plan(), in "summarize"
    threads: int = 0  # torch threads; 0 = leave as is
    classifier: dict[str, Any] = field(default_factory=dict)  # "classifier": tail and pooling
    views: int = 1  # "classifier": views per image (the first one clean)
    augment: str = "none"  # "classifier": how the other views are made
    seed: int = 0


def read_image(path: Path, config: PreprocessConfig) -> tuple[torch.Tensor | None, str]:
    """``(tensor, "")`` or ``(None, reason)`` for a file that cannot be read as an image (it is skipped and
    named in the fit's report, never a crash)."""
    try:
        return load_file(path, config), ""
    except (DataError, OSError) as err:
        reason = f"{path}: {err}"
        log.warning("skipping unreadable image %s", reason)
        return None, reason


class BatchWorker:
    """Callable on ``{"path": array of str}`` batches; returns per-image columns plus ``path``/``error``."""

    def __init__(self, spec: WorkerSpec) -> None:
        keep_large_buffers()  # a Ray Data actor runs the backbone on every batch (models/memory.py)
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        settings = spec.backbone
        self.extractor = FeatureExtractor(
            settings.backbone, settings.layers, settings.weights, settings.device, settings.precision
        )
        self.preprocess = PreprocessConfig(settings.image_size, self.extractor.mean, self.extractor.std)
        if spec.mode == "classifier":
            from lineguard.models.classifier import ImageClassifier

            self.classifier = ImageClassifier(
                self.extractor.channels, 2, backbone=settings.backbone, tap=self.extractor.layers[-1],
                tail_weights=settings.weights, **spec.classifier,
            ).to(self.extractor.device).eval()  # fmt: skip
            self.augment = Augment.named(spec.augment)
        else:
            self.scorer = AnomalyScorer.build(spec.head_kind, spec.head_params, spec.scorer_params).to(
                self.extractor.device
            )
            if spec.state is not None:
                self.scorer.load_fitted_state({k: torch.from_numpy(np.array(v)) for k, v in spec.state.items()})
            self.scorer.head.plan(spec.num_images)
        # per-image output shapes, for the placeholder rows of unreadable files
        blank = torch.zeros(max(1, spec.views), 3, settings.image_size, settings.image_size)
        self._template = {k: np.zeros_like(v[:1]) for k, v in self._process(blank).items()}

    def decode(self, paths: Sequence[str]) -> tuple[torch.Tensor | None, list[str]]:
        tensors, errors = [], []
        for path in paths:
            if self.spec.views > 1:
                views, error = self._views(path)
                tensors += views
            else:
                tensor, error = read_image(Path(path), self.preprocess)
                tensors += [tensor] if tensor is not None else []
            errors.append(error)
        return (torch.stack(tensors) if tensors else None), errors

    def _views(self, path: str) -> tuple[list[torch.Tensor], str]:
        """The clean view of the image, then ``views - 1`` augmented ones (seeded by path and seed)."""
        try:
            image = open_image(Path(path).read_bytes(), self.preprocess.max_pixels)
        except (DataError, OSError) as err:
            log.warning("skipping unreadable image %s: %s", path, err)
            return [], f"{path}: {err}"
        rng = view_rng(path, self.spec.seed)
        images = [image] + [self.augment.view(image, rng) for _ in range(self.spec.views - 1)]
        return [to_tensor(view, self.preprocess) for view in images], ""

    @torch.inference_mode()
    def _process(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        features = self.extractor.extract(images)
        if self.spec.mode == "features":
            return {f"layer{i}": f.cpu().numpy() for i, f in enumerate(features)}
        if self.spec.mode == "summarize":
            return {k: v.cpu().numpy() for k, v in self.scorer.head.summarize(features).items()}
        if self.spec.mode == "classifier":  # one row per image: (n, views, ...)
            pooled, deep = self.classifier.frozen_inputs(features)
            n = len(images) // max(1, self.spec.views)
            out = {"pooled": pooled.float().cpu().numpy().reshape(n, -1, pooled.shape[1])}
            if deep is not None:
                out["deep"] = deep.half().cpu().numpy().reshape(n, -1, *deep.shape[1:])
            return out
        maps, direct = self.scorer.anomaly_maps(features)
        out = {"map": maps.float().cpu().numpy()}
        out["direct"] = (direct if direct is not None else torch.full((maps.shape[0],), np.nan)).cpu().numpy()
        return out

    def process(self, paths: Sequence[str], images: torch.Tensor | None, errors: list[str]) -> dict[str, np.ndarray]:
        results = self._process(images) if images is not None else {}
        columns: dict[str, list[np.ndarray]] = {k: [] for k in self._template}
        ok = 0
        for error in errors:
            for key, rows in columns.items():
                rows.append(self._template[key][0] if error else results[key][ok])
            ok += int(not error)
        out = {k: np.stack(v) for k, v in columns.items()}
        out["path"] = np.asarray(paths, dtype=object)
        out["error"] = np.asarray(errors, dtype=object)
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        images, errors = self.decode(paths)
        return self.process(paths, images, errors)


def run_local(
    spec: WorkerSpec, paths: Sequence[Path], batch_size: int = 16, progress: str = ""
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of worker output, in order, computed in this process."""
    from tqdm import tqdm

    worker = BatchWorker(spec)
    chunks = [[str(p) for p in paths[i : i + batch_size]] for i in range(0, len(paths), batch_size)]
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        tqdm(total=len(paths), desc=progress, unit="img", disable=not progress) as bar,
    ):
        pending = pool.submit(worker.decode, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            assert pending is not None
            images, errors = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(worker.decode, chunks[index + 1])
            yield worker.process(chunk, images, errors)
            bar.update(len(chunk))


def run_ray(
    spec: WorkerSpec, paths: Sequence[Path], workers: int, batch_size: int = 16
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of worker output from a Ray Data actor pool (order not guaranteed; rows carry ``path``)."""
    import ray

    ensure_ray()
    free = ray.available_resources()  # what other work (a running Serve app, say) leaves
    gpus = float(free.get("GPU", 0))
    per_actor_gpu = 1.0 if gpus >= workers else (gpus / workers if gpus else 0.0)
    cpus = float(free.get("CPU", os.cpu_count() or 1))
    per_actor_cpu = max(0.25, min(4.0, cpus / workers))
    backbone = replace(spec.backbone, device="auto" if per_actor_gpu else "cpu")
    spec = replace(spec, threads=max(1, round(per_actor_cpu)), backbone=backbone)
    items = [{"path": str(p)} for p in paths]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size + 1, workers * 8)))
    mapped = dataset.map_batches(
        BatchWorker,
        fn_constructor_kwargs={"spec": spec},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=per_actor_cpu,
        num_gpus=per_actor_gpu,
    )
    yield from mapped.iter_batches(batch_size=None, batch_format="numpy")


def run(
    spec: WorkerSpec, paths: Sequence[Path], workers: int, batch_size: int = 16, progress: str = ""
) -> Iterator[dict[str, np.ndarray]]:
    """``workers == 0``: this process; otherwise a Ray Data pool of that many actors."""
    if not paths:
        return iter(())
    if workers <= 0:
        return run_local(spec, paths, batch_size, progress)
    return run_ray(spec, paths, workers, batch_size)


def split_errors(batch: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Good rows of a worker batch, their paths, and the error messages of the bad rows."""
    errors = [str(e) for e in batch["error"]]
    keep = np.array([not e for e in errors], dtype=bool)
    rows = {k: v[keep] for k, v in batch.items() if k not in ("path", "error")}
    paths = [str(p) for p, k in zip(batch["path"], keep, strict=True) if k]
    return rows, paths, [e for e in errors if e]
