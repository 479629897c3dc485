"""PCA process monitoring: Hotelling's T^2 and the squared prediction error Q, on lagged readings (dynamic
PCA) and smoothed over a short window. The process engineer's reference monitor, cheap and explainable.

Normal operation moves in a few directions: the principal components of the standardised readings
(Jackson and Mudholkar 1979; MacGregor and Kourti 1995). A reading is judged two ways:

- ``T^2 = sum_j t_j^2 / lambda_j``: how far it lies inside the normal subspace, in units of each
  component's normal variance (a load far beyond its usual range);
- ``Q = ||z - P P^T z||^2``: how far it lies off that subspace (a relation between channels broken).

Dynamic PCA (Ku, Storer and Georgakis, Chemometrics Intell. Lab. Syst. 30, 1995) augments each reading
with its ``lags`` predecessors, so autocorrelation and cross-correlation in time become part of the
normal subspace. The score is ``T^2 / E[T^2] + Q / E[Q]`` (each term about 1 on normal data), and
``smooth`` > 1 averages it over that many readings: a persistent small shift then stands out of the
reading-to-reading noise, as an EWMA or CUSUM chart does (Montgomery, "Statistical Quality Control").

Each channel's share of the score: its part of Q (its squared residuals over its lags) plus its part of
T^2 (``z_i (P Lambda^-1 P^T z)_i``, negative parts set to 0), so an answer names the channels that carry
the anomaly. NumPy, float64; the fitted state is a few arrays (safetensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lineguard.errors import ConfigError, CorruptModelError, DataError
from lineguard.models.series import WindowErrors, fold_lags, lagged, moving_mean


class PCAMonitor:
    """Args:
    basis: ``(d, a)`` the retained components of the lagged, restandardised readings (``d = n (lags+1)``).
    variances: ``(a,)`` their normal variances (eigenvalues).
    center, scale: ``(d,)`` the lagged vectors' mean and spread on the fitting data.
    means: ``(E[T^2], E[Q])``, the statistics' means on the fitting data (the score's units).
    n_features: channels per reading.
    lags: readings of history in each vector (0 = static PCA).
    smooth: readings the score is averaged over.
    """

    def __init__(
        self,
        basis: np.ndarray,
        variances: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        means: tuple[float, float],
        n_features: int,
        lags: int = 0,
        smooth: int = 1,
    ) -> None:
        self.basis = np.asarray(basis, dtype=np.float64)
        self.variances = np.asarray(variances, dtype=np.float64)
        self.center = np.asarray(center, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        d = n_features * (lags + 1)
        if (
            self.basis.ndim != 2
            or self.basis.shape[0] != d
            or self.variances.shape != (self.basis.shape[1],)
            or self.center.shape != (d,)
            or self.scale.shape != (d,)
        ):
            raise CorruptModelError(
                f"PCA arrays {self.basis.shape}, {self.variances.shape}, {self.center.shape}, {self.scale.shape} "
                f"do not fit {n_features} channels with {lags} lags: refit the line"
            )
        self.t2_mean, self.q_mean = float(means[0]), float(means[1])
        if not (self.t2_mean > 0 and self.q_mean > 0 and (self.variances > 0).all() and (self.scale > 0).all()):
            raise CorruptModelError("PCA statistics must be positive: the model file is damaged, refit the line")
        self.n_features, self.lags, self.smooth = n_features, lags, smooth
        self._t2_matrix = (self.basis / self.variances) @ self.basis.T  # P Lambda^-1 P^T

    @property
    def window(self) -> int:
        return self.lags + self.smooth

    @classmethod
    def fit(
        cls, z: np.ndarray, lags: int = 0, smooth: int = 1, variance: float = 0.9, components: int | None = None
    ) -> PCAMonitor:
        """Fit on standardised normal readings ``z`` ``(N, n)`` in time order."""
        if lags < 0:
            raise ConfigError(f"lags must be >= 0, got {lags}")
        return cls.fit_lagged(
            lagged(np.asarray(z, dtype=np.float64), lags), z.shape[1], lags, smooth, variance, components
        )

    @classmethod
    def fit_lagged(
        cls, x: np.ndarray, n_features: int, lags: int, smooth: int = 1, variance: float = 0.9,
        components: int | None = None,
    ) -> PCAMonitor:  # fmt: skip
        """Fit on lagged vectors ``x`` ``(M, n (lags + 1))`` (from runs of consecutive readings, none spanning a
        gap). ``components``: default, the fewest that explain ``variance`` of them."""
        if lags < 0 or smooth < 1:
            raise ConfigError(f"lags must be >= 0 and smooth >= 1, got {lags} and {smooth}")
        if not 0 < variance < 1:
            raise ConfigError(f"the explained variance share must be in (0, 1), got {variance}")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != n_features * (lags + 1):
            raise DataError(f"lagged vectors of {n_features * (lags + 1)} values expected, got {x.shape}")
        if len(x) < 20:
            raise DataError(f"{len(x)} lagged readings are too few to fit PCA on: need at least 20")
        center = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        # the lagged vectors are restandardised: their mean and spread differ slightly from the scaler's
        _, singular, vt = np.linalg.svd((x - center) / scale, full_matrices=False)
        eig = singular**2 / (len(x) - 1)
        if components is None:
            share = np.cumsum(eig) / eig.sum()
            components = int(np.searchsorted(share, variance) + 1)
        if not 1 <= components < min(x.shape[1], len(x)):
            raise ConfigError(f"components must be between 1 and {min(x.shape[1], len(x)) - 1}, got {components}")
        monitor = cls(vt[:components].T, eig[:components], center, scale, (1.0, 1.0), n_features, lags, smooth)
        t2, q = monitor.statistics(x)
        monitor.t2_mean, monitor.q_mean = float(t2.mean()), float(max(q.mean(), 1e-12))
        return monitor

    def statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``T^2`` and ``Q`` of lagged vectors ``x`` ``(M, d)``."""
        s = (x - self.center) / self.scale
        t = s @ self.basis
        residual = s - t @ self.basis.T
        return (t**2 / self.variances).sum(axis=1), (residual**2).sum(axis=1)

    def errors(self, z: np.ndarray) -> WindowErrors:
        """Standardised readings ``(N, n)``, ``N >= window`` -> one row per reading from the ``window``-th on."""
        if len(z) < self.window:
            raise DataError(f"{len(z)} readings are too few for this PCA monitor: it needs {self.window}")
        x = lagged(np.asarray(z, dtype=np.float64), self.lags)
        s = (x - self.center) / self.scale
        t = s @ self.basis
        residual = s - t @ self.basis.T
        t2 = (t**2 / self.variances).sum(axis=1)
        # T^2's parts z_i (M z)_i sum to T^2 but may be negative: the positive ones, rescaled to sum to T^2
        t2_parts = np.maximum(s * (s @ self._t2_matrix), 0.0)
        total = t2_parts.sum(axis=1, keepdims=True)
        t2_parts = t2_parts * (t2[:, None] / np.where(total > 0, total, 1.0))
        # each value's part, scaled so that the mean over all d values is T^2/E[T^2] + Q/E[Q]
        parts = (t2_parts / self.t2_mean + residual**2 / self.q_mean) * x.shape[1]
        per_channel = fold_lags(parts, self.n_features)  # the mean over channels is still the score
        rebuilt = (t @ self.basis.T) * self.scale + self.center
        return WindowErrors(moving_mean(per_channel, self.smooth), rebuilt[self.smooth - 1 :, : self.n_features])

    def state(self) -> dict[str, np.ndarray]:
        """The arrays to store, C-contiguous (safetensors writes an array's buffer as it lies in memory: the
        basis is a transposed view of the SVD's output, and stored as is it came back scrambled)."""
        arrays = {
            "pca.basis": self.basis,
            "pca.variances": self.variances,
            "pca.center": self.center,
            "pca.scale": self.scale,
            "pca.means": np.array([self.t2_mean, self.q_mean]),
        }
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    def params(self) -> dict[str, Any]:
        return {"lags": self.lags, "smooth": self.smooth, "components": int(self.basis.shape[1])}

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], n_features: int, params: Mapping[str, Any]) -> PCAMonitor:
        try:
            basis = np.asarray(state["pca.basis"], dtype=np.float64)
            variances = np.asarray(state["pca.variances"], dtype=np.float64)
            center = np.asarray(state["pca.center"], dtype=np.float64)
            scale = np.asarray(state["pca.scale"], dtype=np.float64)
            t2_mean, q_mean = (float(v) for v in np.asarray(state["pca.means"], dtype=np.float64))
            lags, smooth = int(params["lags"]), int(params["smooth"])
        except (KeyError, ValueError, TypeError) as err:
            raise CorruptModelError(f"the PCA monitor's file lacks {err}: refit the line") from err
        return cls(basis, variances, center, scale, (t2_mean, q_mean), n_features, lags, smooth)
