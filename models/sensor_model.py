"""A fitted sensor line, scoring raw readings with NumPy: its head (an AutoEncoder of one reading or of a
window of readings, or a PCA monitor), threshold and names.

Training uses the PyTorch :class:`lineguard.models.autoencoder.SensorAutoEncoder`; scoring does not need torch.
The network is a handful of small matrices, and NumPy runs it faster for one reading (about 40 us
against 170 us through torch's dispatcher) and keeps a serving replica at a fraction of the memory
(importing the CUDA build of torch alone costs about 550 MB resident). The same weights give the same
scores as the torch module to float32 precision (tested).

Input is a ``(B, n)`` array in the sensors' own units; output is columnar (arrays, not one object per
reading), so a batch of thousands of readings costs a few matrix products.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from lineguard.errors import CorruptModelError, FeatureMismatchError
from lineguard.models.pca_monitor import PCAMonitor
from lineguard.models.series import WindowErrors, fold_lags, lagged, pad_front
from lineguard.models.threshold import Threshold
from lineguard_edge.sensor import summarise_errors

Z_CLIP = 1e4  # standard deviations: the network's input range (a reading's error is measured unclipped)
_LINEAR = re.compile(r"^(encoder|decoder)\.(\d+)\.weight$")


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)``, as torch's default; erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.copysign(1.0 - poly * np.exp(-z * z), x)
    out: np.ndarray = 0.5 * x * (1.0 + erf)
    return out


@dataclass
class SensorScores:
    """``scores`` ``(B,)``; ``top_index`` / ``top_share`` ``(B, k)``: the features that contribute most
    to each reading's error and their share of it; ``expected`` ``(B, n)``: the reconstruction."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    normalized: np.ndarray
    top_index: np.ndarray
    top_share: np.ndarray
    expected: np.ndarray
    input_rms: np.ndarray  # (B,) RMS of the standardised reading: the input statistic for drift

    def rows(self, part: slice) -> SensorScores:
        return SensorScores(*(getattr(self, f.name)[part] for f in fields(self)))

    @classmethod
    def concatenate(cls, parts: list[SensorScores]) -> SensorScores:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


class DenseAutoEncoder:
    """The AutoEncoder's layers in NumPy: standardised vectors in, standardised reconstruction out."""

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.layers: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for part in ("encoder", "decoder"):
            indices = sorted(int(m.group(2)) for k in state if (m := _LINEAR.match(k)) and m.group(1) == part)
            if not indices:
                raise CorruptModelError(f"the model file has no {part} layers: it is not a sensor AutoEncoder")
            self.layers.append(
                [
                    (
                        np.ascontiguousarray(np.asarray(state[f"{part}.{i}.weight"], dtype=np.float32).T),
                        np.asarray(state[f"{part}.{i}.bias"], dtype=np.float32),
                    )
                    for i in indices
                ]
            )
        self.width = self.layers[0][0][0].shape[0]
        if self.layers[1][-1][0].shape[1] != self.width:
            raise CorruptModelError(f"the AutoEncoder's output does not match its {self.width} inputs")

    def __call__(self, z: np.ndarray) -> np.ndarray:
        h = z
        for part in self.layers:
            for j, (weight, bias) in enumerate(part):
                h = h @ weight + bias
                if j < len(part) - 1:
                    h = gelu(h)
        return h


HEADS = ("autoencoder", "window-autoencoder", "pca")


