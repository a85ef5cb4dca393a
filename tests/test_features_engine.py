"""The engine against a slow, obviously-correct row-by-row reference, and the point-in-time property."""

from __future__ import annotations

import math
from functools import cache
from zoneinfo import ZoneInfo

import h3
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safetyml import cities
from safetyml.features.definitions import load_feature_set, pair_id
from safetyml.features.engine import FeatureEngine
from safetyml.features.frames import build_frame
from safetyml.features.zones import cells_of
from safetyml.tables import Tables, tables_from_frames
from tests.test_features_data import START, make_tables, raw_frames

DAY = pd.Timedelta(days=1)
PRIOR = 2000.0  # zone.yaml prior_trips of zone_incident_rate


@pytest.fixture(scope="module")
def fs():
    return load_feature_set()


# ---------------------------------------------------------------------------------------------- reference


def _cell(lat: float, lng: float) -> str | None:
    if lat is None or lng is None or math.isnan(lat) or math.isnan(lng):
        return None
    return h3.latlng_to_cell(lat, lng, 8)


def _is_night(ts: pd.Timestamp, city: str) -> bool:
    hour = ts.tz_convert(ZoneInfo(cities.timezone_of(city))).hour
    return hour >= 22 or hour < 6


@cache
def _nearest_city(cell: str) -> str:
    lat, lng = h3.cell_to_latlng(cell)

    def dist(c):
        return (lat - c.lat) ** 2 + ((lng - c.lng) * math.cos(math.radians(lat))) ** 2

    return min(cities.registry().values(), key=dist).id


