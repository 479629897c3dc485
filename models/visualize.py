"""What people look at: heatmap overlays (:mod:`lineguard_edge.heatmap`, shared with the edge runtime) and
score histograms as PNG (good vs. defective, with the threshold drawn)."""

from __future__ import annotations

import io

import numpy as np

from lineguard_edge.heatmap import colorize, normalise_map, overlay, png_bytes

__all__ = ["binned_histogram", "colorize", "normalise_map", "overlay", "png_bytes", "score_histogram"]


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