class SensorModel:
    """Args:
    state: the head's tensors as arrays (``scaler.mean``, ``scaler.std``, then ``encoder.N.weight``... for
        the AutoEncoders, ``pca.*`` for the PCA monitor).
    threshold: the line's decision threshold, in score units.
    features: the names of the ``n`` values of a reading, in order.
    top_k: how many contributing features each answer names.
    head: ``autoencoder`` (each reading alone), ``window-autoencoder`` (the last ``window`` readings as one
        vector) or ``pca`` (T^2 + Q of lagged readings, smoothed; :mod:`lineguard.models.pca_monitor`).
    params: the head's parameters from the card (``window``; ``lags``, ``smooth``).

    A head scores reading ``t`` from readings ``t - window + 1 .. t`` (``window`` = 1 for the per-reading
    AutoEncoder); :meth:`predict` takes the readings before a batch as ``context``.
    """

    def __init__(
        self,
        state: Mapping[str, np.ndarray],
        threshold: Threshold,
        features: list[str],
        top_k: int = 3,
        head: str = "autoencoder",
        params: Mapping[str, Any] | None = None,
    ):
        self.mean = np.asarray(state["scaler.mean"], dtype=np.float32)
        self.std = np.asarray(state["scaler.std"], dtype=np.float32)
        n = len(features)
        if self.mean.shape != (n,) or self.std.shape != (n,):
            raise CorruptModelError(f"{n} feature names for a scaler of {self.mean.shape} values")
        params = dict(params or {})
        self.head = head
        self.autoencoder: DenseAutoEncoder | None = None
        self.pca: PCAMonitor | None = None
        if head == "pca":
            self.pca = PCAMonitor.from_state(state, n, params)
            self.window = self.pca.window
        elif head in ("autoencoder", "window-autoencoder"):
            self.window = int(params.get("window", 1)) if head == "window-autoencoder" else 1
            self.autoencoder = DenseAutoEncoder(state)
            if self.autoencoder.width != n * self.window:
                raise CorruptModelError(
                    f"{n} feature names for an AutoEncoder of {self.autoencoder.width} inputs (window {self.window})"
                )
        else:
            raise CorruptModelError(f"sensor head {head!r} is not one of {HEADS}: the card is from another release")
        self.threshold = threshold
        self.features = list(features)
        self.top_k = max(1, min(top_k, n))

    @classmethod
    def from_torch(cls, autoencoder: object, threshold: Threshold, features: list[str], top_k: int = 3) -> SensorModel:
        """From a trained :class:`lineguard.models.autoencoder.SensorAutoEncoder` (its ``fitted_state()``)."""
        state = autoencoder.fitted_state()  # type: ignore[attr-defined]
        return cls({k: v.numpy() for k, v in state.items()}, threshold, features, top_k)

    @property
    def n_features(self) -> int:
        return len(self.features)

    def standardise(self, values: np.ndarray) -> np.ndarray:
        """Readings in the sensors' units -> float64 standard deviations from the fitted mean."""
        if values.ndim != 2 or values.shape[1] != self.n_features:
            raise FeatureMismatchError(f"expected readings of shape (B, {self.n_features}), got {values.shape}")
        # float64: a reading far outside the fitted range (3e38, say) overflows float32 to inf, and inf - inf
        # made a NaN score that was answered "normal"
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def window_errors(self, z: np.ndarray) -> WindowErrors:
        """Standardised series ``(N, n)``, ``N >= window`` -> per-channel errors of its last ``N - window + 1``
        readings. The networks run in float32 on readings clipped to +-Z_CLIP standard deviations (no normal
        reading comes near); their error is measured in float64 against the unclipped readings, so it is
        finite and grows with the excursion."""
        if self.pca is not None:
            return self.pca.errors(np.clip(z, -Z_CLIP, Z_CLIP))
        assert self.autoencoder is not None
        x = lagged(z, self.window - 1)
        rebuilt = self.autoencoder(np.clip(x, -Z_CLIP, Z_CLIP).astype(np.float32))
        errors = fold_lags((rebuilt - x) ** 2, self.n_features)
        return WindowErrors(errors, rebuilt[:, : self.n_features])

    def predict(self, values: np.ndarray, context: np.ndarray | None = None) -> SensorScores:
        """Scores of every reading of ``values`` ``(B, n)``. A window head scores each in its window: the
        ``context`` readings come before the first (a stream's earlier readings); a series with fewer than
        ``window - 1`` of them starts with its first reading repeated (:func:`pad_front`)."""
        z = self.standardise(values)
        series = z if context is None or len(context) == 0 else np.concatenate([self.standardise(context), z])
        series = series[-(len(z) + self.window - 1) :]
        if len(series) < len(z) + self.window - 1:
            series = pad_front(series, len(z) + self.window - len(series))
        out = self.window_errors(series)
        summary = summarise_errors(out.errors, self.threshold, self.top_k)
        return SensorScores(
            scores=summary.scores,
            is_anomaly=summary.is_anomaly,
            normalized=summary.normalized,
            top_index=summary.top_index,
            top_share=summary.top_share,
            expected=out.expected * self.std + self.mean,
            input_rms=np.sqrt(np.mean(z**2, axis=1)),
        )
