"""Reason codes: grouping, ranking, values, sentences, batch table and single-row speed."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from safetyml.explain.probability import to_probability_points
from safetyml.explain.reasons import Reason, reason_codes, reason_plan, reason_table
from safetyml.explain.shap_values import explain_logodds
from tests.explain_support import feature_set, synthetic_frame, train_model


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame(4000, seed=5)


@pytest.fixture(scope="module")
def model(frame):
    return train_model(frame, rounds=50)


@pytest.fixture(scope="module")
def fs():
    return feature_set()


def _grouped(model, fs, contrib: np.ndarray) -> pd.DataFrame:
    groups = [fs.get(name).group for name in model.features]
    return pd.DataFrame(contrib[:, :-1], columns=groups).T.groupby(level=0, sort=False).sum().T


def test_reasons_are_the_top_groups_by_summed_contribution(model, frame, fs) -> None:
    X = frame.iloc[:200]
    contrib = explain_logodds(model, X)
    grouped = _grouped(model, fs, contrib)
    reasons = reason_codes(model, X, fs, k=3)
    assert len(reasons) == len(X)
    for i, row in enumerate(reasons):
        expected = grouped.iloc[i][grouped.iloc[i] > 0].sort_values(ascending=False).head(3)
        assert [r.group for r in row] == list(expected.index)
        np.testing.assert_allclose([r.contribution_logodds for r in row], expected.to_numpy(), atol=1e-12)
        assert len({r.group for r in row}) == len(row)  # never the same source twice
        assert all(r.direction == "up" for r in row)


def test_windows_of_one_source_make_one_reason(model, frame, fs) -> None:
    X = frame.iloc[:400]
    reasons = reason_codes(model, X, fs, k=5, include_negative=True)
    contrib = explain_logodds(model, X)
    j7, j30 = model.features.index("rider_incidents_7d"), model.features.index("rider_incidents_30d")
    seen = 0
    for i, row in enumerate(reasons):
        incidents = [r for r in row if r.group == "rider_incidents"]
        assert len(incidents) <= 1
        if incidents:
            seen += 1
            r = incidents[0]
            assert r.contribution_logodds == pytest.approx(contrib[i, j7] + contrib[i, j30], abs=1e-12)
            # the strongest member in the reason's direction gives the value and the sentence
            sign = 1 if r.direction == "up" else -1
            strongest = (
                "rider_incidents_7d"
                if sign * contrib[i, j7] >= sign * contrib[i, j30]
                else "rider_incidents_30d"
            )
            assert r.feature == strongest
            assert r.value == X[strongest].iloc[i]
            assert r.text == fs.get(strongest).describe(r.value)
    assert seen > 100


def test_negative_reasons_and_probability_points(model, frame, fs) -> None:
    X = frame.iloc[:100]
    contrib = explain_logodds(model, X)
    points, _ = to_probability_points(model, contrib)
    grouped_points = _grouped(model, fs, np.hstack([points, np.zeros((len(X), 1))]))
    reasons = reason_codes(model, X, fs, k=2, include_negative=True, contributions=contrib)
    downs = 0
    for i, row in enumerate(reasons):
        directions = [r.direction for r in row]
        assert directions == sorted(directions, key=lambda d: d != "up")  # ups first, then downs
        for r in row:
            assert (r.contribution_logodds > 0) == (r.direction == "up")
            assert r.contribution_probability == pytest.approx(grouped_points.iloc[i][r.group], abs=1e-12)
        down = [r.contribution_logodds for r in row if r.direction == "down"]
        assert down == sorted(down)  # most negative first
        downs += len(down)
    assert downs > 0


def test_values_are_json_safe_and_categorical_values_are_levels(model, frame, fs) -> None:
    X = frame.iloc[:300].copy()
    X.loc[X.index[:50], "distance_km"] = np.nan
    reasons = reason_codes(model, X, fs, k=6, include_negative=True)
    payload = json.dumps([[r.to_dict() for r in row] for row in reasons])
    assert "NaN" not in payload
    values = {r.value for row in reasons for r in row if r.feature == "vehicle_type"}
    assert values and values <= {"motorcycle", "bicycle", "car"}
    missing = [r for row in reasons[:50] for r in row if r.feature == "distance_km"]
    assert missing and all(r.value is None for r in missing)


def test_single_row_mapping_and_dataframe_agree(model, frame, fs) -> None:
    row = frame.iloc[[3]]
    record = {name: row[name].iloc[0] for name in frame.columns}
    assert reason_codes(model, record, fs, include_negative=True) == reason_codes(
        model, row, fs, include_negative=True
    )


def test_reason_table_matches_reason_objects(model, frame, fs) -> None:
    X = frame.iloc[:150]
    reasons = reason_codes(model, X, fs, k=3, include_negative=True)
    table = reason_table(model, X, fs, k=3, include_negative=True)
    flat = [
        (i, r.direction, r.group, r.feature, r.contribution_logodds)
        for i, row in enumerate(reasons)
        for r in row
    ]
    assert len(table) == len(flat)
    got = list(
        table[["row", "direction", "group", "feature", "contribution_logodds"]].itertuples(
            index=False, name=None
        )
    )
    assert [g[:4] for g in got] == [f[:4] for f in flat]
    np.testing.assert_allclose([g[4] for g in got], [f[4] for f in flat])


def test_without_feature_set_reasons_are_generic(model, frame) -> None:
    reasons = reason_codes(model, frame.iloc[:20], None, k=3)
    assert any(reasons)
    for row in reasons:
        for r in row:
            assert r.group == r.feature  # no grouping information: each feature is its own group
            assert r.text.startswith(r.feature.replace("_", " "))


def test_wrong_contribution_shape_is_refused(model, frame, fs) -> None:
    with pytest.raises(ValueError, match="features \\+ 1 base"):
        reason_codes(model, frame.iloc[:2], fs, contributions=np.zeros((2, 3)))


def test_plan_is_cached_per_model_and_feature_set(model, fs) -> None:
    assert reason_plan(model, fs) is reason_plan(model, fs)
    assert reason_plan(model, feature_set()) is not reason_plan(model, fs)


def test_single_row_score_and_reasons_is_fast(model, frame, fs) -> None:
    row = frame.iloc[[10]]
    reason_codes(model, row, fs)  # warm the plan cache
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        reason_codes(model, row, fs)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 0.005  # the real-time budget, with this small model far below it
    assert isinstance(reason_codes(model, row, fs)[0][0], Reason)
