"""PCA monitoring: the score is T^2 / E[T^2] + Q / E[Q] of lagged readings averaged over the window, it names
the channel that breaks the normal relations, and it survives the store's round trip (safetensors)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load, save

from lineguard.errors import ConfigError, CorruptModelError, DataError
from lineguard.models.pca_monitor import PCAMonitor
from lineguard.models.series import lagged, moving_mean


def correlated(rows: int, seed: int) -> np.ndarray:
    """Eight channels driven by two hidden processes, standardised."""
    rng = np.random.default_rng(seed)
    hidden = np.cumsum(rng.normal(size=(rows, 2)), axis=0) * 0.1 + rng.normal(size=(rows, 2))
    mix = np.random.default_rng(99).normal(size=(2, 8))
    x = hidden @ mix + 0.1 * rng.normal(size=(rows, 8))
    out: np.ndarray = (x - x.mean(0)) / x.std(0)
    return out


def test_the_score_is_t2_plus_q_in_their_normal_units_smoothed() -> None:
    z = correlated(600, 0)
    monitor = PCAMonitor.fit(z[:400], lags=2, smooth=5)
    assert monitor.window == 7 and 1 <= monitor.basis.shape[1] < 24
    out = monitor.errors(z[400:])
    t2, q = monitor.statistics(lagged(z[400:], 2))
    want = moving_mean(t2 / monitor.t2_mean + q / monitor.q_mean, 5)
    np.testing.assert_allclose(out.errors.mean(axis=1), want, rtol=1e-10)
    assert out.errors.shape == (200 - 6, 8) and (out.errors >= 0).all()
    fitted = monitor.errors(z[:400]).errors.mean(axis=1)
    assert fitted.mean() == pytest.approx(2.0, rel=0.05)  # each term is 1 on the fitting data


def test_a_broken_relation_is_flagged_and_named() -> None:
    z = correlated(600, 1)
    monitor = PCAMonitor.fit(z[:400], lags=1, smooth=3)
    faulty = z[400:].copy()
    faulty[100:, 5] += 3.0  # channel 5 leaves the others
    scores = monitor.errors(faulty).errors
    normal, broken = scores[:90].mean(axis=1), scores[110:].mean(axis=1)
    assert np.median(broken) > 3 * np.median(normal) and broken.min() > np.median(normal)
    assert (scores[110:].argmax(axis=1) == 5).mean() > 0.9


def test_the_state_round_trips_and_bad_input_is_refused() -> None:
    z = correlated(300, 2)
    monitor = PCAMonitor.fit(z, lags=2, smooth=2)
    restored = PCAMonitor.from_state(load(save(monitor.state())), 8, monitor.params())
    np.testing.assert_allclose(restored.errors(z[:50]).errors, monitor.errors(z[:50]).errors, rtol=1e-12)
    with pytest.raises(DataError, match="too few for this PCA monitor: it needs 4"):
        monitor.errors(z[:3])
    with pytest.raises(ConfigError, match="explained variance"):
        PCAMonitor.fit(z, variance=1.0)
    with pytest.raises(CorruptModelError, match="refit the line"):
        PCAMonitor.from_state({"pca.basis": np.zeros((3, 1))}, 8, monitor.params())
