"""Training frames: keys, labels, flags, columns in model order, with and without optional trip columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.features.definitions import load_feature_set
from safetyml.features.frames import build_frame, frame_columns
from safetyml.tables import load_tables, tables_from_frames
from tests.test_features_data import make_tables, raw_frames


@pytest.fixture(scope="module")
def fs():
    return load_feature_set()


def test_incident_frame_has_keys_label_and_model_columns_in_order(fs):
    tables = make_tables(3)
    frame = build_frame("incident_risk", tables, fs, label_min_severity=1)
    cols = frame_columns("incident_risk", fs)
    assert list(frame.columns) == cols["keys"] + [cols["label"]] + cols["features"]
    assert len(frame) == len(tables.trips) and frame["trip_id"].is_unique
    requested = tables.trips.set_index("trip_id")["requested_at"]
    assert (frame["as_of"].to_numpy() == requested.loc[frame["trip_id"]].to_numpy()).all()
    assert str(frame["as_of"].dt.tz) == "UTC"
    assert frame["as_of"].is_monotonic_increasing
    for d in fs.for_task("incident_risk"):
        if d.kind == "categorical":
            assert list(frame[d.name].cat.categories) == d.categories
    # label: an incident linked to the trip with severity >= threshold, whenever it was reported
    for threshold in (1, 4):
        frame = build_frame("incident_risk", tables, fs, label_min_severity=threshold)
        inc = tables.incidents
        expected = set(inc.loc[inc["severity"] >= threshold, "trip_id"].dropna())
        assert set(frame.loc[frame["label"] == 1, "trip_id"]) == expected
        assert frame["label"].dtype == np.int64


def test_frame_works_without_the_optional_city_and_rain_columns(fs):
    with_city = build_frame("incident_risk", make_tables(5), fs)
    bare = build_frame("incident_risk", tables_from_frames(raw_frames(5, with_city=False)), fs)
    assert bare["trip_rain"].isna().all() and with_city["trip_rain"].notna().any()
    # the hand-made trips are in their merchant's city: deriving it from the merchant changes nothing else
    assert (bare["city"] == with_city["city"]).all()
    same = [c for c in with_city.columns if c not in ("trip_rain",)]
    pd.testing.assert_frame_equal(bare[same], with_city[same], check_dtype=False)


def test_merchant_credit_snapshots_labels_and_flags(fs):
    tables = make_tables(2)
    frame = build_frame("merchant_credit", tables, fs, horizon_days=30, min_history_days=100)
    cols = frame_columns("merchant_credit", fs)
    assert list(frame.columns) == cols["keys"] + ["label"] + cols["flags"] + cols["features"]
    assert (frame["as_of"].dt.day == 1).all() and (frame["as_of"].dt.hour == 0).all()
    merchants = tables.merchants.set_index("merchant_id")
    credit = tables.credit_events
    # the credit data end with the last ledger movement, credit event or trip (not late incident reports)
    last_event = max(
        tables.trips["requested_at"].max(), tables.merchant_ledger["event_at"].max(), credit["event_at"].max()
    )
    horizon = pd.Timedelta(days=30)
    for row in frame.itertuples():
        events = credit.loc[credit["merchant_id"] == row.merchant_id, "event_at"]
        assert merchants.loc[row.merchant_id, "onboarded_at"] < row.as_of
        assert not (events <= row.as_of).any()  # not scored after its credit event
        assert row.label == int(((events > row.as_of) & (events <= row.as_of + horizon)).any())
        assert row.label_mature == (row.as_of + horizon <= last_event)
        assert row.insufficient_history == (
            row.as_of - merchants.loc[row.merchant_id, "onboarded_at"] < pd.Timedelta(days=100)
        )
    assert frame["label"].sum() >= 1 and frame["insufficient_history"].any()
    # m1 defaults on day 20 of the data: it has a positive snapshot, then disappears
    m1 = frame[frame["merchant_id"] == "m1"]
    assert (
        m1["label"].iloc[-1] == 1
        and m1["as_of"].max() < credit.loc[credit["merchant_id"] == "m1", "event_at"].min()
    )


@pytest.mark.slow
def test_frames_on_the_simulated_platform(fs, small_data_dir):
    tables = load_tables(small_data_dir)
    frame = build_frame("incident_risk", tables, fs)
    assert len(frame) == len(tables.trips)
    linked = set(tables.incidents["trip_id"].dropna())
    assert frame["label"].sum() == frame["trip_id"].isin(linked).sum() > 0
    counts = [
        d.name for d in fs.for_task("incident_risk") if d.agg == "count" and d.entity in ("rider", "merchant")
    ]
    assert frame[counts].notna().all().all()
    rate = frame["pickup_zone_incident_rate_90d"]
    assert rate.notna().mean() > 0.99  # missing only before the city's first trip (no prior yet)
    assert rate.dropna().between(0, 1000).all() and rate.std() > 0
    credit = build_frame("merchant_credit", tables, fs)
    assert credit["label_mature"].any() and credit.loc[credit["label_mature"], "label"].sum() > 0


def test_frames_without_the_optional_tables_and_without_incidents(fs):
    raw = raw_frames(1)
    del raw["merchant_ledger"], raw["credit_events"]
    raw["incidents"] = raw["incidents"].iloc[:0]
    tables = tables_from_frames(raw)
    frame = build_frame("incident_risk", tables, fs)
    assert len(frame) == 80 and frame["label"].sum() == 0 and (frame["rider_incidents_30d"] == 0).all()
    credit = build_frame("merchant_credit", tables, fs)
    assert len(credit) > 0 and credit["label"].sum() == 0
    assert (credit["merchant_sales_30d"] == 0).all() and credit["merchant_sales_volatility_30d"].isna().all()


def test_request_features_use_each_citys_time_zone_and_the_usual_order_values(fs):
    from safetyml.features.request import trip_request_features

    requests = pd.DataFrame(
        {
            "requested_at": pd.to_datetime(["2026-01-01T03:00Z"] * 3, utc=True),
            "city": ["sao_paulo", "mexico_city", None],
            "distance_km": [1.0, 2.0, 3.0],
            "order_value": [100.0, 50.0, 10.0],
            "payment_method": ["cash", "card", "bitcoin"],
        }
    )
    references = {r for d in fs.entity_features("trip") for r in d.spec.references}
    rider = pd.DataFrame({r: [np.nan] * 3 for r in references if r.startswith("rider_")})
    merchant = pd.DataFrame({r: [np.nan] * 3 for r in references if r.startswith("merchant_")})
    rider["rider_order_value_mean_90d"] = [50.0, np.nan, 0.0]
    merchant["merchant_order_value_mean_90d"] = [200.0, 25.0, 10.0]
    # the rider's last-day orders: mean 80, std 10 → z = (100 - 80) / 10; no spread → missing
    rider["rider_trips_order_value_mean_1d"] = [80.0, 50.0, 10.0]
    rider["rider_trips_order_value_std_1d"] = [10.0, 0.0, np.nan]
    # usual hours: always 00:00 (cos 1, sin 0), always 06:00 (cos 0, sin 1)
    rider["rider_usual_hour_cos_mean_30d"] = [1.0, 0.0, 1.0]
    rider["rider_usual_hour_sin_mean_30d"] = [0.0, 1.0, 0.0]
    out = trip_request_features(requests, rider, merchant, fs)
    assert list(out.columns) == [d.name for d in fs.entity_features("trip")]
    # 03:00 UTC is 00:00 in São Paulo (UTC-3, night) and 21:00 the day before in Mexico City (UTC-6)
    assert out["trip_local_hour"].tolist()[:2] == [0.0, 21.0] and np.isnan(out["trip_local_hour"].iloc[2])
    assert out["trip_weekday"].tolist()[:2] == [3.0, 2.0]  # Thursday, Wednesday
    assert out["trip_night"].tolist()[:2] == [1.0, 0.0]
    np.testing.assert_allclose(out["trip_order_value_vs_rider"], [2.0, np.nan, np.nan])
    np.testing.assert_allclose(out["trip_order_value_vs_merchant"], [0.5, 2.0, 1.0])
    assert out["trip_payment_method"].tolist()[:2] == ["cash", "card"] and pd.isna(
        out["trip_payment_method"].iloc[2]
    )
    assert out["trip_rain"].isna().all()
    np.testing.assert_allclose(out["trip_order_value_z_rider_1d"], [2.0, np.nan, np.nan])
    # 00:00 local vs always 00:00 → 1; 21:00 vs always 06:00 (15 hours apart) → cos(15/24 · 2π)
    np.testing.assert_allclose(
        out["trip_hour_affinity_rider"], [1.0, np.cos(2 * np.pi * 15 / 24), np.nan], atol=1e-12
    )
