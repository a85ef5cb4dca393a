"""The simulator's latent truth is real: hot zones, emerging drift and trip probabilities show in the data."""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from safetyml.tables import load_tables


@pytest.fixture(scope="module")
def data(small_data_dir):
    tables = load_tables(small_data_dir)
    truth = {
        n: pd.read_parquet(small_data_dir / "truth" / f"{n}.parquet")
        for n in ("trip_probability", "hot_zones", "zones", "merchant_default")
    }
    trips = tables.trips.copy()
    trips["pickup_h3"] = [
        h3.latlng_to_cell(a, b, 8) for a, b in zip(trips["pickup_lat"], trips["pickup_lng"], strict=False)
    ]
    trips["dropoff_h3"] = [
        h3.latlng_to_cell(a, b, 8) if a == a else None
        for a, b in zip(trips["dropoff_lat"], trips["dropoff_lng"], strict=False)
    ]
    trips["incident"] = trips["trip_id"].isin(set(tables.incidents["trip_id"].dropna()))
    return tables, truth, trips


def _touches(trips: pd.DataFrame, hot: pd.DataFrame, active_only: bool = True) -> np.ndarray:
    out = np.zeros(len(trips), dtype=bool)
    t = trips["requested_at"]
    for row in hot.itertuples():
        in_zone = (trips["pickup_h3"] == row.h3) | (trips["dropoff_h3"] == row.h3)
        active = (t >= row.start) & (t < row.end) if active_only else True
        out |= (in_zone & active).to_numpy()
    return out


def test_truth_files_have_the_documented_shape(data):
    tables, truth, _ = data
    assert set(truth["hot_zones"]["kind"]) == {"planted", "emerging"}
    assert set(truth["hot_zones"]["city"]) == set(tables.trips["city"])
    assert truth["hot_zones"]["multiplier"].between(3, 5).all()
    assert str(truth["hot_zones"]["start"].dtype) == "datetime64[ns, UTC]"
    assert truth["zones"]["h3"].map(h3.get_resolution).eq(8).all()
    assert truth["zones"].groupby("city").size().min() >= 300
    tp = truth["trip_probability"]
    assert (tp["trip_id"].to_numpy() == tables.trips["trip_id"].to_numpy()).all()
    assert ((tp["p_incident_severe"] <= tp["p_incident"]) & tp["p_incident"].between(0, 1)).all()


def test_planted_hot_zones_have_higher_incident_rates(data):
    _, truth, trips = data
    hot = _touches(trips, truth["hot_zones"])
    assert hot.sum() > 500
    ratio = trips.loc[hot, "incident"].mean() / trips.loc[~hot, "incident"].mean()
    assert ratio > 1.5, ratio


def test_emerging_hot_zone_rate_rises_after_its_start(data):
    _, truth, trips = data
    emerging = truth["hot_zones"][truth["hot_zones"]["kind"] == "emerging"]
    assert emerging["start"].nunique() == 1
    inside = _touches(trips, emerging, active_only=False)
    after = (trips["requested_at"] >= emerging["start"].iloc[0]).to_numpy()
    before_rate = trips.loc[inside & ~after, "incident"].mean()
    after_rate = trips.loc[inside & after, "incident"].mean()
    assert after_rate > 1.5 * before_rate, (before_rate, after_rate)


def test_true_probability_matches_the_observed_rate_and_ranks_incidents(data):
    tables, truth, trips = data
    p = truth["trip_probability"]["p_incident"].to_numpy()
    observed = trips["incident"].mean()
    assert 0.008 < p.mean() < 0.03
    se = np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(observed - p.mean()) < 4 * se + 0.001
    assert roc_auc_score(trips["incident"], p) > 0.7
    severe_trips = set(tables.incidents.loc[tables.incidents["severity"] >= 3, "trip_id"].dropna())
    severe = trips["trip_id"].isin(severe_trips)
    p_sev = truth["trip_probability"]["p_incident_severe"].to_numpy()
    assert abs(severe.mean() - p_sev.mean()) < 4 * np.sqrt((p_sev * (1 - p_sev)).sum()) / len(p_sev) + 0.001


def test_night_incidents_lean_to_robbery_and_assault(data):
    tables, _, trips = data
    inc = tables.incidents.dropna(subset=["trip_id"]).merge(trips[["trip_id", "city"]], on="trip_id")
    hour = inc["occurred_at"].dt.tz_convert("America/Sao_Paulo").dt.hour
    night = hour.isin([23, 0, 1, 2, 3, 4])
    violent = inc["type"].isin(["robbery", "assault"])
    assert violent[night].mean() > violent[~night].mean()
