"""Metrics: our own pieces (ECE, top-k, lift, oracle share) checked against libraries or by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from safetyml.training.metrics import (
    classification_metrics,
    expected_calibration_error,
    ks_statistic,
    lift_by_decile,
    oracle_share,
    top_k,
)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    p = rng.beta(1, 20, 1000)
    y = (rng.random(1000) < np.clip(p * 1.5, 0, 1)).astype(int)
    return y, p


def test_ece_equals_sklearn_quantile_bins(scored):
    y, p = scored
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    # 1000 distinct scores in 10 equal-count bins: every bin weighs 1/10
    assert expected_calibration_error(y, p, 10) == pytest.approx(
        np.mean(np.abs(prob_true - prob_pred)), rel=1e-9
    )


def test_ece_is_zero_when_every_bin_matches():
    p = np.repeat([0.1, 0.5], 10)
    y = np.array([1] + [0] * 9 + [1] * 5 + [0] * 5)
    assert expected_calibration_error(y, p, 2) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(20, 0.9), 2) > 0.5


def test_ks_matches_scipy_and_a_cdf_difference(scored):
    y, p = scored
    expected = ks_2samp(p[y == 1], p[y == 0]).statistic
    grid = np.sort(p)
    cdf = lambda s: np.searchsorted(np.sort(s), grid, side="right") / len(s)  # noqa: E731
    assert ks_statistic(y, p) == pytest.approx(expected)
    assert ks_statistic(y, p) == pytest.approx(np.max(np.abs(cdf(p[y == 1]) - cdf(p[y == 0]))))


def test_top_k_counts_the_highest_scores():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 1, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.05, 0.01, 0.02, 0.03])
    precision, recall = top_k(y, p, 0.3)  # top 3: rows 0, 1, 2 -> two positives of three
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 3)
    precision, recall = top_k(y, p, 0.01)  # at least one row
    assert (precision, recall) == (1.0, pytest.approx(1 / 3))


def test_lift_by_decile_adds_up(scored):
    y, p = scored
    lift = lift_by_decile(y, p)
    assert lift["rows"].sum() == len(y)
    assert lift["positives"].sum() == y.sum()
    assert lift["cum_recall"].iloc[-1] == pytest.approx(1.0)
    assert (lift["rows"] * lift["lift"]).sum() / len(y) == pytest.approx(1.0)
    assert lift["mean_score"].is_monotonic_decreasing


def test_classification_metrics_and_oracle_share(scored):
    y, p = scored
    m = classification_metrics(y, p, review_capacity=0.1)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["positive_rate"] == pytest.approx(y.mean())
    assert m["lift_top_decile"] == pytest.approx(lift_by_decile(y, p)["lift"].iloc[0])
    assert oracle_share(0.7, 0.9) == pytest.approx(0.5)
    assert oracle_share(0.9, 0.9) == pytest.approx(1.0)
    assert np.isnan(oracle_share(0.7, 0.5))


def test_equal_count_bins_match_numpy_array_split_and_keep_ties_in_order() -> None:
    from safetyml.training.metrics import equal_count_bins

    s = np.array([0.3, 0.1, 0.3, 0.9, 0.5, 0.1, 0.7])
    bins = equal_count_bins(s, 3)
    assert [b.tolist() for b in bins] == [[1, 5, 0], [2, 4], [6, 3]]
    assert [b.tolist() for b in equal_count_bins(s, 3, descending=True)] == [[3, 6, 4], [0, 2], [1, 5]]
    assert len(equal_count_bins(s[:2], 5)) == 2 and len(equal_count_bins(s[:2], 5, keep_empty=True)) == 5
