"""Global importance, dependence, score bands and cohort comparison with bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.explain.cohorts import (
    bootstrap_means,
    cohort_importance,
    dependence,
    global_importance,
    grouped_contributions,
    score_bands,
)
from safetyml.explain.shap_values import explain_logodds
from tests.explain_support import feature_set, synthetic_frame, train_model


@pytest.fixture(scope="module")
def explained():
    frame = synthetic_frame(6000, seed=21)
    model = train_model(frame.iloc[:3000], rounds=50)
    rows = frame.iloc[3000:].reset_index(drop=True)
    contrib = explain_logodds(model, rows)
    fs = feature_set()
    group_of = {f.name: f.group for f in fs.features}
    return model, rows, contrib, grouped_contributions(contrib, model.features, group_of)


def test_grouped_contributions_sum_members(explained) -> None:
    model, _, contrib, grouped = explained
    j7, j30 = model.features.index("rider_incidents_7d"), model.features.index("rider_incidents_30d")
    np.testing.assert_allclose(grouped["rider_incidents"], contrib[:, j7] + contrib[:, j30])
    np.testing.assert_allclose(grouped.sum(axis=1), contrib[:, :-1].sum(axis=1))
    assert list(grouped.columns).count("rider_incidents") == 1


def test_global_importance_ranks_by_mean_absolute_shap(explained) -> None:
    _, _, _, grouped = explained
    table = global_importance(grouped)
    expected = grouped.abs().mean().sort_values(ascending=False)
    assert list(table["name"]) == list(expected.index)
    np.testing.assert_allclose(table["mean_abs"], expected.to_numpy())
    assert table["share"].sum() == pytest.approx(1.0)
    assert list(table["rank"]) == list(range(1, len(table) + 1))


def test_dependence_bins_cover_every_row_and_follow_the_truth(explained) -> None:
    model, rows, contrib, _ = explained
    j = model.features.index("zone_night_risk")
    table = dependence(rows["zone_night_risk"], contrib[:, j], bins=8)
    assert table["rows"].sum() == len(rows)
    weighted = (table["mean_shap"] * table["rows"]).sum() / table["rows"].sum()
    assert weighted == pytest.approx(contrib[:, j].mean())
    # risk rises with night-time zone risk in the simulated truth: the top bin pushes up, the bottom down
    assert table["mean_shap"].iloc[-1] > 0 > table["mean_shap"].iloc[0]


def test_dependence_keeps_missing_values_and_levels_apart(explained) -> None:
    model, rows, contrib, _ = explained
    j = model.features.index("distance_km")
    table = dependence(rows["distance_km"], contrib[:, j])
    assert table.iloc[-1]["bin"] == "missing"
    assert table.iloc[-1]["rows"] == rows["distance_km"].isna().sum()
    jv = model.features.index("vehicle_type")
    levels = dependence(rows["vehicle_type"], contrib[:, jv])
    assert set(levels["bin"]) == {"motorcycle", "bicycle", "car"}
    moto = levels.set_index("bin").loc["motorcycle", "mean_shap"]
    assert moto == pytest.approx(contrib[(rows["vehicle_type"] == "motorcycle").to_numpy(), jv].mean())
    flags = dependence(pd.Series((rows["rider_incidents_7d"] > 0).astype(float)), contrib[:, 0])
    assert list(flags["bin"]) == ["0", "1"]  # a flag gets one bin per value, not a quantile range


def test_score_bands_follow_the_quantiles() -> None:
    p = np.random.default_rng(0).uniform(size=10_000)
    bands = pd.Series(score_bands(p)).value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(bands.to_numpy(), [0.5, 0.4, 0.09, 0.01], atol=0.002)


def test_bootstrap_matches_explicit_resampling_in_distribution() -> None:
    rng = np.random.default_rng(3)
    values = rng.exponential(size=(400, 2))
    ours = bootstrap_means(values, 2000, np.random.default_rng(1))
    explicit = np.array([values[rng.integers(0, 400, 400)].mean(axis=0) for _ in range(2000)])
    np.testing.assert_allclose(ours.mean(axis=0), values.mean(axis=0), rtol=0.01)
    np.testing.assert_allclose(ours.std(axis=0), explicit.std(axis=0), rtol=0.1)
    np.testing.assert_allclose(ours.std(axis=0), values.std(axis=0) / np.sqrt(400), rtol=0.1)


def test_cohort_comparison_finds_the_real_difference_and_not_noise(explained) -> None:
    _, rows, _, grouped = explained
    result = cohort_importance(grouped, rows["city"], n_boot=200, seed=4)
    again = cohort_importance(grouped, rows["city"], n_boot=200, seed=4)
    pd.testing.assert_frame_equal(result.table, again.table)  # seeded
    assert set(result.table["cohort"]) == {"rio", "sao_paulo", "recife"}
    inside = (result.table["ci_low"] <= result.table["mean_abs"]) & (
        result.table["mean_abs"] <= result.table["ci_high"]
    )
    assert inside.all()
    # the simulated night-time zone risk doubles in Rio: a real difference
    real = result.compare("zone_night_risk", "rio", "sao_paulo")
    assert real.difference > 0 and not real.intervals_overlap and real.significant
    assert real.sentence().startswith("In rio, zone_night_risk drives scores more than in sao_paulo")
    assert "do not overlap" in real.sentence()
    # São Paulo and Recife are simulated alike: the order-value driver should not differ beyond noise
    noise = result.compare("order_value", "sao_paulo", "recife")
    assert noise.intervals_overlap and not noise.significant
    assert "could be noise" in noise.sentence()


def test_small_cohorts_are_left_out(explained) -> None:
    _, rows, _, grouped = explained
    labels = rows["city"].to_numpy(dtype=object).copy()
    labels[:10] = "tiny"
    result = cohort_importance(grouped, labels, n_boot=50, seed=0, min_rows=30)
    assert "tiny" not in set(result.table["cohort"])
    assert len(result.notable()) == len(grouped.columns)
