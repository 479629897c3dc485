"""A threshold for a small over-detection rate from few normal scores: peaks over threshold (POT) with a
generalised Pareto tail, as in SPOT (Siffer, Fouque, Termier, Largouet, "Anomaly Detection in Streams with
Extreme Value Theory", KDD 2017).

An empirical quantile cannot target a rate below ``1 / (n + 1)`` from ``n`` scores (the largest score is
the strictest it has, :mod:`lineguard.models.threshold`). Extreme value theory can: by the
Pickands-Balkema-de Haan theorem the excesses ``y = x - t`` of the scores over a high initial threshold
``t`` follow a generalised Pareto distribution (GPD) with shape ``gamma`` and scale ``sigma``, whatever the
scores' distribution, so the tail beyond ``t`` can be extrapolated from the ``N_t`` peaks:

    z_q = t + sigma / gamma * ((q * n / N_t) ** -gamma - 1)     (gamma != 0)
    z_q = t - sigma * log(q * n / N_t)                           (gamma == 0: the exponential tail)

with ``q`` the target rate and ``t`` the empirical ``initial_quantile`` of the scores (SPOT, eq. 1).

What this adds for tens of scores rather than SPOT's thousands:

- The GPD is fitted by maximum likelihood with the shape constrained to ``[-0.5, 0.5]`` (profile likelihood:
  for each shape the scale's likelihood equation has one root; the shape is searched on a grid and refined).
  The bounds keep the likelihood regular (it is unbounded for ``gamma < -1``) and an extrapolation from a
  dozen peaks sane; ``details["shape_clipped"]`` says when a bound binds.
- The shape is the noisiest estimate. The exponential tail (``gamma = 0``, MLE ``sigma`` = the mean
  excess, nested in the GPD) is kept unless the GPD fits significantly better (likelihood-ratio test, 5%),
  and always with fewer than ``MIN_PEAKS`` peaks. Normal, log-normal and exponential scores all have
  ``gamma = 0`` in the limit (the Gumbel domain).
- The threshold is never below ``t`` and, for an upper-bounded tail (``gamma < 0``), never above the fitted
  endpoint ``t - sigma / gamma``.

Plain NumPy and SciPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from lineguard.errors import ConfigError, DataError

__all__ = ["MIN_PEAKS", "MIN_SCORES", "SHAPE_RANGE", "TailFit", "pot_threshold"]

MIN_SCORES = 10  # fewer cannot place an initial quantile with anything above it
MIN_PEAKS = 5  # fewer peaks: the exponential tail (one parameter) only
SHAPE_RANGE = (-0.5, 0.5)
LR_LEVEL = 0.05  # the GPD replaces the exponential tail only when it fits better at this level
_GRID = 21  # shapes tried before refining


@dataclass(frozen=True)
class TailFit:
    """A POT threshold and the tail it came from.

    value: the threshold ``z_q``. initial: the initial threshold ``t`` (the empirical quantile).
    n_peaks: ``N_t``, the scores above ``t``. shape, scale: the tail's ``gamma`` and ``sigma``
    (``shape == 0`` for the exponential tail). method: "pot_gpd" or "pot_exponential".
    """

    value: float
    initial: float
    n_peaks: int
    shape: float
    scale: float
    method: str
    details: dict[str, Any] = field(default_factory=dict)


def pot_threshold(scores: Any, rate: float, initial_quantile: float = 0.90) -> TailFit:
    """The score that about ``rate`` of normal scores would exceed, extrapolated from the peaks of
    ``scores`` over their ``initial_quantile`` (module docstring). Finite, and at least the initial threshold.
    """
    if not 0 < initial_quantile < 1:
        raise ConfigError(f"initial_quantile must be in (0, 1), got {initial_quantile}")
    if not 0 < rate < 1 - initial_quantile:
        raise ConfigError(
            f"rate must be in (0, 1 - initial_quantile) = (0, {1 - initial_quantile:g}), got {rate}: POT "
            "extrapolates beyond the initial quantile; a larger rate is an empirical quantile"
        )
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size < MIN_SCORES:
        raise DataError(f"a POT threshold needs at least {MIN_SCORES} scores, got {x.size}")
    if not np.isfinite(x).all():
        raise DataError("the scores contain NaN or infinity: the model produced invalid scores")
    n = int(x.size)
    t = float(np.quantile(x, initial_quantile))
    excess = x[x > t] - t
    n_peaks = int(excess.size)
    details: dict[str, Any] = {
        "n_scores": n,
        "rate": rate,
        "initial_quantile": initial_quantile,
        "score_max": float(x.max()),
        "shape_range": list(SHAPE_RANGE),
        "shape_clipped": False,
    }
    if n_peaks == 0:  # the top of the scores is one value: put the threshold just above it
        value = t + max(1e-6, abs(t) * 1e-3)
        details["reason"] = "no score above the initial threshold (the largest scores are all equal)"
        return TailFit(value, t, 0, 0.0, 0.0, "pot_exponential", details)

    shape, scale, method = 0.0, float(excess.mean()), "pot_exponential"
    if n_peaks < MIN_PEAKS:
        details["reason"] = f"{n_peaks} peaks, fewer than the {MIN_PEAKS} a two-parameter fit needs"
    else:
        gpd_shape, gpd_scale, gpd_loglik = _fit_gpd(excess)
        lr = max(0.0, 2 * (gpd_loglik - _loglik(0.0, scale, excess)))
        clipped = bool(np.isclose(gpd_shape, SHAPE_RANGE, atol=1e-4).any())
        details.update(gpd_shape=gpd_shape, gpd_scale=gpd_scale, lr_statistic=lr, shape_clipped=clipped)
        if lr > stats.chi2.ppf(1 - LR_LEVEL, df=1):
            shape, scale, method = gpd_shape, gpd_scale, "pot_gpd"
            details["reason"] = "the GPD fits the peaks better than the exponential tail"
            if clipped:
                details["reason"] += f" (its shape at a bound of {list(SHAPE_RANGE)})"
        else:
            details["reason"] = (
                f"the shape is not significantly different from 0 (likelihood ratio {lr:.2f}): exponential tail"
            )
    ratio = rate * n / n_peaks
    value = _quantile(t, shape, scale, ratio)
    if value < t:  # ties at the top leave fewer peaks than the rate needs: the quantile is inside the body
        value, details["clamped"] = t, "to the initial threshold"
    if shape < 0:
        endpoint = t - scale / shape
        details["endpoint"] = endpoint
        value = min(value, endpoint)
    if not math.isfinite(value):
        raise DataError(f"the extrapolated threshold overflows (scores up to {details['score_max']:g})")
    return TailFit(float(value), t, n_peaks, float(shape), float(scale), method, details)


def _quantile(t: float, shape: float, scale: float, ratio: float) -> float:
    """``z_q`` from the initial threshold, the tail and ``ratio = q * n / N_t``."""
    if shape == 0:
        return t - scale * math.log(ratio)
    return t + scale / shape * (math.pow(ratio, -shape) - 1)


def _loglik(shape: float, scale: float, y: np.ndarray) -> float:
    """GPD log-likelihood of the excesses ``y`` (all ``> 0``)."""
    if abs(shape) < 1e-12:
        return float(-y.size * math.log(scale) - y.sum() / scale)
    z = 1 + shape * y / scale
    if (z <= 0).any():
        return -math.inf
    return float(-y.size * math.log(scale) - (1 + 1 / shape) * np.log(z).sum())


def _profile_scale(shape: float, y: np.ndarray) -> float:
    """The scale that maximises the likelihood at ``shape``: the one root of
    ``sum(y / (scale + shape * y)) = N / (1 + shape)``, decreasing in ``scale`` on the support."""
    top = float(y.max())
    low = max(0.0, -shape * top) + 1e-12 * top
    high = 2 * top * (1 + abs(shape))

    def equation(scale: float) -> float:
        return float(np.sum(y / (scale + shape * y)) - y.size / (1 + shape))

    root: float = optimize.brentq(equation, low, high, xtol=1e-12)
    return root


def _fit_gpd(excess: np.ndarray) -> tuple[float, float, float]:
    """Shape, scale and log-likelihood of the GPD fitted to ``excess`` by maximum likelihood, the shape in
    ``SHAPE_RANGE``. Fitted on the excesses over their mean (scale-free), then scaled back."""
    unit = float(excess.mean())
    y = excess / unit

    def neg_profile(shape: float) -> float:
        return -_loglik(shape, _profile_scale(shape, y), y)

    grid = np.linspace(*SHAPE_RANGE, _GRID)
    values = [neg_profile(float(g)) for g in grid]
    best = int(np.argmin(values))
    shape, value = float(grid[best]), values[best]
    bounds = (float(grid[max(best - 1, 0)]), float(grid[min(best + 1, _GRID - 1)]))
    refined = optimize.minimize_scalar(neg_profile, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    if refined.fun < value:
        shape, value = float(refined.x), float(refined.fun)
    scale = _profile_scale(shape, y) * unit
    return shape, scale, float(-value - excess.size * math.log(unit))
