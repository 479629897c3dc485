"""POT thresholds from few normal scores: close to the true quantile, better than the largest score, and
finite, bounded and deterministic on every input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from lineguard.errors import ConfigError, DataError
from lineguard.models.tail import MIN_SCORES, SHAPE_RANGE, TailFit, pot_threshold

Draw = Callable[[np.random.Generator, int], np.ndarray]

# (sample, its true 0.99 quantile)
DISTRIBUTIONS: dict[str, tuple[Draw, float]] = {
    "exponential": (lambda rng, n: rng.exponential(1.0, n), float(stats.expon.ppf(0.99))),
    "normal": (lambda rng, n: rng.normal(0.0, 1.0, n), float(stats.norm.ppf(0.99))),
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 1.0, n), float(stats.lognorm.ppf(0.99, 1.0))),
}


def _errors(name: str, n: int, seeds: int = 20) -> tuple[float, float]:
    """Mean relative error of the POT threshold and of the largest score, for the 0.99 quantile."""
    draw, true = DISTRIBUTIONS[name]
    pot, largest = [], []
    for seed in range(seeds):
        scores = draw(np.random.default_rng(seed), n)
        pot.append(abs(pot_threshold(scores, 0.01).value - true) / true)
        largest.append(abs(scores.max() - true) / true)
    return float(np.mean(pot)), float(np.mean(largest))


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_close_to_the_true_quantile_from_200_scores(name: str) -> None:
    pot, largest = _errors(name, 200)
    assert pot < 0.25
    assert pot < 0.6 * largest


@pytest.mark.parametrize(("name", "margin"), [("exponential", 0.8), ("lognormal", 0.8), ("normal", 1.0)])
def test_closer_than_the_largest_score_from_75(name: str, margin: float) -> None:
    """The largest of 75 scores targets a rate of about 1/76, not 0.01; on the light normal tail it is
    nearly as good, on the others POT is clearly closer."""
    pot, largest = _errors(name, 75)
    assert pot < margin * largest


def test_the_formula_and_the_fields() -> None:
    scores = np.random.default_rng(4).exponential(2.0, 200)
    fit = pot_threshold(scores, 0.005, initial_quantile=0.9)
    peaks = scores[scores > fit.initial] - fit.initial
    assert fit.initial == pytest.approx(np.quantile(scores, 0.9))
    assert fit.n_peaks == peaks.size == 20
    assert fit.method == "pot_exponential" and fit.shape == 0.0
    assert fit.scale == pytest.approx(peaks.mean())
    assert fit.value == pytest.approx(fit.initial - fit.scale * np.log(0.005 * 200 / 20))
    assert fit.details["n_scores"] == 200 and fit.details["rate"] == 0.005


def test_the_gpd_is_the_maximum_likelihood_fit_when_it_fits_better() -> None:
    """A heavy (Pareto, shape 1/3) tail: the GPD, agreeing with SciPy's MLE and with the quantile formula."""
    rng = np.random.default_rng(5)
    scores = rng.pareto(3.0, 3000) + 1
    fit = pot_threshold(scores, 0.001)
    assert fit.method == "pot_gpd" and not fit.details["shape_clipped"]
    peaks = scores[scores > fit.initial] - fit.initial
    shape, _, scale = stats.genpareto.fit(peaks, floc=0)
    assert fit.shape == pytest.approx(shape, abs=2e-3) and fit.scale == pytest.approx(scale, rel=2e-3)
    assert abs(fit.shape - 1 / 3) < 0.15
    ratio = 0.001 * scores.size / fit.n_peaks
    assert fit.value == pytest.approx(fit.initial + fit.scale / fit.shape * (ratio**-fit.shape - 1))
    true = float(stats.pareto.ppf(0.999, 3.0))
    assert abs(fit.value - true) / true < 0.3


