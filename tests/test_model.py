"""RiskModel storage (LightGBM text + JSON, no pickle) and calibration against scikit-learn."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from safetyml.calibration import Calibrator, logit
from safetyml.model import FeatureMismatchError, RiskModel


@pytest.fixture(scope="module")
def fitted() -> tuple[RiskModel, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 3000
    X = pd.DataFrame(
        {
            "speed": rng.normal(size=n),
            "vehicle": pd.Categorical(
                rng.choice(["car", "motorcycle", "bicycle"], n), categories=["bicycle", "car", "motorcycle"]
            ),
        }
    )
    logits = 1.5 * X["speed"] + np.where(X["vehicle"] == "motorcycle", 1.0, -0.5) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int).to_numpy()
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": 1}, lgb.Dataset(X, y), 30
    )
    calibrator = Calibrator.fit("isotonic", booster.predict(X), y)
    model = RiskModel(
        "incident_risk",
        booster,
        ["speed", "vehicle"],
        {"vehicle": ["bicycle", "car", "motorcycle"]},
        calibrator,
        {"trained_on": "synthetic"},
    )
    return model, X, y


def test_save_load_roundtrip_gives_identical_scores_and_no_pickle(fitted, tmp_path):
    model, X, _ = fitted
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.txt"]
    assert (tmp_path / "m" / "model.txt").read_text().startswith("tree")
    json.loads((tmp_path / "m" / "model.json").read_text())  # plain JSON sidecar
    loaded = RiskModel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.metadata == {"trained_on": "synthetic"}


def test_prepare_orders_columns_and_maps_unknown_categories_to_missing(fitted):
    model, X, _ = fitted
    shuffled = X[["vehicle", "speed"]].assign(vehicle=X["vehicle"].astype(str), extra=1)
    shuffled.loc[0, "vehicle"] = "hoverboard"
    prepared = model.prepare(shuffled)
    assert list(prepared.columns) == ["speed", "vehicle"]
    assert pd.isna(prepared.loc[0, "vehicle"])
    np.testing.assert_allclose(model.predict_proba(shuffled)[1:], model.predict_proba(X)[1:])


def test_missing_feature_is_named(fitted):
    model, X, _ = fitted
    with pytest.raises(FeatureMismatchError, match="speed"):
        model.predict_proba(X.drop(columns=["speed"]))


def test_contributions_sum_to_raw_score(fitted):
    model, X, _ = fitted
    contrib = model.contributions(X)
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X), atol=1e-9)


def test_isotonic_calibrator_matches_sklearn():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)
    ours = Calibrator.fit("isotonic", p, y)
    theirs = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    grid = np.linspace(-0.1, 1.1, 301)
    np.testing.assert_allclose(ours.transform(grid), theirs.predict(grid), atol=1e-12)
    restored = Calibrator.from_dict(json.loads(json.dumps(ours.to_dict())))
    np.testing.assert_allclose(restored.transform(grid), theirs.predict(grid), atol=1e-12)


def test_platt_calibrator_matches_sklearn():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, 800)
    y = (rng.random(800) < p**1.5).astype(int)
    ours = Calibrator.fit("platt", p, y)
    theirs = LogisticRegression(C=1e6, max_iter=1000).fit(logit(p).reshape(-1, 1), y)
    grid = np.linspace(0.01, 0.99, 99)
    np.testing.assert_allclose(
        ours.transform(grid), theirs.predict_proba(logit(grid).reshape(-1, 1))[:, 1], atol=1e-9
    )


def test_unknown_calibration_method_is_rejected():
    with pytest.raises(ValueError, match="unknown calibration method 'magic'"):
        Calibrator.fit("magic", np.array([0.1]), np.array([0]))
