"""Readings as a time series: lagged vectors, moving means and the padding that starts a series.

A window head scores reading ``t`` from the readings ``t - W + 1 .. t``. Every head here is a function of
exactly those ``W`` readings, so a stream scored one reading at a time (the service keeps its last
``W - 1`` readings) gives the same scores as the whole series scored at once. A series shorter than its
window starts with its first reading standing in for the readings before it (:func:`pad_front`), offline
and in a stream alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lineguard.errors import DataError


@dataclass
class WindowErrors:
    """Per reading that has a full window: ``errors`` ``(M, n)`` per channel, whose mean over channels is
    the score; ``expected`` ``(M, n)`` standardised, what the model expected of the newest reading."""

    errors: np.ndarray
    expected: np.ndarray


def lagged(z: np.ndarray, lags: int) -> np.ndarray:
    """``(N, n)`` -> ``(N - lags, n * (lags + 1))``: row ``i`` is ``[z[i + lags], z[i + lags - 1], ..., z[i]]``
    (the newest reading first), the augmented vector of dynamic PCA (Ku, Storer and Georgakis 1995)."""
    if lags == 0:
        return z
    n_rows = len(z) - lags
    if n_rows < 1:
        raise DataError(f"{len(z)} readings are too few for {lags} lags: need at least {lags + 1}")
    return np.concatenate([z[lags - j : lags - j + n_rows] for j in range(lags + 1)], axis=1)


def fold_lags(errors: np.ndarray, n: int) -> np.ndarray:
    """``(M, n * (lags + 1))`` per lagged value -> ``(M, n)`` per channel, the mean over its lags (so the
    mean over channels stays the mean over every value)."""
    m, width = errors.shape
    if width == n:
        return errors
    out: np.ndarray = errors.reshape(m, width // n, n).mean(axis=1)
    return out


def moving_mean(x: np.ndarray, span: int) -> np.ndarray:
    """``(M, ...)`` -> ``(M - span + 1, ...)``: the mean of each run of ``span`` consecutive rows (float64
    cumulative sums: exact to rounding for the lengths a window has)."""
    if span == 1:
        return x
    if len(x) < span:
        raise DataError(f"{len(x)} rows are too few for a moving mean over {span}")
    c = np.cumsum(np.concatenate([np.zeros((1, *x.shape[1:])), x.astype(np.float64)]), axis=0)
    out: np.ndarray = (c[span:] - c[:-span]) / span
    return out


def pad_front(series: np.ndarray, window: int) -> np.ndarray:
    """``series`` with its first reading repeated in front until it is ``window - 1`` readings longer: the
    start of a series (or of a new stream), where no earlier readings exist."""
    if window <= 1:
        return series
    if len(series) == 0:
        raise DataError("no readings to score")
    return np.concatenate([np.repeat(series[:1], window - 1, axis=0), series])
