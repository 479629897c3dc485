"""How images become model input (:class:`PreprocessConfig`, recorded in every model card), and the input
statistics of the drift checks. Decoding and resizing are :mod:`lineguard_edge.images`, the one path the
service, fitting and the edge runtime share. Nothing here imports torch (the preprocessing replicas never
do); :mod:`lineguard.models.tensors` turns the decoded images into the backbone's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lineguard_edge.images import (
    ALLOWED_FORMATS,
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    BadImageError,
    ImageTooLargeError,
    open_image,
    resize,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "BadImageError",
    "ImageTooLargeError",
    "PreprocessConfig",
    "open_image",
    "resize",
]


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become model input. Recorded in every model card."""

    image_size: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    max_pixels: int = DEFAULT_MAX_PIXELS


def image_intensity(images: np.ndarray) -> np.ndarray:
    """Mean pixel value in [0, 1] of each ``uint8 (N, 3, H, W)`` image (or ``(N, H, W, 3)``): ``(N,)``.
    The cheap input statistic that drift checks compare with the fitting images'."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (N, 3, H, W), got shape {images.shape}")
    means: np.ndarray = images.reshape(len(images), -1).mean(1, dtype=np.float64) / 255.0
    return means.astype(np.float32)


def file_intensities(paths: list[Path], size: int, limit: int = 256) -> np.ndarray:
    """:func:`image_intensity` of up to ``limit`` image files (evenly spread), resized as served; unreadable
    files are skipped (the fit reports them elsewhere)."""
    step = max(1, len(paths) // limit)
    values = []
    for path in paths[::step][:limit]:
        try:
            image = resize(open_image(Path(path).read_bytes()), size)
        except (OSError, ValueError):
            continue
        values.append(float(np.asarray(image, dtype=np.uint8).mean()) / 255.0)
    return np.asarray(values, dtype=np.float32)