class Reference:
    """Plain loops over rows, written straight from the definitions in the docs."""

    def __init__(self, tables: Tables, floor: pd.Timedelta | None):
        self.t = tables
        self.floor = floor
        merchant_city = dict(zip(tables.merchants.merchant_id, tables.merchants.city, strict=True))
        rider_city = dict(zip(tables.riders.rider_id, tables.riders.city, strict=True))
        self.trips = []
        for r in tables.trips.to_dict("records"):
            city = r.get("city")
            if city is None or (isinstance(city, float) and math.isnan(city)):
                city = merchant_city[r["merchant_id"]]
            pickup = _cell(r["pickup_lat"], r["pickup_lng"])
            dropoff = _cell(r["dropoff_lat"], r["dropoff_lng"])
            self.trips.append({**r, "city": city, "pickup": pickup, "dropoff": dropoff})
        by_trip = {r["trip_id"]: r for r in self.trips}
        self.incidents = []
        for r in tables.incidents.to_dict("records"):
            trip = by_trip.get(r["trip_id"])
            city = trip["city"] if trip else None
            if city is None and isinstance(r["merchant_id"], str):
                city = merchant_city[r["merchant_id"]]
            if city is None:
                city = rider_city[r["rider_id"]] if isinstance(r["rider_id"], str) else None
            cell = _cell(r["lat"], r["lng"]) or (trip["pickup"] if trip else None)
            self.incidents.append({**r, "city": city, "cell": cell})
        self.ledger = tables.merchant_ledger.to_dict("records")

    # riders and merchants ---------------------------------------------------------------------
    def rider(self, rider_id: str, T: pd.Timestamp) -> dict[str, float]:
        trips = [r for r in self.trips if r["rider_id"] == rider_id]
        incs = [r for r in self.incidents if r["rider_id"] == rider_id]
        out: dict[str, float] = {}
        for w in (7, 30, 90):
            out[f"rider_trips_count_{w}d"] = sum(T - w * DAY <= r["requested_at"] < T for r in trips)
        for w in (30, 90):
            window = [r for r in trips if T - w * DAY <= r["requested_at"] < T]
            night = sum(_is_night(r["requested_at"], r["city"]) for r in window)
            out[f"rider_night_share_{w}d"] = night / len(window) if window else np.nan
            out[f"rider_incidents_{w}d"] = sum(T - w * DAY < r["reported_at"] <= T for r in incs)
        out["rider_severe_incidents_90d"] = sum(
            T - 90 * DAY < r["reported_at"] <= T and r["severity"] >= 3 for r in incs
        )
        known = [r["reported_at"] for r in incs if r["reported_at"] <= T]
        out["rider_days_since_incident"] = (T - max(known)) / DAY if known else np.nan
        signup = self.t.riders.set_index("rider_id").loc[rider_id, "signup_at"]
        out["rider_tenure_days"] = (T - signup) / DAY if signup <= T else np.nan
        values = [r["order_value"] for r in trips if T - 90 * DAY <= r["requested_at"] < T]
        out["rider_order_value_mean_90d"] = float(np.mean(values)) if values else np.nan
        return out

    def merchant(self, merchant_id: str, T: pd.Timestamp) -> dict[str, float]:
        led = [r for r in self.ledger if r["merchant_id"] == merchant_id]

        def total(kind: str, lo: pd.Timestamp | None) -> float:
            return sum(
                r["amount"]
                for r in led
                if r["kind"] == kind and (lo is None or lo <= r["event_at"]) and r["event_at"] < T
            )

        out: dict[str, float] = {}
        out["merchant_sales_30d"] = total("sale", T - 30 * DAY)
        s7, s30 = total("sale", T - 7 * DAY), total("sale", T - 30 * DAY)
        out["merchant_sales_trend_7d_30d"] = (s7 / 7) / (s30 / 30) if s30 > 0 else np.nan
        sales90 = total("sale", T - 90 * DAY)
        out["merchant_chargeback_rate_90d"] = (
            total("chargeback", T - 90 * DAY) / sales90 if sales90 > 0 else np.nan
        )
        out["merchant_advance_exposure"] = total("advance", None) - total("repayment", None)
        out["merchant_late_repayments_90d"] = sum(
            r["kind"] == "missed_repayment" and T - 90 * DAY <= r["event_at"] < T for r in led
        )
        # the 30 complete UTC days that ended at or before T (zero-sale days included)
        last_day = (T - DAY).floor("D")
        daily = []
        for i in range(30):
            day = last_day - i * DAY
            daily.append(
                sum(r["amount"] for r in led if r["kind"] == "sale" and day <= r["event_at"] < day + DAY)
            )
        mean = np.mean(daily)
        out["merchant_sales_volatility_30d"] = np.std(daily) / mean if mean > 0 else np.nan
        out["merchant_incidents_30d"] = sum(
            r["merchant_id"] == merchant_id and T - 30 * DAY < r["reported_at"] <= T for r in self.incidents
        )
        values = [
            r["order_value"]
            for r in self.trips
            if r["merchant_id"] == merchant_id and T - 90 * DAY <= r["requested_at"] < T
        ]
        out["merchant_order_value_mean_90d"] = float(np.mean(values)) if values else np.nan
        onboarded = self.t.merchants.set_index("merchant_id").loc[merchant_id, "onboarded_at"]
        out["merchant_tenure_days"] = (T - onboarded) / DAY
        return out

    # zones ------------------------------------------------------------------------------------
    def _zone_counts(self, cells: set[str] | None, city: str | None, T: pd.Timestamp, w: int):
        """(trip endpoints, incidents, night incidents) in cells (or in a city when cells is None)."""

        def inside(cell: str | None) -> bool:
            if cell is None:
                return False
            return cell in cells if cells is not None else _nearest_city(cell) == city

        n = 0
        for r in self.trips:
            if T - w * DAY <= r["requested_at"] < T:
                ends = {r["pickup"], r["dropoff"]} - {None}
                n += sum(inside(c) for c in ends)
        k = night = 0
        for r in self.incidents:
            if T - w * DAY < r["reported_at"] <= T and inside(r["cell"]):
                k += 1
                night += _is_night(r["occurred_at"], r["city"])
        return n, k, night

    def zone(self, cell: str | None, city: str, T: pd.Timestamp) -> dict[str, float]:
        if self.floor is not None:
            T = T.floor(self.floor)
        out: dict[str, float] = {}
        home = _nearest_city(cell) if cell else city
        for w in (30, 90):
            N, K, _ = self._zone_counts(None, home, T, w)
            prior = K / N if N else np.nan
            for prefix, cells in (("zone", {cell}), ("ring", set(h3.grid_disk(cell, 1)) if cell else None)):
                if cell is None:
                    out[f"{prefix}_trips_{w}d"] = np.nan
                    out[f"{prefix}_incident_rate_{w}d"] = 1000 * prior
                    continue
                n = sum(self._zone_counts({c}, None, T, w)[0] for c in cells)
                k = sum(self._zone_counts({c}, None, T, w)[1] for c in cells)
                out[f"{prefix}_trips_{w}d"] = n
                out[f"{prefix}_incident_rate_{w}d"] = 1000 * (k + PRIOR * prior) / (n + PRIOR)
        cells = {cell} if cell else None
        _, k, night = self._zone_counts(cells, None if cell else home, T, 90)
        out["zone_night_incident_share_90d"] = night / k if k else np.nan
        return out


