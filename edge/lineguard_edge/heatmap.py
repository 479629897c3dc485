"""Heatmap overlays: an anomaly map drawn over the image, normal regions left clear (the same PNG from the
service, from fitting reports and from the edge runtime)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Piecewise-linear "jet": dark blue -> blue -> cyan -> yellow -> red
_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_COLOURS = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], dtype=np.float32
)


def colorize(heat: np.ndarray) -> np.ndarray:
    """``(H, W)`` values in [0, 1] -> ``(H, W, 3)`` uint8 jet colours."""
    h = np.clip(heat, 0.0, 1.0)
    rgb = np.stack([np.interp(h, _STOPS, _COLOURS[:, c]) for c in range(3)], axis=-1)
    return rgb.astype(np.uint8)


def normalise_map(anomaly_map: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map raw anomaly values to [0, 1]: ``low`` (typical normal) -> 0, ``high`` (decisive) -> 1."""
    return np.clip((anomaly_map - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """Blend the colourised ``heat`` (any size, values in [0, 1]) over ``image``, weighted by the heat."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L")
    heat_full = np.asarray(heat_img.resize(image.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    colour = colorize(heat_full).astype(np.float32)
    weight = (alpha * np.sqrt(heat_full))[..., None]
    return Image.fromarray((base * (1 - weight) + colour * weight).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
