"""The index's building blocks, checked against libraries (esda, scipy) and by their defining properties."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from safetyml.index import aggregate, decomposition, shrink
from safetyml.index.config import OutlierSpec, load_config
from safetyml.index.normalise import normalise
from safetyml.index.treat import skew_kurtosis, treat
from safetyml.index.weights import make_weights

CONFIG = load_config(Path(__file__).resolve().parents[1] / "index" / "trust.yaml")


def test_shrinkage_matches_esda_empirical_bayes():
    from esda.smoothing import Empirical_Bayes

    rng = np.random.default_rng(1)
    den = rng.integers(50, 5000, 40).astype(float)
    num = rng.poisson(den * rng.gamma(4.0, 0.01 / 4.0, 40)).astype(float)
    ours = shrink.shrink(num[:, None], den[:, None], np.zeros(40, dtype=int))[:, 0]
    theirs = Empirical_Bayes(num, den).r[:, 0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    # a small unit moves more toward the group rate than a big one with the same raw rate
    m = num.sum() / den.sum()
    raw = num / den
    pull = np.abs(ours - raw) / np.maximum(np.abs(raw - m), 1e-12)
    assert pull[np.argmin(den)] > pull[np.argmax(den)]


def test_no_between_unit_variance_shrinks_fully_and_groups_are_separate():
    den = np.array([1000.0, 1000, 1000, 1000])
    num = np.array([10.0, 11, 9, 50])  # groups: first three (pure noise), last alone
    out = shrink.shrink(num[:, None], den[:, None], np.array([0, 0, 0, 1]))[:, 0]
    np.testing.assert_allclose(out[:3], 10 / 1000)  # s² < m/n̄ → A = 0 (esda would go negative)
    assert out[3] == pytest.approx(0.05)  # its own group
    # no data → imputed with the group rate
    out = shrink.shrink(np.array([[10.0], [np.nan]]), np.array([[1000.0], [0.0]]), np.array([0, 0]))
    assert out[1, 0] == pytest.approx(0.01)


def test_posterior_draws_centre_on_the_shrunk_rate():
    rng = np.random.default_rng(2)
    den = rng.integers(100, 2000, 30).astype(float)[:, None]
    num = rng.poisson(den * rng.gamma(2.0, 0.02 / 2.0, (30, 1))).astype(float)
    groups = np.zeros(30, dtype=int)
    plug_in = shrink.posterior_draws(num, den, groups, 4000, np.random.default_rng(3), hyper=False)
    np.testing.assert_allclose(plug_in.mean(axis=0), shrink.shrink(num, den, groups), rtol=0.05)
    spread = plug_in.std(axis=0)[:, 0] / plug_in.mean(axis=0)[:, 0]  # relative posterior spread
    assert spread[np.argmin(den[:, 0])] > spread[np.argmax(den[:, 0])]
    # drawing the prior's m and κ too (hierarchical Bayes) widens the posterior, near the shrunk rate
    hyper = shrink.posterior_draws(num, den, groups, 4000, np.random.default_rng(3))
    gap = np.abs(hyper.mean(axis=0) / shrink.shrink(num, den, groups) - 1)
    assert np.median(gap) < 0.05 and gap.max() < 0.25
    assert (hyper.std(axis=0) / plug_in.std(axis=0)).mean() > 1.0


def test_posterior_intervals_with_redrawn_prior_cover_the_true_rates_at_nominal():
    """100 cities of 40 zones with Gamma-distributed true rates, a handful of incidents each. With the
    true prior the 90% intervals hold 89.6% of true rates; with m and A estimated and fixed 82%; with m
    and κ drawn from their posteriors (flat prior on κ) 89.4%."""
    rng = np.random.default_rng(11)
    groups = np.repeat(np.arange(100), 40)
    den = rng.integers(200, 3000, len(groups)).astype(float)[:, None]
    city_rate = rng.uniform(0.001, 0.004, 100)[groups][:, None]
    truth = rng.gamma(4.0, city_rate / 4.0)
    num = rng.poisson(den * truth).astype(float)
    cover = {}
    for hyper in (False, True):
        draws = shrink.posterior_draws(num, den, groups, 600, np.random.default_rng(5), hyper=hyper)
        low, high = np.quantile(draws, [0.05, 0.95], axis=0)
        cover[hyper] = float(((truth >= low) & (truth <= high)).mean())
    assert cover[False] < 0.84 and 0.87 <= cover[True] <= 0.93


def test_skew_and_kurtosis_are_scipys():
    x = np.random.default_rng(4).lognormal(0, 1, (200, 3))
    skew, kurt = skew_kurtosis(x)
    np.testing.assert_allclose(skew, stats.skew(x, axis=0))
    np.testing.assert_allclose(kurt, stats.kurtosis(x, axis=0))


def test_winsorising_follows_coinr_rule():
    x = np.concatenate([np.arange(1.0, 11.0), [30.0, 100.0]])[:, None]  # COINr's own example
    spec = OutlierSpec(log_fallback=False)
    done = treat(x, spec)
    skew, kurt = skew_kurtosis(done.values)
    assert done.winsorised[0] >= 1 and not done.logged[0]
    assert not ((abs(skew[0]) > 2) and (kurt[0] > 3.5))
    assert done.values.max() < 100 and done.values.min() == 1  # high side only (positive skew)
    calm = np.arange(1.0, 21.0)[:, None]
    assert treat(calm, spec).winsorised[0] == 0
    np.testing.assert_array_equal(treat(calm, spec).values, calm)
    # winmax too small → COINr's log fallback
    heavy = np.concatenate([np.ones(50), np.arange(1, 30) ** 3.0])[:, None]
    logged = treat(heavy, OutlierSpec(winmax=1))
    assert logged.logged[0]


def test_normalisation_directions_targets_and_constants():
    x = np.array([[1.0, 10.0, 5.0], [2.0, 20.0, 5.0], [4.0, 40.0, 5.0]])
    sign = np.array([1.0, -1.0, 1.0])
    mm = normalise(x, sign, "minmax")
    np.testing.assert_allclose(mm[:, 0], [0, 100 / 3, 100])
    np.testing.assert_allclose(mm[:, 1], [100, 200 / 3, 0])  # safety indicator: higher value, lower risk
    np.testing.assert_allclose(mm[:, 2], 50)
    z = normalise(x, sign, "zscore")
    assert z[:, 0].mean() == pytest.approx(50) and z[2, 0] > z[0, 0] and z[2, 1] < z[0, 1]
    tgt = normalise(x, sign, "target", np.array([2.0, np.nan, np.nan]))
    np.testing.assert_allclose(tgt[:, 0], [0, 0, 100])  # at or better than target → 0


def test_pca_weights_discount_an_indicator_that_moves_alone():
    rng = np.random.default_rng(5)
    signal = rng.normal(size=300)
    values = np.column_stack(
        [signal + 0.3 * rng.normal(size=300), signal + 0.3 * rng.normal(size=300), rng.normal(size=300)]
    )
    names = ["incident_rate", "severe_incident_rate", "violence_rate"]
    w = make_weights(CONFIG, names, "pca", values)
    assert w.within.sum() == pytest.approx(1)
    assert w.within[2] < 0.1 < w.within[0]
    eq = make_weights(CONFIG, names, "equal", values)
    np.testing.assert_allclose(eq.within, 1 / 3)


def test_aggregation_and_decomposition_add_up():
    names = ["incident_rate", "severe_incident_rate", "night_share", "chargeback_rate"]
    rng = np.random.default_rng(6)
    normed = rng.uniform(0, 100, (8, 4))
    w = make_weights(CONFIG, names, "expert", normed)
    assert w.overall.sum() == pytest.approx(1)
    for method in ("arithmetic", "geometric"):
        score = aggregate.index(aggregate.pillars(normed, w, method), w, method)
        parts = decomposition.contributions(normed, score, w, method)
        np.testing.assert_allclose(parts.sum(axis=1), score)
    arith = aggregate.index(aggregate.pillars(normed, w, "arithmetic"), w, "arithmetic")
    geo = aggregate.index(aggregate.pillars(normed, w, "geometric"), w, "geometric")
    assert (geo <= arith + 1e-9).all()  # AM-GM: the geometric mean compensates less


def test_change_decomposition_sums_to_the_score_change():
    import pandas as pd

    names = ["incident_rate", "night_share"]
    units = pd.DataFrame({"city": ["a", "a", "b", "b"], "period": [1, 2, 1, 2]})
    normed = np.array([[10.0, 20], [30, 10], [50, 50], [40, 70]])
    w = make_weights(CONFIG, names, "expert", normed)
    for method in ("arithmetic", "geometric"):
        score = aggregate.index(aggregate.pillars(normed, w, method), w, method)
        change = decomposition.changes(units, ["city"], normed, score, w, method)
        assert np.isnan(change[0]).all() and np.isnan(change[2]).all()
        assert change[1].sum() == pytest.approx(score[1] - score[0])
        assert change[3].sum() == pytest.approx(score[3] - score[2])


def test_ranks_within_period_highest_score_first():
    scores = np.array([[1.0, 5.0, 3.0, 9.0, 9.0]])
    periods = np.array([0, 0, 0, 1, 1])
    np.testing.assert_array_equal(aggregate.ranks(scores, periods), [[3, 1, 2, 1, 1]])


def test_noisy_weights_stay_normalised_and_batched_aggregation_matches_one_by_one():
    names = ["incident_rate", "severe_incident_rate", "night_share", "chargeback_rate"]
    normed = np.random.default_rng(7).uniform(0, 100, (6, 4))
    w = make_weights(CONFIG, names, "expert", normed)
    noisy = w.perturbed(0.25, 5, np.random.default_rng(8))
    assert noisy.within.shape == (5, 4) and np.allclose(noisy.pillar.sum(axis=1), 1)
    for idx in w.members:
        assert np.allclose(noisy.within[:, idx].sum(axis=1), 1)
    assert noisy.pillar.std(axis=0).max() > 0
    batch = np.broadcast_to(normed, (5, 6, 4))
    for method in ("arithmetic", "geometric"):
        together = aggregate.index(aggregate.pillars(batch, noisy, method), noisy, method)
        for r in range(5):
            one = type(w)(w.method, w.pillars, w.members, noisy.within[r], noisy.pillar[r])
            np.testing.assert_allclose(
                together[r], aggregate.index(aggregate.pillars(normed, one, method), one, method)
            )
