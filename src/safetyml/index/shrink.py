"""Empirical-Bayes shrinkage of rates toward their group's rate (Marshall's global estimator).

Small cities and quiet zones are not extreme by chance: each unit's rate is pulled toward the rate of
its group (a city toward its market, a zone toward its city, within the period) by how little it saw.
Marshall (1991): with group rate m, between-unit variance A = max(s² − m / n̄, 0) (s² the exposure-
weighted variance of the rates, n̄ the mean exposure), the shrunk rate is m + A/(A + m/n)·(r − m). It
equals the posterior mean of a Gamma(m²/A, m/A) prior updated with a Poisson count, which is what the
Monte Carlo draws from. Written with NumPy (not ``esda.smoothing.Empirical_Bayes``) because it runs on
(replication × unit × indicator) arrays with groups; the tests check it against esda, which does not
clip A at 0.
"""

from __future__ import annotations

import numpy as np


def _group_sum(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(..., U, I) summed within groups → (..., G, I), as one matrix product (BLAS)."""
    onehot = np.zeros((n_groups, len(groups)))
    onehot[groups, np.arange(len(groups))] = 1.0
    return onehot @ values


def prior(
    num: np.ndarray, den: np.ndarray, groups: np.ndarray, pools: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, its group's rate m and between-unit variance A (arrays shaped like ``num``).

    ``num`` and ``den`` are (..., U, I) counts; NaN/0 denominators (no data) are left out of the group's
    figures, and such units get m (their group's rate): the imputation, reported by the caller.
    With ``pools`` (e.g. the same city in every period), the between-unit spread is estimated once per
    pool as a squared coefficient of variation κ = (Σ n(r − m)² − Σ m) / Σ n m², and A = κ m² in each
    group: months of a quiet city share their evidence instead of each finding A = 0 (a point prior).
    """
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    seen = den > 0
    y = np.where(seen, np.nan_to_num(num), 0.0)
    n = np.where(seen, den, 0.0)
    sum_y, sum_n = _group_sum(y, groups, n_groups), _group_sum(n, groups, n_groups)
    count = _group_sum(seen.astype(float), groups, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = sum_y / sum_n
        rate = np.where(seen, y / np.where(seen, n, 1.0), 0.0)
        m_unit = m[..., groups, :]
        if pools is not None:
            n_pools = int(pools.max()) + 1
            m_seen = np.where(seen, np.nan_to_num(m_unit), 0.0)
            excess = _group_sum(n * (rate - m_seen) ** 2 - m_seen, pools, n_pools)
            kappa = np.maximum(excess / _group_sum(n * m_seen**2, pools, n_pools), 0.0)
            return m_unit, np.nan_to_num(kappa[..., pools, :] * m_unit**2)
        s2 = _group_sum(n * (rate - m_unit) ** 2, groups, n_groups) / sum_n
        a = np.maximum(s2 - m / (sum_n / count), 0.0)
    return m_unit, np.nan_to_num(a)[..., groups, :]


def shrink(
    num: np.ndarray, den: np.ndarray, groups: np.ndarray, pools: np.ndarray | None = None
) -> np.ndarray:
    """The shrunk rate of every unit (per unit of ``den``): its posterior mean under the group's prior."""
    m, a = prior(num, den, groups, pools)
    seen = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(seen, a / (a + m / np.where(seen, den, 1.0)), 0.0)
        rate = np.where(seen, np.nan_to_num(num) / np.where(seen, den, 1.0), 0.0)
    return np.where(np.isfinite(m), m + np.nan_to_num(weight) * (rate - m), np.nan)


def _gamma_parameters(m: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape α = m²/A and rate β = m/A of the Gamma prior (∞ where A = 0: a point mass at m)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a > 0, m * m / a, np.inf), np.where(a > 0, m / a, np.inf)


def posterior_draws(
    num: np.ndarray,
    den: np.ndarray,
    groups: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    pools: np.ndarray | None = None,
    hyper: bool = True,
) -> np.ndarray:
    """``draws`` rates per unit from the Gamma-Poisson posterior: (draws, U, I).

    With ``hyper`` (the default) each draw first redraws the prior itself, as Laird & Louis's (1987)
    parametric bootstrap for empirical-Bayes intervals: counts y* are simulated from the fitted model
    (λ* ~ Gamma(m, A), y* ~ Poisson(n·λ*)), the group rate m* and the spread A* are estimated again from
    y*, and the unit's rate is drawn from Gamma(α* + y, β* + n) with its *observed* count y. Why: the
    plain EB posterior treats m and A as known, but a city's rate is itself estimated from a few
    hundred incidents and A from a few dozen zones; on the small preset the zone incident rate's 90%
    posterior held the true rate for 76–84% of zone-months with m and A fixed, 84–89% with them redrawn.
    Without ``hyper``: the plug-in posterior. Where the group shows no between-unit variance (A = 0) the
    prior is a point mass and a draw is m (m* with ``hyper``); a unit with no data gets its group's prior.
    """
    m, a = prior(num, den, groups, pools)
    seen = den > 0
    y = np.where(seen, np.nan_to_num(num), 0.0)
    n = np.where(seen, den, 0.0)
    shape = (draws, *m.shape)
    if hyper:
        alpha, beta = _gamma_parameters(m, a)
        spread = np.isfinite(alpha) & (alpha > 0) & np.isfinite(m)
        lam = np.where(
            spread,
            rng.gamma(np.where(spread, alpha, 1.0), 1.0, size=shape) / np.where(spread, beta, 1.0),
            np.nan_to_num(m),
        )
        simulated = np.where(seen, rng.poisson(lam * n).astype("float64"), np.nan)
        m, a = prior(simulated, den, groups, pools)
    else:
        m, a = np.broadcast_to(m, shape), np.broadcast_to(a, shape)
    alpha, beta = _gamma_parameters(m, a)
    ok = np.isfinite(alpha) & (alpha + y > 0) & np.isfinite(m)
    sample = rng.gamma(np.where(ok, alpha + y, 1.0), 1.0, size=shape) / np.where(ok, beta + n, 1.0)
    return np.where(ok, sample, np.where(np.isfinite(m), m, np.nan))