def _query_times(tables: Tables) -> list[pd.Timestamp]:
    trips = tables.trips["requested_at"].sort_values()
    times = [trips.quantile(q).floor("s") for q in (0.2, 0.5, 0.9)]
    times.append(trips.iloc[len(trips) // 3])  # exactly a trip's time: that trip is not yet known
    times.append(tables.incidents["reported_at"].sort_values().iloc[len(tables.incidents) // 2])  # known
    times.append(pd.Timestamp("2026-01-25", tz="UTC"))  # midnight: whole days for daily volatility
    return times


def _compare(engine_values: pd.DataFrame, expected: list[dict[str, float]], what: str) -> None:
    expected_frame = pd.DataFrame(expected)
    for column in expected_frame.columns:
        got = engine_values[column].to_numpy(dtype="float64")
        want = expected_frame[column].to_numpy(dtype="float64")
        np.testing.assert_allclose(
            got, want, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=f"{what}: {column}"
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_engine_matches_row_by_row_reference(fs, seed):
    tables = make_tables(seed, n_trips=70, days=60)
    engine = FeatureEngine(tables, fs)
    floor = fs.entity_file("zone").as_of_floor
    ref = Reference(tables, pd.Timedelta(floor) if floor else None)
    riders = tables.riders["rider_id"].tolist()
    merchants = tables.merchants["merchant_id"].tolist()
    cells = sorted({r["pickup"] for r in ref.trips} | {r["dropoff"] for r in ref.trips if r["dropoff"]})
    neighbour = next(c for c in h3.grid_disk(cells[0], 1) if c not in cells)
    zone_ids = [*cells[:8], neighbour, None]
    zone_city = ["sao_paulo"] * (len(zone_ids) - 1) + ["mexico_city"]
    checked = 0
    for T in _query_times(tables):
        _compare(engine.compute("rider", riders, T), [ref.rider(r, T) for r in riders], f"riders at {T}")
        _compare(
            engine.compute("merchant", merchants, T),
            [ref.merchant(m, T) for m in merchants],
            f"merchants at {T}",
        )
        expected = [ref.zone(c, city, T) for c, city in zip(zone_ids, zone_city, strict=True)]
        _compare(engine.compute("zone", zone_ids, T, city=zone_city), expected, f"zones at {T}")
        checked += sum(v > 0 for row in expected for v in row.values() if not np.isnan(v))
    assert checked > 100  # the comparison saw real, non-zero values


# ---------------------------------------------------------------------------------------------- property


def _entity_features(
    engine: FeatureEngine, raw: dict[str, pd.DataFrame], T: pd.Timestamp, cells: list
) -> dict:
    pairs = [pair_id(r, m) for r in raw["riders"]["rider_id"] for m in raw["merchants"]["merchant_id"]]
    return {
        "rider": engine.compute("rider", raw["riders"]["rider_id"].tolist(), T),
        "merchant": engine.compute("merchant", raw["merchants"]["merchant_id"].tolist(), T),
        "pair": engine.compute("pair", pairs, T),
        "zone": engine.compute("zone", cells, T, city=["sao_paulo"] * len(cells)),
    }


def _perturb(raw: dict[str, pd.DataFrame], T: pd.Timestamp, data: st.DataObject) -> dict[str, pd.DataFrame]:
    """Add or change only facts that become known at or after T (incidents: strictly after)."""
    raw = {k: v.copy() for k, v in raw.items()}
    # at or after T, often exactly T (the boundary: a trip or ledger movement at T is not known at T)
    seconds = st.one_of(st.just(0), st.integers(0, 20 * 86400))
    trips = raw["trips"]
    # change trips requested at or after T
    later = trips.index[trips["requested_at"] >= T]
    for i in data.draw(st.lists(st.sampled_from(list(later)), max_size=3, unique=True)) if len(later) else []:
        trips.loc[i, "order_value"] = data.draw(st.floats(0, 500))
        trips.loc[i, "pickup_lat"] = trips.loc[i, "pickup_lat"] + data.draw(st.floats(-0.01, 0.01))
        trips.loc[i, "payment_method"] = data.draw(st.sampled_from(["card", "cash", "voucher"]))
    # new trips at or after T (exactly T included: a trip requested at T is not known at T)
    new = []
    for j in range(data.draw(st.integers(1, 4))):
        row = trips.iloc[data.draw(st.integers(0, len(trips) - 1))].to_dict()
        row.update(trip_id=f"new{j}", requested_at=T + pd.Timedelta(seconds=data.draw(seconds)))
        row["dropoff_lat"] = row["pickup_lat"] + data.draw(st.floats(-0.02, 0.02))
        new.append(row)
    raw["trips"] = pd.concat([trips, pd.DataFrame(new)], ignore_index=True) if new else trips
    incidents = raw["incidents"]
    # change incidents reported after T (even if they happened before T)
    later = incidents.index[incidents["reported_at"] > T]
    for i in data.draw(st.lists(st.sampled_from(list(later)), max_size=3, unique=True)) if len(later) else []:
        incidents.loc[i, "severity"] = data.draw(st.integers(1, 5))
        incidents.loc[i, "lat"] = np.nan
    # new incidents: happened any time up to T + 20 days, reported strictly after T
    new = []
    for j in range(data.draw(st.integers(0, 4))):
        trip = raw["trips"].iloc[data.draw(st.integers(0, len(raw["trips"]) - 1))]
        occurred = max(trip["requested_at"], T - pd.Timedelta(days=data.draw(st.integers(0, 10))))
        reported = max(occurred, T + pd.Timedelta(seconds=data.draw(st.integers(1, 86400 * 5))))
        new.append(
            {
                "incident_id": f"inew{j}",
                "trip_id": trip["trip_id"],
                "rider_id": trip["rider_id"],
                "merchant_id": trip["merchant_id"],
                "occurred_at": occurred,
                "reported_at": reported,
                "type": "robbery",
                "severity": data.draw(st.integers(1, 5)),
                "lat": trip["pickup_lat"],
                "lng": trip["pickup_lng"],
            }
        )
    raw["incidents"] = pd.concat([incidents, pd.DataFrame(new)], ignore_index=True) if new else incidents
    # ledger: new movements at or after T, and changed amounts of later ones
    ledger = raw["merchant_ledger"]
    later = ledger.index[ledger["event_at"] >= T]
    ledger.loc[later, "amount"] = ledger.loc[later, "amount"] * data.draw(st.floats(0, 3))
    new = [
        {
            "merchant_id": data.draw(st.sampled_from(["m0", "m1", "m2"])),
            "event_at": T + pd.Timedelta(seconds=data.draw(seconds)),
            "kind": data.draw(
                st.sampled_from(["sale", "chargeback", "advance", "repayment", "missed_repayment"])
            ),
            "amount": data.draw(st.floats(0, 5000)),
        }
        for _ in range(data.draw(st.integers(0, 4)))
    ]
    raw["merchant_ledger"] = pd.concat([ledger, pd.DataFrame(new)], ignore_index=True) if new else ledger
    return raw


@pytest.mark.slow
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(seed=st.integers(0, 10), t_frac=st.floats(0.1, 0.9), at_event=st.booleans(), data=st.data())
def test_events_known_after_T_do_not_change_features_at_T(seed, t_frac, at_event, data):
    fs = load_feature_set()
    raw = raw_frames(seed, n_trips=40, days=30)
    requested = raw["trips"]["requested_at"].sort_values()
    T = (
        requested.iloc[int(t_frac * len(requested))]
        if at_event
        else START + pd.Timedelta(seconds=int(t_frac * 30 * 86400))
    )
    base_tables = tables_from_frames({k: v.copy() for k, v in raw.items()})
    changed = _perturb(raw, T, data)
    changed_tables = tables_from_frames(changed)
    trips = changed_tables.trips
    cells = sorted(set(cells_of(trips["pickup_lat"], trips["pickup_lng"]).dropna())) + [None]
    engine_before, engine_after = FeatureEngine(base_tables, fs), FeatureEngine(changed_tables, fs)
    before = _entity_features(engine_before, raw, T, cells)
    after = _entity_features(engine_after, raw, T, cells)
    for entity in before:
        pd.testing.assert_frame_equal(before[entity], after[entity], check_exact=False, rtol=1e-9, obj=entity)
    # every training row of a trip requested before T is unchanged (its label may change: not a feature;
    # a trip requested exactly at T may itself be one of the changed facts)
    features = [d.name for d in fs.for_task("incident_risk")]
    frame_before = build_frame("incident_risk", base_tables, fs, engine=engine_before).set_index("trip_id")
    frame_after = build_frame("incident_risk", changed_tables, fs, engine=engine_after).set_index("trip_id")
    earlier = frame_before.index[frame_before["as_of"] < T]
    pd.testing.assert_frame_equal(
        frame_before.loc[earlier, features], frame_after.loc[earlier, features], check_exact=False, rtol=1e-9
    )


def test_zone_as_of_floor_computes_zones_as_of_the_start_of_the_hour(tmp_path):
    import shutil

    from safetyml import paths

    folder = tmp_path / "features"
    shutil.copytree(paths.features_dir(), folder)
    zone = folder / "zone.yaml"
    assert "\nas_of_floor: 1h\n" in zone.read_text()  # the default: zones refresh hourly
    zone.write_text(zone.read_text().replace("\nas_of_floor: 1h\n", "\n"))
    floored, exact = load_feature_set(), load_feature_set(folder)
    assert floored.entity_file("zone").as_of_floor == "1h"
    tables = make_tables(1)
    cells = cells_of(tables.trips["pickup_lat"], tables.trips["pickup_lng"]).tolist()
    T = tables.trips["requested_at"].iloc[50] + pd.Timedelta(seconds=1)  # trip 50 is in T's partial hour
    assert T.floor("h") <= tables.trips["requested_at"].iloc[50] < T
    got = FeatureEngine(tables, floored).compute("zone", cells, T, city=["sao_paulo"] * len(cells))
    want = FeatureEngine(tables, exact).compute("zone", cells, T.floor("h"), city=["sao_paulo"] * len(cells))
    pd.testing.assert_frame_equal(got, want)
    now = FeatureEngine(tables, exact).compute("zone", cells, T, city=["sao_paulo"] * len(cells))
    assert not now.equals(want)  # the trips of the last partial hour do count without the floor
