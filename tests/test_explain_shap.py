"""Exact TreeSHAP in log-odds and its conversion to probability points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.explain.probability import (
    calibrated,
    predict_proba_fast,
    probability_scale,
    to_probability_points,
)
from safetyml.explain.shap_values import explain_logodds, shap_reference, to_matrix
from safetyml.model import FeatureMismatchError
from tests.explain_support import synthetic_frame, train_model


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame(4000, seed=11)


@pytest.fixture(scope="module")
def model(frame):
    return train_model(frame, categorical=True, rounds=40)


@pytest.mark.slow  # importing shap alone takes seconds
def test_lightgbm_pred_contrib_agrees_with_shap_own_treeshap(frame) -> None:
    numeric = train_model(frame, categorical=False, rounds=40)
    X = frame.iloc[:300]
    ours = explain_logodds(numeric, X)
    theirs = shap_reference(numeric, X)
    assert ours.shape == (300, len(numeric.features) + 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)


def test_shap_reference_refuses_categorical_splits(model, frame) -> None:
    with pytest.raises(ValueError, match="categorical"):
        shap_reference(model, frame.iloc[:5])


def test_contributions_sum_to_raw_score(model, frame) -> None:
    X = frame.iloc[:500]
    contrib = explain_logodds(model, X)
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X), rtol=0, atol=1e-9)
    assert np.ptp(contrib[:, -1]) == 0  # one base value for every row


@pytest.mark.parametrize("rows", [1, 5, 300])
def test_fast_matrix_path_matches_model_prepare(model, frame, rows) -> None:
    X = frame.iloc[40 : 40 + rows].copy()
    X.loc[X.index[0], "vehicle_type"] = "hoverboard"  # unknown level → missing, as in RiskModel.prepare
    X.loc[X.index[-1], "order_value"] = np.nan
    np.testing.assert_array_equal(explain_logodds(model, X), model.contributions(X))


def test_mapping_input_matches_dataframe(model, frame) -> None:
    row = frame.iloc[[7]]
    record = {name: row[name].iloc[0] for name in frame.columns}
    np.testing.assert_array_equal(to_matrix(model, record), to_matrix(model, row))
    np.testing.assert_array_equal(explain_logodds(model, record), model.contributions(row))


def test_missing_feature_is_named(model, frame) -> None:
    with pytest.raises(FeatureMismatchError, match="zone_night_risk"):
        explain_logodds(model, frame.drop(columns=["zone_night_risk"]).iloc[:2])


@pytest.mark.parametrize("method", ["isotonic", "platt", "none"])
def test_probability_points_sum_to_calibrated_score_minus_base(frame, method) -> None:
    model = train_model(frame, calibration=method, rounds=30)
    X = frame.iloc[:400]
    contrib = explain_logodds(model, X)
    points, p_base = to_probability_points(model, contrib)
    np.testing.assert_allclose(points.sum(axis=1), model.predict_proba(X) - p_base, atol=1e-12)
    base = contrib[0, -1]
    np.testing.assert_allclose(p_base, calibrated(model, np.array([base]))[0])
    # same signs and ranking as log-odds within each row: a non-negative per-row factor
    scale, _, _ = probability_scale(model, contrib)
    assert (scale >= 0).all()
    moved = np.abs(points.sum(axis=1)) > 1e-12
    assert np.array_equal(np.sign(points[moved]), np.sign(contrib[moved, :-1] * (scale[moved, None] > 0)))


def test_probability_scale_at_the_base_uses_the_local_slope(model) -> None:
    contrib = np.zeros((1, len(model.features) + 1))
    contrib[0, -1] = -1.5
    contrib[0, 0], contrib[0, 1] = 0.3, -0.3  # f(x) == base
    scale, p, p_base = probability_scale(model, contrib)
    assert p[0] == pytest.approx(p_base[0])
    step = 1e-4
    slope = (calibrated(model, np.array([-1.5 + step])) - calibrated(model, np.array([-1.5 - step]))) / (
        2 * step
    )
    assert scale[0] == pytest.approx(slope[0])


@pytest.mark.parametrize("rows", [1, 300])
def test_fast_predict_proba_equals_the_model(model, frame, rows) -> None:
    X = frame.iloc[:rows]
    np.testing.assert_allclose(predict_proba_fast(model, X), model.predict_proba(X), rtol=0, atol=1e-12)
    record = {name: frame[name].iloc[0] for name in frame.columns}
    assert predict_proba_fast(model, record)[0] == pytest.approx(
        model.predict_proba(frame.iloc[[0]])[0], abs=1e-12
    )
