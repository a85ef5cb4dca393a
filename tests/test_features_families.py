"""Families, delay-aligned rates, pairs and request deviations: expansion, errors, a row-by-row reference,
the range-maximum helper against pandas, and online/offline parity (frame row == real-time row)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml import paths
from safetyml.cli import app
from safetyml.features.definitions import FeatureDefinitionError, load_feature_set, pair_id
from safetyml.features.engine import FeatureEngine, RangeMax
from safetyml.features.frames import assemble_trip_features, build_frame
from safetyml.features.online import OnlineStore, materialize
from safetyml.features.online_rows import assemble_trip_rows
from tests.test_features_data import make_tables
from tests.test_features_engine import DAY, Reference, _compare, _nearest_city, _query_times

HOUR = pd.Timedelta(hours=1)
H = 7 * DAY  # the rates' horizon: training/incident_risk.yaml split.label_lag_days


@pytest.fixture(scope="module")
def fs():
    return load_feature_set()


@pytest.fixture()
def features_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "features"
    shutil.copytree(paths.features_dir(), folder)
    return folder


# ---------------------------------------------------------------------------------------------- expansion


def test_a_family_expands_into_named_grouped_and_described_columns(fs):
    names = [d.name for d in fs.definitions if d.family == "rider_trips"]
    assert names[:5] == [f"rider_trips_count_{w}" for w in ("1h", "1d", "7d", "30d", "90d")]
    assert "rider_trips_order_value_std_30d" in names and "rider_trips_order_value_std_1h" not in names
    assert "rider_trips_distinct_merchants_7d" in names
    mean = fs.get("rider_trips_order_value_mean_7d")
    assert mean.group == "rider_trips_order_value_mean" and mean.family == "rider_trips"
    assert mean.format == "money" and mean.window == "7d"
    assert mean.describe(12.5) == "the mean order value of trips by this rider in the last 7 days was 12.50"
    assert fs.get("rider_trips_count_1h").describe(3) == "3 trips by this rider in the last hour"
    assert fs.get("rider_trips_count_1h").window_ns == 3600 * 10**9
    assert fs.get("merchant_orders_distinct_riders_1d").describe(4) == (
        "4 different riders among orders at this merchant in the last day"
    )
    rate = fs.get("merchant_incident_rate_7d")
    assert rate.horizon == "7d" and rate.describe(0.02).startswith(
        "2% of this merchant's orders in the 7 days"
    )
    assert fs.get("pair_incident_rate_pending").variant == "pending"
    assert "pickup_zone_mature_incident_rate_30d" in [d.name for d in fs.for_task("incident_risk")]


def test_the_rate_horizon_defaults_to_the_tasks_label_lag(tmp_path):
    folder = tmp_path / "project"
    shutil.copytree(paths.features_dir(), folder / "features")
    shutil.copytree(paths.training_dir(), folder / "training")
    config = folder / "training" / "incident_risk.yaml"
    before = load_feature_set(folder / "features")
    config.write_text(config.read_text().replace("label_lag_days: 7", "label_lag_days: 3"))
    after = load_feature_set(folder / "features")
    assert after.get("rider_incident_rate_30d").horizon == "3d"
    assert after.version != before.version  # the resolved horizon is part of the definitions


def test_features_list_shows_a_familys_expansion():
    runner = CliRunner()
    result = runner.invoke(app, ["features", "list", "--family", "rider_trips"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "rider_trips_order_value_max_90d" in result.output and "rider_incidents_30d" not in result.output
    assert "family rider_trips" in result.output
    result = runner.invoke(app, ["features", "list", "--family", "nope"])
    assert result.exit_code == 2 and "rider_trips" in result.output


FAMILY = """
  - family: rider_probe
    source: trips
    of: "probe trips"
    windows: [1d]
    aggs: [count]
