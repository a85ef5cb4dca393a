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


KAPPA_GRID = np.geomspace(1e-4, 20.0, 80)  # squared coefficients of variation of a group's unit rates


def _kappa_posterior(
    y: np.ndarray, n: np.ndarray, m: np.ndarray, seen: np.ndarray, pools: np.ndarray
) -> np.ndarray:
    """Posterior weights of κ on :data:`KAPPA_GRID` per pool and indicator: (P, I, K).

    Likelihood: each unit's count is negative binomial (Gamma-Poisson) with mean n·m and shape 1/κ;
    prior: flat on κ (Morris 1983: a flat prior on the prior variance gives EB intervals their
    frequentist coverage; a flat prior on log κ piles mass near 0 where the likelihood is flat, and
    over-shrinks)."""
    from scipy.special import gammaln

    n_pools = int(pools.max()) + 1
    mu = np.where(seen & np.isfinite(m), m * n, 0.0)
    usable = seen & (mu > 0)
    loglik = np.zeros((n_pools, y.shape[-1], len(KAPPA_GRID)))
    for j, kappa in enumerate(KAPPA_GRID):
        a = 1.0 / kappa
        with np.errstate(invalid="ignore", divide="ignore"):
            term = gammaln(y + a) - gammaln(a) + a * np.log(a / (a + mu)) + y * np.log(mu / (a + mu))
        loglik[..., j] = _group_sum(np.where(usable, term, 0.0), pools, n_pools)
    logpost = loglik + np.log(KAPPA_GRID)  # flat on κ: grid points are geometric, so weight ∝ κ
    weights = np.exp(logpost - logpost.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


def posterior_draws(
    num: np.ndarray,
    den: np.ndarray,
    groups: np.ndarray,
    draws: int,
    rng: np.random.Generator,
    pools: np.ndarray | None = None,
    hyper: bool = True,
) -> np.ndarray:
    """``draws`` rates per unit from the Gamma-Poisson posterior: (draws, U, I) for (U, I) counts.

    With ``hyper`` (the default) the prior's own parameters are drawn too, as a hierarchical Bayes
    model: the group rate m from Gamma(Σy + ½, Σn) (its posterior under Jeffreys' prior) and the spread
    κ = A/m² from its grid posterior (:func:`_kappa_posterior`, per pool), then the unit's rate from
    Gamma(1/κ + y, 1/(κ·m) + n). Why: the plug-in posterior treats m and A as known, but a city's rate is
    estimated from a few hundred incidents and A from a few dozen zones. On 100 simulated cities of 40
    zones with Gamma-distributed rates the 90% intervals held 82% of the true rates with m and A fixed,
    85% with Laird & Louis's parametric bootstrap of them, 89.4% with this (89.6% knowing the true prior).
    Without ``hyper``: the plug-in posterior (where A = 0 a point mass: every draw is m). A unit with no
    data gets its group's prior.
    """
    m, a = prior(num, den, groups, pools)
    seen = den > 0
    y = np.where(seen, np.nan_to_num(num), 0.0)
    n = np.where(seen, den, 0.0)
    shape = (draws, *m.shape)
    if not hyper:
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha, beta = np.where(a > 0, m * m / a, np.inf), np.where(a > 0, m / a, np.inf)
        ok = np.isfinite(alpha) & (alpha + y > 0) & np.isfinite(m)
        sample = rng.gamma(np.where(ok, alpha + y, 1.0), 1.0, size=shape) / np.where(ok, beta + n, 1.0)
        return np.where(ok, sample, np.where(np.isfinite(m), m, np.nan))
    pools = groups if pools is None else pools
    weights = _kappa_posterior(y, n, m, seen, pools)
    cdf = np.cumsum(weights, axis=-1)
    picks = (cdf[None] < rng.random((draws, *cdf.shape[:-1], 1))).sum(axis=-1)
    kappa = KAPPA_GRID[np.minimum(picks, len(KAPPA_GRID) - 1)][:, pools, :]  # (draws, U, I)
    n_groups = int(groups.max()) + 1
    events, exposure = _group_sum(y, groups, n_groups), _group_sum(n, groups, n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = rng.gamma(events + 0.5, 1.0, size=(draws, *events.shape)) / exposure
    rate = rate[:, groups, :]
    known = np.isfinite(m) & np.isfinite(rate) & (rate > 0)
    alpha = 1.0 / kappa
    beta = alpha / np.where(known, rate, 1.0)
    sample = rng.gamma(alpha + y, 1.0) / (beta + n)
    return np.where(known, sample, np.where(np.isfinite(m), m, np.nan))
