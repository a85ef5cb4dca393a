"""Online store: parity with the offline frames, cold start, metadata and lookup speed."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from safetyml.features.definitions import load_feature_set
from safetyml.features.engine import FeatureEngine
from safetyml.features.frames import assemble_trip_features, build_frame
from safetyml.features.online import OnlineStore, materialize
from safetyml.features.zones import cells_of
from safetyml.tables import load_tables
from tests.test_features_data import make_tables


@pytest.fixture(scope="module")
def fs():
    return load_feature_set()


def _assert_same(online: pd.DataFrame, offline: pd.DataFrame, what: str) -> None:
    assert list(online.index) == list(offline.index), what
    for column in offline.columns:
        a, b = online[column], offline[column]
        if isinstance(b.dtype, pd.CategoricalDtype) or b.dtype == object or pd.api.types.is_string_dtype(b):
            assert (
                a.astype("object").where(a.notna(), None).tolist()
                == b.astype("object").where(b.notna(), None).tolist()
            ), f"{what}: {column}"
        else:
            np.testing.assert_allclose(
                a.to_numpy(float), b.to_numpy(float), rtol=1e-9, equal_nan=True, err_msg=f"{what}: {column}"
            )


def test_store_matches_offline_features_at_the_same_as_of(fs, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    tables = make_tables(4)
    engine = FeatureEngine(tables, fs)
    frame = build_frame("incident_risk", tables, fs, engine=engine)
    features = [d.name for d in fs.for_task("incident_risk")]
    for row in (10, 45, 70):
        T = frame["as_of"].iloc[row]
        with OnlineStore.open() as store:
            meta = materialize(tables, fs, as_of=T, store=store, engine=engine)
            assert meta["version"] == fs.version and pd.Timestamp(meta["as_of"]) == T
            assert meta["rows"]["rider"] == len(tables.riders) and meta["rows"]["merchant"] == len(
                tables.merchants
            )
            # every rider and merchant vector equals the engine's offline value at T
            for entity, key in (("rider", "rider_id"), ("merchant", "merchant_id")):
                ids = tables.get(entity + "s")[key].astype(str).tolist()
                offline = engine.compute(entity, ids, T).set_axis(ids)
                _assert_same(store.get(entity, ids), offline, f"{entity} at {T}")
            # the trip requested at T: the model input assembled online equals its training row
            trip = tables.trips[tables.trips["trip_id"] == frame["trip_id"].iloc[row]]
            online = assemble_trip_features(trip, store, fs)
            assert not online["cold_start"].iloc[0]
            offline = frame.iloc[[row]][features].set_axis(online.index)
            _assert_same(online[features], offline, f"trip {trip['trip_id'].iloc[0]}")


@pytest.mark.slow
def test_parity_on_the_simulated_platform(fs, small_data_dir, tmp_path):
    tables = load_tables(small_data_dir)
    engine = FeatureEngine(tables, fs)
    frame = build_frame("incident_risk", tables, fs, engine=engine)
    features = [d.name for d in fs.for_task("incident_risk")]
    rows = frame.iloc[[len(frame) // 2, len(frame) - 10]]
    for _, row in rows.iterrows():
        with OnlineStore.open(tmp_path / "store.sqlite") as store:
            materialize(tables, fs, as_of=row["as_of"], store=store, engine=engine)
            trip = tables.trips[tables.trips["trip_id"] == row["trip_id"]]
            online = assemble_trip_features(trip, store, fs)
            _assert_same(online[features], row.to_frame().T[features].set_axis(online.index), row["trip_id"])


def test_cold_start_defaults_for_unknown_rider_merchant_and_zone(fs, tmp_path):
    tables = make_tables(4)
    with OnlineStore.open(tmp_path / "store.sqlite") as store:
        materialize(tables, fs, store=store)
        known = tables.trips.iloc[[5]].copy()
        unknown = known.assign(
            rider_id="nobody",
            merchant_id="nowhere",
            city="sao_paulo",
            pickup_lat=-23.9,
            pickup_lng=-46.1,
            dropoff_lat=np.nan,
            dropoff_lng=np.nan,
        )
        out = assemble_trip_features(pd.concat([known, unknown], ignore_index=True), store, fs)
        city = store.get("city", ["sao_paulo"]).iloc[0]
    assert out["cold_start"].tolist() == [False, True]
    cold = out.iloc[1]
    assert (
        cold["rider_trips_count_30d"] == 0
        and cold["merchant_incidents_30d"] == 0
        and cold["pickup_zone_trips_30d"] == 0
    )
    assert np.isnan(cold["rider_tenure_days"]) and pd.isna(cold["rider_vehicle_type"])
    # an unseen cell is shrunk all the way to the city rate; a missing drop-off takes the city's zone values
    assert cold["pickup_zone_incident_rate_30d"] == pytest.approx(city["zone_incident_rate_30d"])
    assert cold["dropoff_zone_incident_rate_30d"] == pytest.approx(city["zone_incident_rate_30d"])
    assert np.isnan(cold["dropoff_zone_trips_30d"])
    assert out["trip_order_value"].tolist() == [known["order_value"].iloc[0]] * 2


def test_lookup_by_id_takes_under_a_millisecond(fs, tmp_path):
    tables = make_tables(4)
    with OnlineStore.open(tmp_path / "store.sqlite") as store:
        materialize(tables, fs, store=store)
        ids = tables.riders["rider_id"].tolist()
        cell = cells_of(tables.trips["pickup_lat"], tables.trips["pickup_lng"]).iloc[0]
        assert store.get_one("zone", cell) is not None and store.get_one("rider", "nobody") is None
        timings = {"get_one": [], "get": []}
        for i in range(300):
            start = time.perf_counter()
            store.get_one("rider", ids[i % len(ids)])
            timings["get_one"].append(time.perf_counter() - start)
            start = time.perf_counter()
            store.get("merchant", ["m1"])
            timings["get"].append(time.perf_counter() - start)
    assert np.median(timings["get_one"]) < 1e-3
    assert np.median(timings["get"]) < 1e-3
