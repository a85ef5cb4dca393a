"""Outlier treatment as COINr does by default (``qTreat``): winsorise, then log-transform if need be.

An indicator is treated when its absolute skew exceeds 2 *and* its (excess) kurtosis exceeds 3.5. Then
the most extreme point on the side of the skew takes the value of the next one, up to ``winmax`` points,
until the indicator is back within the limits; if it still is not, COINr's skew-aware log transform
(``log_CT_plus``: log(x − min + a), or −log(max + a − x) for a negative skew, a = 1% of the range)
replaces winsorising. Skew and kurtosis are scipy's (biased, Fisher); the tests check them against
``scipy.stats``. Vectorised over a leading replication axis: values are (..., U, I) and every column
(indicator within a replication) is treated on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safetyml.index.config import OutlierSpec


@dataclass
class Treatment:
    values: np.ndarray
    winsorised: np.ndarray  # (..., I) points winsorised per column
    logged: np.ndarray  # (..., I) bool: log-transformed instead


def skew_kurtosis(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skewness and excess kurtosis along the unit axis (-2), ignoring NaN (scipy's biased estimators)."""
    mean_of = np.nanmean if np.isnan(x).any() else np.mean
    d = x - mean_of(x, axis=-2, keepdims=True)
    d2 = d * d  # products, not powers: np.power is several times slower on big arrays
    m2 = mean_of(d2, axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = mean_of(d2 * d, axis=-2) / (m2 * np.sqrt(m2))
        kurt = mean_of(d2 * d2, axis=-2) / (m2 * m2) - 3.0
    return np.nan_to_num(skew), np.nan_to_num(kurt)


def _flagged(x: np.ndarray, spec: OutlierSpec) -> tuple[np.ndarray, np.ndarray]:
    skew, kurt = skew_kurtosis(x)
    return (np.abs(skew) > spec.skew) & (kurt > spec.kurtosis), skew


def treat(x: np.ndarray, spec: OutlierSpec) -> Treatment:
    """Treat every column of ``x`` (..., U, I) by COINr's default rule; NaN stay NaN."""
    lead = x.shape[:-2] + x.shape[-1:]
    none = Treatment(x, np.zeros(lead, dtype=int), np.zeros(lead, dtype=bool))
    if spec.method == "none" or x.shape[-2] < 3:
        return none
    ordered = np.sort(np.where(np.isnan(x), np.inf, x), axis=-2)  # NaN last
    valid = np.sum(~np.isnan(x), axis=-2)
    lo = np.zeros(lead, dtype=int)  # index of the lowest kept value
    hi = valid - 1  # index of the highest kept value
    count = np.zeros(lead, dtype=int)
    out = x
    flagged, skew = _flagged(out, spec)
    for _ in range(spec.winmax):
        if not flagged.any():
            break
        step = flagged & (hi - lo > 1)
        hi = np.where(step & (skew > 0), hi - 1, hi)
        lo = np.where(step & (skew <= 0), lo + 1, lo)
        count += step
        low = np.take_along_axis(ordered, lo[..., None, :], axis=-2)
        high = np.take_along_axis(ordered, np.maximum(hi, 0)[..., None, :], axis=-2)
        out = np.where(np.isnan(x), np.nan, np.clip(x, low, high))
        flagged, skew = _flagged(out, spec)
    logged = np.zeros(lead, dtype=bool)
    if spec.log_fallback and flagged.any():
        logged = flagged
        xmin, xmax = np.nanmin(x, axis=-2, keepdims=True), np.nanmax(x, axis=-2, keepdims=True)
        a = 0.01 * (xmax - xmin)
        pos_skew = skew_kurtosis(x)[0][..., None, :] > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            transformed = np.where(pos_skew, np.log(x - xmin + a), -np.log(xmax + a - x))
        out = np.where(logged[..., None, :], transformed, out)
        count = np.where(logged, 0, count)
    return Treatment(out, count, logged)
