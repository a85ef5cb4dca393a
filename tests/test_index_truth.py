"""The two truths the TRUST index is checked against on simulated data: incident risk and the true index."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from safetyml.index import truth
from safetyml.index.build import compute_level
from safetyml.index.config import load_config
from safetyml.index.indicators import VIOLENCE, prepare
from safetyml.tables import load_tables
from tests.test_index_build import CONFIG_PATH


@pytest.fixture(scope="module")
def setup(small_data_dir):
    config = load_config(CONFIG_PATH)
    inputs = prepare(load_tables(small_data_dir), config.period, config.experienced_days)
    levels = {lvl: compute_level(inputs, config, lvl, 20, 0, progress=False) for lvl in ("city", "zone")}
    return small_data_dir, config, inputs, levels


def test_type_probabilities_add_up_and_match_the_simulated_incidents(small_data_dir):
    tp = pd.read_parquet(small_data_dir / truth.TRUTH_FILE)
    assert (tp["p_incident_violence"] + tp["p_incident_accident"] <= tp["p_incident"] * (1 + 1e-12)).all()
    assert (tp["p_incident_violence"] > 0).all() and (tp["p_incident_accident"] > 0).all()
    incidents = pd.read_parquet(small_data_dir / "incidents.parquet")
    on_trip = incidents[incidents["trip_id"].isin(tp["trip_id"])]
    for column, observed in (
        ("p_incident_violence", on_trip["type"].isin(VIOLENCE).sum()),
        ("p_incident_accident", (on_trip["type"] == "accident").sum()),
    ):
        expected = tp[column].sum()
        assert abs(observed - expected) < 4 * np.sqrt(expected), (column, observed, expected)


def test_true_values_are_the_expected_indicators(setup):
    data, _, inputs, levels = setup
    panel, nominal = levels["city"].panel, levels["city"].values.values
    values, sources = truth.true_values(data, inputs, panel, nominal)
    col = panel.indicators.index
    np.testing.assert_allclose(values[:, col("incident_rate")], 1e4 * truth.true_risk(data, inputs, panel))
    assert (values[:, col("violence_rate")] < values[:, col("incident_rate")]).all()
    np.testing.assert_array_equal(values[:, col("night_share")], panel.raw[:, col("night_share")])
    for name in ("chargeback_rate", "credit_event_rate"):
        np.testing.assert_array_equal(values[:, col(name)], nominal[:, col(name)])
        assert sources[name].startswith("no simulator truth")
    # riders with an incident, brute force: per city-month, mean over riders of 1 - prod(1 - p)
    p = pd.read_parquet(data / truth.TRUTH_FILE).set_index("trip_id")["p_incident"]
    trips = inputs.trips.assign(p=inputs.trips["trip_id"].map(p).to_numpy())
    per_rider = trips.groupby(["period", "city", "rider_id"])["p"].apply(lambda s: 1 - np.prod(1 - s))
    brute = per_rider.groupby(["period", "city"]).mean().mul(1000)
    ours = pd.Series(
        values[:, col("riders_with_incident")],
        index=pd.MultiIndex.from_frame(panel.units[["period", "city"]]),
    )
    np.testing.assert_allclose(ours.to_numpy(), brute.reindex(ours.index).to_numpy(), rtol=1e-9)


def test_true_index_and_agreement_with_both_truths(setup):
    data, config, inputs, levels = setup
    zone = levels["zone"]
    score, _ = truth.true_index(data, inputs, zone.panel, zone.values.values, config, zone.nominal.weights)
    assert score.shape == (len(zone.panel.units),) and np.isfinite(score).all()
    assert score.min() >= 0 and score.max() <= 100
    figures = truth.agreements(data, inputs, zone.table(config), zone, config)
    assert {"spearman", "coverage", "true_index_spearman", "true_index_coverage"} <= set(figures)
    risk = truth.true_risk(data, inputs, zone.panel)
    from scipy.stats import spearmanr

    # the composite's estimand is related to, but not the same as, the incident risk
    assert 0.5 < spearmanr(score, risk).statistic < 0.999


def test_an_older_truth_file_gets_a_clear_error(setup, tmp_path):
    data, config, inputs, levels = setup
    (tmp_path / "truth").mkdir()
    tp = pd.read_parquet(data / truth.TRUTH_FILE)
    tp.drop(columns=["p_incident_violence", "p_incident_accident"]).to_parquet(tmp_path / truth.TRUTH_FILE)
    assert truth.has_truth(tmp_path) and not truth.has_composite_truth(tmp_path)
    city = levels["city"]
    with pytest.raises(
        KeyError, match="trip_probability.parquet.*p_incident_accident.*simulate the data again"
    ):
        truth.true_values(tmp_path, inputs, city.panel, city.values.values)
    shutil.rmtree(tmp_path / "truth")
