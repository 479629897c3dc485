"""Calibrated confidence: softmax with a temperature, its negative log-likelihood, the temperature that
fits held-out logits best, and the calibration error that says how well confidences mean what they say.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one scalar ``T``
fitted on held-out validation logits, ``p = softmax(logits / T)``; it changes no decision, only how sure
the answers say they are. NumPy, float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lineguard.errors import DataError


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """``(N, K)`` logits -> probabilities ``softmax(logits / temperature)`` (float64, rows sum to 1)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    y = np.asarray(labels, dtype=np.int64)
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature ``T`` in [0.05, 20] that minimises :func:`nll` of ``labels``: a golden-section search
    on ``log T`` (the NLL is unimodal in it). With no validation error at all, ``T`` is not allowed below 1
    (see the end)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise DataError(f"need (N, K) logits and N labels, got {logits.shape} and {labels.shape}")

    def objective(log_t: float) -> float:
        return nll(logits, labels, math.exp(log_t))

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = objective(a), objective(b)
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = objective(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = objective(b)
    fitted = math.exp((low + high) / 2)
    if bool((logits.argmax(axis=1) == labels).all()):
        # every validation image is right: the likelihood keeps rising as T -> 0, which is no evidence
        # that the model is underconfident; sharpening is only allowed where errors balance it
        return float(max(fitted, 1.0))
    return float(fitted)


def expected_calibration_error(probabilities: Any, labels: Any, bins: int = 10) -> float | None:
    """ECE: the gap between confidence and accuracy, averaged over ``bins`` equal-width confidence bins
    weighted by their share of the samples (Guo et al. 2017). 0 = perfectly calibrated; None without samples."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).ravel()
    if len(y) == 0:
        return None
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            gap += chosen.mean() * abs(float(correct[chosen].mean()) - float(confidence[chosen].mean()))
    return float(gap)