"""


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("aggs: [count]", "aggs: [count, mean]"), "values"),
        (("aggs: [count]", "aggs: [count]\n    values: {order_value: {words: value}}"), "values"),
        (("aggs: [count]", "aggs: [distinct]"), "distinct"),
        (("aggs: [count]", "aggs: [count]\n    distinct: {merchant_id: merchants}"), "distinct"),
        (
            ("aggs: [count]", "aggs: [sum]\n    values: {payment_method: {words: method}}"),
            "values.payment_method",
        ),
        (("aggs: [count]", "aggs: [count]\n    agg_windows: {std: [7d]}"), "agg_windows"),
        (("aggs: [count]", "aggs: [median]"), "aggs"),
        (("windows: [1d]", "windows: [1w]"), "windows"),
        (("source: trips", "source: merchant_ledger"), "source"),
        (("aggs: [count]", "aggs: [count]\n    where: {colour: red}"), "where.colour"),
    ],
)
def test_an_invalid_family_names_the_file_the_family_and_the_field(features_copy: Path, change, field):
    path = features_copy / "rider.yaml"
    text = path.read_text().replace("families:\n", "families:" + FAMILY.replace(*change), 1)
    path.write_text(text)
    with pytest.raises(FeatureDefinitionError) as info:
        load_feature_set(features_copy)
    message = str(info.value)
    assert str(path) in message and "family 'rider_probe'" in message and field in message


def test_a_rate_refuses_a_prior_outside_zones_and_deviations_need_their_refs(features_copy: Path):
    path = features_copy / "rider.yaml"
    original = path.read_text()
    path.write_text(original.replace("    pending: false", "    prior_trips: 10\n    pending: false"))
    with pytest.raises(FeatureDefinitionError, match="rider_incident_rate.*prior_trips"):
        load_feature_set(features_copy)
    path.write_text(original)
    trip = features_copy / "trip.yaml"
    trip.write_text(trip.read_text().replace("rider_usual_distance_km_std_30d]", "rider_nothing_30d]"))
    with pytest.raises(FeatureDefinitionError, match="trip_distance_z_rider.*refs.*rider_nothing_30d"):
        load_feature_set(features_copy)


# ---------------------------------------------------------------------------------------------- reference


class FamilyReference(Reference):
    """Row-by-row pandas definitions of the new aggregations (written from the docs, not the engine)."""

    def __init__(self, tables, floor):
        super().__init__(tables, floor)
        self.trip_frame = pd.DataFrame(self.trips)
        trip_time = dict(zip(self.trip_frame["trip_id"], self.trip_frame["requested_at"], strict=True))
        for r in self.incidents:  # event time: the linked trip's request, else when it happened
            r["event_t"] = trip_time.get(r["trip_id"], r["occurred_at"])
        self.incident_frame = pd.DataFrame(self.incidents)

    def _window(self, frame, T, w):
        t = frame["requested_at"]
        return frame[(t >= T - w) & (t < T)] if w is not None else frame[t < T]

    def _rate(self, trips, incidents, T, w):
        lo = T - H - w if w is not None else pd.Timestamp.min.tz_localize("UTC")
        n = ((trips["requested_at"] >= lo) & (trips["requested_at"] < T - H)).sum()
        known = incidents[(incidents["reported_at"] <= T)]
        k = ((known["event_t"] >= lo) & (known["event_t"] < T - H)).sum()
        return k / n if n else np.nan

    def profile(self, prefix, key, value_id, T, windows, distinct):
        trips = self.trip_frame[self.trip_frame[key] == value_id]
        incidents = self.incident_frame[self.incident_frame[key] == value_id]
        out = {}
        for w in windows:
            x = self._window(trips, T, w)["order_value"]
            name = w.days and f"{w.days}d" or "1h"
            out[f"{prefix}_count_{name}"] = len(x)
            out[f"{prefix}_order_value_sum_{name}"] = x.sum()
            out[f"{prefix}_order_value_mean_{name}"] = x.mean() if len(x) else np.nan
            out[f"{prefix}_order_value_max_{name}"] = x.max() if len(x) else np.nan
            if name in ("1d", "7d", "30d"):
                out[f"{prefix}_order_value_std_{name}"] = x.std(ddof=1) if len(x) >= 2 else np.nan
                out[f"{prefix}_distinct_{distinct}_{name}"] = self._window(trips, T, w)[
                    "merchant_id" if distinct == "merchants" else "rider_id"
                ].nunique()
        rate = "rider_incident_rate" if prefix == "rider_trips" else "merchant_incident_rate"
        for days in (1, 7, 30, 90):
            out[f"{rate}_{days}d"] = self._rate(trips, incidents, T, days * DAY)
        # only the columns the default YAML declares (e.g. no 1-hour maximum, no 1-day rider rate)
        return {k: v for k, v in out.items() if k in self.wanted}

    def pair(self, rider_id, merchant_id, T):
        trips = self.trip_frame[
            (self.trip_frame["rider_id"] == rider_id) & (self.trip_frame["merchant_id"] == merchant_id)
        ]
        inc = self.incident_frame
        incidents = inc[(inc["rider_id"] == rider_id) & (inc["merchant_id"] == merchant_id)]
        return {
            "pair_trips": (trips["requested_at"] < T).sum(),
            "pair_recent_trips_30d": len(self._window(trips, T, 30 * DAY)),
            "pair_incidents": (incidents["reported_at"] <= T).sum(),
            "pair_incident_rate": self._rate(trips, incidents, T, None),
            "pair_incident_rate_pending": len(self._window(trips, T, H)),
        }

    def mature_zone(self, cell, T):
        """zone_mature_incident_rate_30d of one cell and its ring, shrunk to the city rate (prior 2,000)."""
        lo, hi = T - H - 30 * DAY, T - H

        def counts(inside):
            n = sum(
                sum(inside(c) for c in {r["pickup"], r["dropoff"]} - {None})
                for r in self.trips
                if lo <= r["requested_at"] < hi
            )
            k = sum(
                1
                for r in self.incidents
                if r["cell"] and inside(r["cell"]) and lo <= r["event_t"] < hi and r["reported_at"] <= T
            )
            return n, k

        import h3

        home = _nearest_city(cell)
        N, K = counts(lambda c: _nearest_city(c) == home)
        m = K / N if N else np.nan
        out = {}
        for name, cells in (("zone", {cell}), ("ring", set(h3.grid_disk(cell, 1)))):
            n = sum(counts(lambda c, one=one: c == one)[0] for one in cells)
            k = sum(counts(lambda c, one=one: c == one)[1] for one in cells)
            out[f"{name}_mature_incident_rate_30d"] = 1000 * (k + 2000 * m) / (n + 2000)
        return out


@pytest.mark.parametrize("seed", [0, 1])
def test_new_aggregations_match_a_row_by_row_reference(fs, seed):
    tables = make_tables(seed, n_trips=90, days=60)
    engine = FeatureEngine(tables, fs)
    ref = FamilyReference(tables, None)
    ref.wanted = {d.name for d in fs.definitions}
    riders, merchants = tables.riders["rider_id"].tolist(), tables.merchants["merchant_id"].tolist()
    windows = [HOUR, DAY, 7 * DAY, 30 * DAY, 90 * DAY]
    trip_times = tables.trips["requested_at"].sort_values()
    times = _query_times(tables) + [
        trip_times.iloc[40] + HOUR,
        trip_times.iloc[60] + pd.Timedelta(minutes=30),
    ]
    pairs = [(r, m) for r in riders for m in merchants]
    cells = sorted({r["pickup"] for r in ref.trips})[:5]
    checked = 0
    for T in times:
        expected = [ref.profile("rider_trips", "rider_id", r, T, windows, "merchants") for r in riders]
        _compare(engine.compute("rider", riders, T), expected, f"riders at {T}")
        expected_m = [
            ref.profile("merchant_orders", "merchant_id", m, T, windows, "riders") for m in merchants
        ]
        _compare(engine.compute("merchant", merchants, T), expected_m, f"merchants at {T}")
        expected_p = [ref.pair(r, m, T) for r, m in pairs]
        _compare(engine.compute("pair", [pair_id(r, m) for r, m in pairs], T), expected_p, f"pairs at {T}")
        expected_z = [ref.mature_zone(c, T) for c in cells]
        _compare(
            engine.compute("zone", cells, T, city=["sao_paulo"] * len(cells)), expected_z, f"zones at {T}"
        )
        for rows in (expected, expected_m, expected_p, expected_z):
            checked += sum(v > 0 for row in rows for v in row.values() if not np.isnan(v))
    assert checked > 1500  # the comparison saw real, non-zero values of every kind


def test_range_max_equals_pandas_rolling_max():
    rng = np.random.default_rng(3)
    x = np.where(rng.random(5000) < 0.05, -np.inf, rng.normal(size=5000))
    start = rng.integers(0, 5000, 3000)
    end = np.minimum(start + rng.geometric(0.02, 3000) - 1, 5000)
    got = RangeMax(x).query(start, end)
    want = np.array([x[s:e].max() if e > s else -np.inf for s, e in zip(start, end, strict=True)])
    np.testing.assert_array_equal(got, want)
    # the engine's windowed max at each trip's own request time = pandas' time-based rolling max, closed left
    tables = make_tables(2, n_trips=300, days=20)
    trips = tables.trips.sort_values("requested_at", kind="stable").reset_index(drop=True)
    rolled = (
        trips.set_index("requested_at")
        .groupby("rider_id")["order_value"]
        .rolling("1D", closed="left")
        .max()
        .reset_index()
    )
    engine = FeatureEngine(tables, load_feature_set())
    ours = engine.compute("rider", trips["rider_id"], trips["requested_at"])["rider_trips_order_value_max_1d"]
    merged = trips[["rider_id", "requested_at"]].assign(ours=ours.to_numpy())
    merged = merged.merge(rolled, on=["rider_id", "requested_at"])
    assert len(merged) >= len(trips) and merged["order_value"].notna().sum() > 100
    np.testing.assert_allclose(merged["ours"], merged["order_value"], equal_nan=True)


# ---------------------------------------------------------------------------------------------- parity


def _request(trip: pd.Series) -> SimpleNamespace:
    fields = ["rider_id", "merchant_id", "requested_at", "distance_km", "order_value", "payment_method"]
    values = {k: trip[k] for k in fields}
    values["requested_at"] = pd.Timestamp(trip["requested_at"]).to_pydatetime()
    for key in ("pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng"):
        values[key] = None if pd.isna(trip[key]) else float(trip[key])
    values["rain"] = None if pd.isna(trip.get("rain")) else bool(trip["rain"])
    values["city"] = trip.get("city")
    return SimpleNamespace(**values)


def test_offline_frame_row_equals_both_online_assemblies(fs, tmp_path):
    """For the same trip and as_of: training frame row == DataFrame assembly == real-time row (deviations,
    pair, rates included); a rider and merchant never seen together get the engine's values for that pair."""
    tables = make_tables(7, n_trips=120, days=50)
    engine = FeatureEngine(tables, fs)
    frame = build_frame("incident_risk", tables, fs, engine=engine)
    features = [d.name for d in fs.for_task("incident_risk")]
    compared = 0
    for row in (50, 90, 115):
        T = frame["as_of"].iloc[row]
        trip = tables.trips[tables.trips["trip_id"] == frame["trip_id"].iloc[row]]
        with OnlineStore.open(tmp_path / f"store{row}.sqlite") as store:
            materialize(tables, fs, as_of=T, store=store, engine=engine)
            online = assemble_trip_features(trip, store, fs)[features]
            rows, _, _ = assemble_trip_rows([_request(trip.iloc[0])], store, fs)
            offline = frame.iloc[[row]][features].reset_index(drop=True)
            for name in features:
                a, b, c = offline[name].iloc[0], online[name].iloc[0], rows[0][name]
                if fs.get(name).kind == "categorical":
                    assert (None if pd.isna(a) else a) == (None if pd.isna(b) else b) == c, name
                else:
                    np.testing.assert_allclose([b, c], [a, a], rtol=1e-9, equal_nan=True, err_msg=name)
                    compared += not pd.isna(a)
            # an unseen pair: the store has no row; the engine's value for that pair id at T is the same
            seen = set(zip(tables.trips["rider_id"], tables.trips["merchant_id"], strict=True))
            rider, merchant = next(
                (r, m)
                for r in tables.riders["rider_id"]
                for m in tables.merchants["merchant_id"]
                if (r, m) not in seen
            )
            unseen = trip.assign(rider_id=rider, merchant_id=merchant)
            assert store.get_one("pair", pair_id(rider, merchant)) is None
            online = assemble_trip_features(unseen, store, fs)
            pair_names = [d.name for d in fs.entity_features("pair")]
            want = engine.compute("pair", [pair_id(rider, merchant)], T)[pair_names]
            _compare(online[pair_names].reset_index(drop=True), want.to_dict("records"), "unseen pair")
            assert online["pair_trips"].iloc[0] == 0
    assert compared > 150
