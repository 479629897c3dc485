"""What people look at: heatmap overlays (an anomaly map drawn over the image, normal regions left clear)
and score histograms as PNG (good vs. defective, with the threshold drawn)."""

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


def score_histogram(
    scores: np.ndarray, labels: np.ndarray, threshold: float, title: str = "", xlabel: str = "anomaly score"
) -> bytes:
    """PNG bytes of overlaid histograms of good (label 0) and defective (label 1) scores."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).astype(bool)
    low = float(min(scores.min(initial=threshold), threshold))
    high = float(max(scores.max(initial=threshold), threshold))
    edges = np.linspace(low, high + 1e-9, 41)
    counts = {
        "good": np.histogram(scores[~labels], edges)[0].tolist(),
        "defective": np.histogram(scores[labels], edges)[0].tolist(),
    }
    return binned_histogram(edges.tolist(), counts, threshold, title, xlabel)


GROUP_COLOURS = {"good": "#2b8a3e", "defective": "#c92a2a", "unlabelled": "#868e96"}


def binned_histogram(
    edges: list[float], counts: dict[str, list[int]], threshold: float, title: str = "", xlabel: str = "score"
) -> bytes:
    """PNG bytes of histograms already counted in shared ``edges`` (one step outline per group), with the
    threshold. Uses matplotlib's object API, not pyplot, so threads of a server can draw at once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, values in sorted(counts.items(), key=lambda item: item[0] != "unlabelled"):  # unlabelled behind
        if sum(values):
            colour = GROUP_COLOURS.get(name)
            ax.stairs(values, edges, fill=True, alpha=0.45, color=colour, label=f"{name} ({sum(values)})")
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1.5, label=f"threshold {threshold:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("parts")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
