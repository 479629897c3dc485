"""Drift: is a line's recent distribution still the one its model was calibrated on?

Two standard measures, computed on the same pair of samples (the reference: the held-out normal scores
of the version's calibration, or an input statistic of the fitting images; the recent: the line's last
predictions):

- **PSI**, the population stability index (Yurdakul, "Statistical properties of population stability
  index", 2018): ``sum((r - e) * ln(r / e))`` over ten bins cut at the reference's deciles, so each bin
  holds a tenth of the reference. Credit-risk practice reads < 0.1 as stable, 0.1-0.25 as a moderate
  shift and >= 0.25 as a major one; those are the defaults here.
- **Kolmogorov-Smirnov**, the two-sample test (largest gap between the empirical CDFs, with its p-value).
  With thousands of samples it flags shifts too small to matter, so it raises a warning on its own but
  a drift only together with the PSI.

Plain numpy/scipy: no database, no serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from lineguard.errors import ConfigError, DataError


@dataclass(frozen=True)
class DriftRules:
    """When a shift is reported: PSI levels, the KS significance, and the smallest samples that count."""

    psi_warning: float = 0.1
    psi_drift: float = 0.25
    ks_alpha: float = 0.01
    min_recent: int = 50
    min_reference: int = 20
    bins: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.psi_warning < self.psi_drift:
            raise ConfigError(f"need 0 < psi_warning < psi_drift, got {self.psi_warning} and {self.psi_drift}")
        if not 0 < self.ks_alpha < 1:
            raise ConfigError(f"ks_alpha must be in (0, 1), got {self.ks_alpha}")
        if self.bins < 2 or self.min_recent < 2 or self.min_reference < 2:
            raise ConfigError("bins, min_recent and min_reference must each be at least 2")


@dataclass(frozen=True)
class DriftResult:
    status: str
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    n_reference: int
    n_recent: int
    reference_mean: float | None
    recent_mean: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def psi(reference: np.ndarray, recent: np.ndarray, bins: int = 10, floor: float = 1e-4) -> float:
    """Population stability index of ``recent`` against ``reference`` (1-D samples), bins at the reference's
    quantiles (ties merged). Empty bins count as ``floor`` so one empty bin cannot make it infinite."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    new = np.asarray(recent, dtype=np.float64).ravel()
    if ref.size == 0 or new.size == 0:
        raise DataError("PSI needs a non-empty reference and a non-empty recent sample")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=inner.size + 1) / ref.size
    actual = np.bincount(np.searchsorted(inner, new, side="right"), minlength=inner.size + 1) / new.size
    expected = np.maximum(expected, floor)
    actual = np.maximum(actual, floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def assess(reference: np.ndarray, recent: np.ndarray, rules: DriftRules | None = None) -> DriftResult:
    """Compare two 1-D samples: ok / warning / drift with the numbers, or insufficient_data."""
    rules = rules or DriftRules()
    ref = np.asarray(reference, dtype=np.float64).ravel()
    new = np.asarray(recent, dtype=np.float64).ravel()
    ref, new = ref[np.isfinite(ref)], new[np.isfinite(new)]
    means = (float(ref.mean()) if ref.size else None, float(new.mean()) if new.size else None)
    if ref.size < rules.min_reference or new.size < rules.min_recent:
        reason = (
            f"{new.size} recent values against {ref.size} reference values; need at least {rules.min_recent} "
            f"recent and {rules.min_reference} reference"
        )
        return DriftResult("insufficient_data", None, None, None, int(ref.size), int(new.size), *means, reason)
    index = psi(ref, new, rules.bins)
    ks = stats.ks_2samp(ref, new)
    statistic, pvalue = float(ks.statistic), float(ks.pvalue)
    significant = pvalue < rules.ks_alpha
    if index >= rules.psi_drift and significant:
        status, reason = "drift", f"PSI {index:.3f} >= {rules.psi_drift} and KS p = {pvalue:.2g} < {rules.ks_alpha}"
    elif index >= rules.psi_warning or significant:
        parts = []
        if index >= rules.psi_warning:
            parts.append(f"PSI {index:.3f} >= {rules.psi_warning}")
        if significant:
            parts.append(f"KS p = {pvalue:.2g} < {rules.ks_alpha}")
        status, reason = "warning", " and ".join(parts)
    else:
        status, reason = "ok", f"PSI {index:.3f} < {rules.psi_warning} and KS p = {pvalue:.2g}"
    return DriftResult(status, index, statistic, pvalue, int(ref.size), int(new.size), *means, reason)


def worst(statuses: list[str]) -> str:
    """The most serious of several statuses (insufficient data ranks below ok: it proves nothing)."""
    order = {"insufficient_data": 0, "ok": 1, "warning": 2, "drift": 3}
    return max(statuses, key=order.__getitem__) if statuses else "insufficient_data"
