"""The two-Gamma (hot population) prior of the TRUST index: likelihood, fit, posterior, configuration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from safetyml.index import shrink
from safetyml.index.config import IndexConfigError, load_config, parse_config
from tests.test_index_build import CONFIG_PATH


def test_negative_binomial_kernel_is_scipys():
    y = np.array([0.0, 1.0, 3.0, 12.0, 40.0])
    mean, a = np.array([0.5, 2.0, 3.5, 9.0, 25.0]), 2.7
    from scipy.special import gammaln

    ours = shrink.nb_logpmf_core(y, mean, a) - gammaln(y + 1)
    np.testing.assert_allclose(ours, stats.nbinom.logpmf(y, a, a / (a + mean)), rtol=1e-10)


@pytest.mark.parametrize(
    ("y", "kappa", "share", "ratio"), [(0, 0.3, 0.05, 4.0), (7, 0.1, 0.2, 2.5), (25, 1.5, 0.0, 1.0)]
)
def test_mixture_likelihood_matches_the_integral_over_the_prior(y, kappa, share, ratio):
    """P(y) = ∫ Poisson(y; e·θ) [(1 − π) Gamma(θ; 1/κ, mean μ) + π Gamma(θ; 1/κ, mean rμ)] dθ."""
    exposure_mean = 6.0
    a = 1.0 / kappa
    base = 1.0 / (1.0 - share + share * ratio)

    def integrand(theta: float) -> float:
        prior = (1 - share) * stats.gamma.pdf(theta, a, scale=base / a) + share * stats.gamma.pdf(
            theta, a, scale=ratio * base / a
        )
        return stats.poisson.pmf(y, exposure_mean * theta) * prior

    brute, _ = integrate.quad(integrand, 0, np.inf, limit=200)
    ours = shrink.mixture_logpmf(np.array([float(y)]), np.array([exposure_mean]), kappa, share, ratio)
    np.testing.assert_allclose(np.exp(ours[0]), brute, rtol=1e-6)


def _planted(seed: int, units: int = 500, share: float = 0.06, ratio: float = 4.0):
    """Four cities of ``units`` zones; a ``share`` of them hot (``ratio`` × the others' rate)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(4), units)
    den = rng.integers(100, 1500, len(groups)).astype(float)[:, None]
    hot = rng.random(len(groups)) < share
    base = 0.02 / (1 - share + share * ratio)
    truth = rng.gamma(5.0, base / 5.0, len(groups))[:, None] * np.where(hot, ratio, 1.0)[:, None]
    return rng.poisson(den * truth).astype(float), den, groups, hot, truth


def test_grid_posterior_finds_a_planted_hot_population_and_none_where_there_is_none():
    num, den, groups, _, _ = _planted(21)
    found = shrink.mixture_posterior(num, den, groups).expected()
    assert np.all((found["share"] > 0.03) & (found["share"] < 0.11)), found["share"]
    assert np.all((found["ratio"] > 2.5) & (found["ratio"] < 5.0)), found["ratio"]
    num, den, groups, _, _ = _planted(22, share=0.0)
    found = shrink.mixture_posterior(num, den, groups).expected()
    assert np.all(found["share"] < 0.04), found["share"]  # the prior alone averages 0.066
    assert np.all(np.abs(found["kappa"] - 0.2) < 0.06), found["kappa"]  # one Gamma of shape 5


def test_mixture_posterior_is_less_shrunk_for_hot_units_and_its_mean_matches_its_draws():
    num, den, groups, hot, truth = _planted(21)
    fit = shrink.mixture_posterior(num, den, groups)
    mixture = shrink.mixture_draws(num, den, groups, 400, np.random.default_rng(5), fit=fit)
    gamma = shrink.posterior_draws(num, den, groups, 400, np.random.default_rng(5))
    cover = {}
    for name, draws in (("gamma", gamma), ("mixture", mixture)):
        low, high = np.quantile(draws, [0.05, 0.95], axis=0)
        cover[name] = ((truth >= low) & (truth <= high))[:, 0]
    # measured: hot units 0.80 (one Gamma) and 0.86 (mixture); all units 0.90 and 0.88
    assert cover["mixture"][hot].mean() > cover["gamma"][hot].mean() + 0.03
    assert cover["mixture"].mean() > 0.85
    hot_level = mixture.mean(axis=0)[hot].mean() / truth[hot].mean()
    assert hot_level > gamma.mean(axis=0)[hot].mean() / truth[hot].mean() + 0.04
    mean = shrink.mixture_shrink(num, den, groups, fit=fit)
    np.testing.assert_allclose(mixture.mean(axis=0), mean, rtol=0.12)
    assert np.abs(mixture.mean(axis=0) / mean - 1).mean() < 0.02


def test_mixture_prior_with_poisson_resampling_is_a_config_error():
    data = load_config(CONFIG_PATH).model_dump(mode="json")
    data["prior"] = "mixture"
    data["uncertainty"]["data"] = "poisson"
    with pytest.raises(IndexConfigError, match=r"(?s)trust\.yaml.*prior: the mixture prior"):
        parse_config(data, str(CONFIG_PATH))
    data["uncertainty"]["data"] = "posterior"
    assert parse_config(data, str(CONFIG_PATH)).prior == "mixture"


def test_indicators_counting_the_same_incidents_share_their_data_noise():
    """Joint draws keep each indicator's Gamma(y) marginal and correlate nested counts as the data do."""
    import pandas as pd

    from safetyml.index.indicators import CELLS, Panel
    from safetyml.index.rates import event_gammas

    cells = np.array([[4.0, 10.0, 6.0, 3.0, 2.0, 5.0], [0.0, 2.0, 1.0, 0.0, 0.0, 1.0]])
    names = [
        "incident_rate",
        "severe_incident_rate",
        "violence_rate",
        "accident_rate",
        "riders_with_incident",
    ]
    incidents = cells.sum(axis=1)
    num = np.column_stack(
        [incidents, cells[:, 3:].sum(1), cells[:, [0, 3]].sum(1), cells[:, [1, 4]].sum(1), incidents - 3]
    )
    panel = Panel(
        "zone", pd.DataFrame({"period": [0, 0]}), names, num, np.full(num.shape, 500.0),
        np.ones(5), np.ones(5, dtype=bool), cells=cells,
    )  # fmt: skip
    assert len(CELLS) == cells.shape[1]
    joint = event_gammas(panel, 40_000, np.random.default_rng(1))
    np.testing.assert_allclose(joint.mean(axis=0), num, rtol=0.03)  # Gamma(y): mean y ...
    np.testing.assert_allclose(joint.var(axis=0), num, rtol=0.06)  # ... and variance y
    corr = np.corrcoef(joint[:, 0, :].T)
    # all incidents vs the severe ones: Cov = Var(severe), so corr = sqrt(y_severe / y)
    np.testing.assert_allclose(corr[0, 1], np.sqrt(num[0, 1] / num[0, 0]), atol=0.02)
    assert abs(corr[2, 3]) < 0.02  # violence and accidents are disjoint
    assert corr[0, 4] > 0.9  # riders with an incident are nearly all the incidents
    independent = event_gammas(panel, 40_000, np.random.default_rng(1), joint=False)
    assert abs(np.corrcoef(independent[:, 0, :].T)[0, 1]) < 0.02


def test_a_shared_prior_uniform_keeps_marginals_and_moves_incident_indicators_together():
    """With ``prior_u`` the prior's part is Gamma(α) by inversion: same marginal; one uniform per unit
    for the incident family ranks its draws together (their true rates correlate 0.90-0.99 across zones
    in the simulator)."""
    import pandas as pd

    from safetyml.index.indicators import Panel
    from safetyml.index.rates import shared_uniforms

    rng = np.random.default_rng(3)
    alpha = np.full((20_000, 1, 1), 2.5)
    by_inversion = shrink._prior_gamma(alpha, rng, rng.random(alpha.shape))
    assert stats.kstest(by_inversion.ravel(), stats.gamma(2.5).cdf).pvalue > 0.01
    names = ["incident_rate", "violence_rate", "night_share"]
    panel = Panel(
        "zone", pd.DataFrame({"period": [0]}), names, np.ones((1, 3)), np.ones((1, 3)),
        np.ones(3), np.ones(3, dtype=bool),
    )  # fmt: skip
    u = shared_uniforms(panel, 1000, rng)
    np.testing.assert_array_equal(u[..., 0], u[..., 1])
    assert np.isnan(u[..., 2]).all()  # drawn independently
    draws = shrink._prior_gamma(np.full(u.shape, 2.0), rng, u)
    assert (np.diff(np.argsort(draws[:, 0, :2], axis=0), axis=1) == 0).all()  # same rank order
    assert abs(stats.spearmanr(draws[:, 0, 0], draws[:, 0, 2]).statistic) < 0.1
