"""anomalib 2.7's own PaDiM and PatchCore torch models, fed exactly what LineGuard is fed.

Same preprocessed tensors (square resize, the backbone's normalisation), same ImageNet weights (the
offline EfficientNet-Lite weights loaded into anomalib's timm extractor), same metric code. anomalib's
data modules are not used: its MVTec reader looks only for .png (magnetic_tile is JPEG) and its Folder
module pairs masks by sorted position. Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from benchmarks.timing import summary, time_call
from lineguard.models.metrics import pixel_roc_auc, roc_auc
from lineguard.models.weights import resolve


def available() -> bool:
    try:
        import anomalib  # noqa: F401
    except ImportError:
        return False
    return True


def _load_weights(model: Any, backbone: str) -> None:
    source = resolve(backbone, "auto")
    if source.file is None:
        raise RuntimeError(f"no offline weights for {backbone}; the anomalib comparison needs them")
    state = load_file(str(source.file))
    extractor = model.feature_extractor.feature_extractor
    missing, _ = extractor.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"anomalib extractor weights incomplete: missing {missing[:5]}")


def run(
    head: str,
    train: torch.Tensor,
    test: torch.Tensor,
    labels: np.ndarray,
    masks: list[np.ndarray | None],
    backbone: str,
    layers: list[str],
    coreset_ratio: float = 0.01,
    timing_images: int = 30,
) -> dict[str, Any]:
    """Fit on ``train`` ``(N, 3, S, S)``, score ``test``; returns figures comparable with LineGuard's."""
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model: Any
    if head == "padim":
        model = PadimModel(backbone=backbone, layers=layers, pre_trained=False, n_features=100)
    else:
        model = PatchcoreModel(layers=layers, backbone=backbone, pre_trained=False)
    _load_weights(model, backbone)
    start = time.perf_counter()
    model.train()
    with torch.no_grad():
        for i in range(0, len(train), 16):
            model(train[i : i + 16])
    coreset_start = time.perf_counter()
    if head == "padim":
        model.fit()
    else:
        model.subsample_embedding(coreset_ratio)
    fit_s = time.perf_counter() - start
    coreset_s = time.perf_counter() - coreset_start
    model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for i in range(0, len(test), 16):
            out = model(test[i : i + 16])
            scores.append(out.pred_score.flatten())
            maps.append(out.anomaly_map[:, 0])
    all_scores = torch.cat(scores).numpy()
    all_maps = torch.cat(maps).numpy()
    with_masks = [i for i, m in enumerate(masks) if m is not None]
    pixel = (
        pixel_roc_auc([m for m in masks if m is not None], [all_maps[i] for i in with_masks])
        if with_masks
        else float("nan")
    )
    n = min(timing_images, len(test))
    with torch.no_grad():
        model(test[:1])
        batch1 = [time_call(partial(model, test[i : i + 1])) for i in range(n)]
        batch16 = [time_call(lambda: model(test[:16])) / 16 for _ in range(max(2, n // 16))]
    return {
        "head": f"anomalib {head}"
        + (f" (coreset {coreset_ratio:g}, {len(train)} train)" if head == "patchcore" else ""),
        "fit_s": round(fit_s, 2),
        "coreset_s": round(coreset_s, 2) if head == "patchcore" else None,
        "image_auroc": roc_auc(labels, all_scores),
        "pixel_auroc": pixel,
        "batch1_ms": summary(batch1),
        "batch16_ms_per_image": summary(batch16),
    }
