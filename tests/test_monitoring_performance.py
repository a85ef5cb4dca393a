"""Performance: realised metrics against scikit-learn, CBPE estimates on calibrated data, band rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from safetyml.monitoring.performance import (
    estimated_metrics,
    hanley_mcneil_se,
    performance_by_period,
    realised_metrics,
)
from safetyml.training.metrics import expected_calibration_error


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(0.6, 20, n), 3)  # rounded: many ties, like isotonic calibration
    return p, (rng.random(n) < p).astype(int)


def test_realised_metrics_match_sklearn_and_the_training_ece_with_ties():
    p, y = _calibrated(20_000, 0)
    got = realised_metrics(p, y, bootstrap=100)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert got["ece"] == pytest.approx(expected_calibration_error(y, p, 10), abs=1e-12)
    for name in ("roc_auc", "pr_auc", "ece"):
        assert got[f"{name}_lo"] < got[name] < got[f"{name}_hi"]
    assert got["roc_auc_hi"] - got["roc_auc_lo"] < 0.08
    assert np.isnan(realised_metrics(p, np.zeros_like(y))["roc_auc"])


def test_cbpe_estimate_is_close_to_the_realised_auc_of_calibrated_scores():
    gaps, inside = [], 0
    for seed in range(20):
        p, y = _calibrated(30_000, seed + 10)
        est = estimated_metrics(p)
        realised = roc_auc_score(y, p)
        gaps.append(abs(est["est_roc_auc"] - realised))
        inside += est["est_roc_auc_lo"] <= realised <= est["est_roc_auc_hi"]
        assert est["expected_positives"] == pytest.approx(p.sum())
    assert np.median(gaps) < 0.01
    assert inside >= 16  # 95% interval over 20 draws
    # a model that is not calibrated breaks CBPE (the documented assumption): estimates differ
    p, y = _calibrated(30_000, 99)
    assert abs(estimated_metrics(np.sqrt(p))["est_roc_auc"] - roc_auc_score(y, p)) > 0.02


def test_hanley_mcneil_standard_error_matches_the_published_example():
    # Hanley & McNeil (1982) table: A = 0.75, 20 positives, 200 negatives → SE ≈ 0.0650 (auctestr se_auc)
    assert hanley_mcneil_se(0.75, 20, 200) == pytest.approx(0.06498, abs=1e-4)
    assert np.isnan(hanley_mcneil_se(0.75, 1, 200))


def test_performance_by_period_reports_realised_figures_only_for_mature_weeks():
    p, y = _calibrated(6_000, 3)
    frame = pd.DataFrame(
        {
            "period": np.repeat(pd.to_datetime(["2026-08-03", "2026-08-10", "2026-08-17"], utc=True), 2_000),
            "probability": p,
            "label": y,
            "tier": np.where(p > 0.05, "high", "low"),
        }
    )
    mature = frame["period"] < pd.Timestamp("2026-08-17", tz="UTC")
    perf, bands = performance_by_period(frame, mature.to_numpy(), bootstrap=50)
    assert perf["mature"].tolist() == [True, True, False]
    assert perf["roc_auc"].notna().tolist() == [True, True, False]
    assert perf["est_roc_auc"].notna().all()
    high = bands[(bands["tier"] == "high") & bands["mature"]]
    assert (high["incident_rate_lo"] <= high["incident_rate"]).all() and (
        high["incident_rate"] <= high["incident_rate_hi"]
    ).all()
    assert bands.loc[~bands["mature"], "incident_rate"].isna().all()