def test_the_shape_is_kept_in_its_range_and_says_so() -> None:
    heavy = np.random.default_rng(6).pareto(1.2, 3000) + 1  # shape about 0.83
    fit = pot_threshold(heavy, 0.001)
    assert fit.method == "pot_gpd" and fit.shape == pytest.approx(SHAPE_RANGE[1], abs=1e-4)
    assert fit.details["shape_clipped"] and "bound" in fit.details["reason"]
    assert np.isfinite(fit.value)


def test_a_bounded_tail_stays_below_its_endpoint() -> None:
    scores = np.random.default_rng(7).uniform(0, 1, 2000)  # GPD shape -1, kept at -0.5
    fit = pot_threshold(scores, 1e-9)
    assert fit.method == "pot_gpd" and fit.shape < 0
    endpoint = fit.initial - fit.scale / fit.shape
    assert fit.details["endpoint"] == pytest.approx(endpoint)
    assert scores.max() <= fit.value <= endpoint < 1.2


def test_monotone_in_the_rate() -> None:
    rates = [0.09, 0.05, 0.02, 0.01, 0.005, 0.001, 1e-4, 1e-6]
    samples = [
        np.random.default_rng(8).exponential(1.0, 60),
        np.random.default_rng(9).pareto(2.0, 500) + 1,
        np.random.default_rng(10).uniform(0, 1, 500),
        np.arange(12.0),
    ]
    for scores in samples:
        values = [pot_threshold(scores, rate).value for rate in rates]
        assert values == sorted(values)


def test_finite_and_at_least_the_initial_threshold_on_any_input() -> None:
    rng = np.random.default_rng(11)
    for _ in range(60):
        n = int(rng.integers(10, 80))
        kind = rng.integers(0, 4)
        if kind == 0:
            scores = rng.integers(0, 4, n).astype(float)  # many ties
        elif kind == 1:
            scores = rng.standard_cauchy(n) * 1e6
        elif kind == 2:
            scores = rng.normal(0, 1e-9, n) + 5.0
        else:
            scores = np.r_[np.zeros(n - 1), 1.0]
        fit = pot_threshold(scores, float(10 ** rng.uniform(-6, -1.01)))
        assert np.isfinite(fit.value) and fit.value >= fit.initial
        assert SHAPE_RANGE[0] <= fit.shape <= SHAPE_RANGE[1] and fit.method in ("pot_gpd", "pot_exponential")


def test_degenerate_inputs() -> None:
    flat = pot_threshold(np.full(50, 3.0), 0.01)
    assert flat.n_peaks == 0 and flat.initial == 3.0 and 3.0 < flat.value < 3.01
    assert flat.method == "pot_exponential" and "no score above" in flat.details["reason"]
    ten = pot_threshold(np.linspace(1.0, 2.0, MIN_SCORES), 0.01)
    assert ten.method == "pot_exponential" and ten.n_peaks == 1 and "fewer than the 5" in ten.details["reason"]
    assert ten.value > 2.0
    with pytest.raises(DataError, match="at least 10 scores, got 9"):
        pot_threshold(np.linspace(1.0, 2.0, 9), 0.01)
    with pytest.raises(DataError, match="NaN or infinity"):
        pot_threshold(np.r_[np.ones(20), np.inf], 0.01)


def test_bad_settings_are_refused() -> None:
    scores = np.random.default_rng(12).exponential(1.0, 100)
    with pytest.raises(ConfigError, match="initial_quantile"):
        pot_threshold(scores, 0.01, initial_quantile=1.0)
    with pytest.raises(ConfigError, match=r"rate must be in \(0, 1 - initial_quantile\) = \(0, 0.1\)"):
        pot_threshold(scores, 0.1)
    with pytest.raises(ConfigError, match="rate must be in"):
        pot_threshold(scores, 0.0)


def test_deterministic() -> None:
    scores = np.random.default_rng(13).lognormal(0, 0.7, 300)
    first: TailFit = pot_threshold(scores, 0.002)
    assert pot_threshold(scores.copy(), 0.002) == first
    assert pot_threshold(list(scores), 0.002) == first
