"""The simulator's files: byte-identical for a seed, different across seeds, and valid under the contract."""

from __future__ import annotations

import re

import h3
import numpy as np
import pandas as pd
import pytest

from safetyml.contract import TABLE_ORDER
from safetyml.simulate import PRESETS, simulate
from safetyml.simulate.presets import END
from safetyml.simulate.trips import _ids
from safetyml.simulate.world import build_cities, build_zones, make_ids
from safetyml.tables import load_tables

TRUTH = (
    "trip_probability",
    "merchant_default",
    "hot_zones",
    "zones",
    "rider_spells",
    "merchant_fronts",
    "zone_waves",
)
TRUTH_JSON = ("dynamics", "drift")


@pytest.fixture(scope="module")
def tables(small_data_dir):
    return load_tables(small_data_dir)


def _files(folder):
    return sorted(p.relative_to(folder) for ext in ("parquet", "json") for p in folder.rglob(f"*.{ext}"))


def test_same_seed_gives_byte_identical_files(small_data_dir, tmp_path):
    simulate(tmp_path, preset="small", seed=7, progress=False)
    files = _files(small_data_dir)
    assert files == _files(tmp_path)
    assert len(files) == len(TABLE_ORDER) + len(TRUTH) + len(TRUTH_JSON)
    for rel in files:
        assert (small_data_dir / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_different_seed_gives_different_data(small_data_dir, tmp_path):
    simulate(tmp_path, preset="small", seed=8, progress=False)
    names = ("trips.parquet", "incidents.parquet", "merchant_ledger.parquet", "truth/hot_zones.parquet")
    for name in (*names, "truth/rider_spells.parquet", "truth/zone_waves.parquet"):
        assert (small_data_dir / name).read_bytes() != (tmp_path / name).read_bytes(), name


def test_tables_pass_the_contract_with_nothing_quarantined(tables):
    assert tables.quarantined == {}
    for name, df in tables.items():
        assert len(df) > 0, name
        for col in df.columns:
            if str(df[col].dtype).startswith("datetime64"):
                assert str(df[col].dtype) == "datetime64[ns, UTC]", (name, col)


def test_sizes_ids_and_period_match_the_small_preset(tables):
    preset = PRESETS["small"]
    trips = tables.trips
    assert abs(len(trips) - preset.trips) < 0.02 * preset.trips
    assert len(tables.riders) == preset.riders and len(tables.merchants) == preset.merchants
    assert trips["requested_at"].min() >= preset.start and trips["requested_at"].max() < END
    assert trips["trip_id"].str.fullmatch(r"T\d{7}").all()
    assert tables.riders["rider_id"].str.fullmatch(r"R\d{6}").all()
    assert tables.merchants["merchant_id"].str.fullmatch(r"M\d{6}").all()
    assert tables.incidents["incident_id"].str.fullmatch(r"I\d{7}").all()
    assert trips["requested_at"].is_monotonic_increasing  # ids follow time
    assert trips.groupby("city")["trip_id"].size().idxmax() == "sao_paulo"


def test_riders_are_active_and_local_and_merchants_open(tables):
    trips = tables.trips
    riders = tables.riders.set_index("rider_id")
    merchants = tables.merchants.set_index("merchant_id")
    assert (trips["requested_at"].to_numpy() >= riders.loc[trips["rider_id"], "signup_at"].to_numpy()).all()
    assert (trips["city"].to_numpy() == riders.loc[trips["rider_id"], "city"].to_numpy()).all()
    assert (trips["city"].to_numpy() == merchants.loc[trips["merchant_id"], "city"].to_numpy()).all()
    assert (
        trips["requested_at"].to_numpy() >= merchants.loc[trips["merchant_id"], "onboarded_at"].to_numpy()
    ).all()
    closed = tables.credit_events.set_index("merchant_id")["event_at"]
    after = trips.merge(closed.rename("closed_at"), left_on="merchant_id", right_index=True)
    assert (after["requested_at"] < after["closed_at"]).all()
    joined_during = (riders["signup_at"] > PRESETS["small"].start).mean()
    assert 0.1 < joined_during < 0.4


def test_dropoffs_are_near_and_rarely_missing_and_rain_is_per_city_day(tables):
    trips = tables.trips
    missing = trips["dropoff_lat"].isna().mean()
    assert 0.005 < missing < 0.03
    assert (trips["dropoff_lat"].isna() == trips["dropoff_lng"].isna()).all()
    assert trips["distance_km"].between(0.2, 20).all()
    for city, tz in (("sao_paulo", "America/Sao_Paulo"), ("mexico_city", "America/Mexico_City")):
        rows = trips[trips["city"] == city]
        per_day = rows.groupby(rows["requested_at"].dt.tz_convert(tz).dt.date)["rain"].nunique()
        assert len(per_day) > 80 and (per_day == 1).all()
        assert 0.1 < rows.groupby(rows["requested_at"].dt.tz_convert(tz).dt.date)["rain"].first().mean() < 0.6
    cash = trips.groupby("city")["payment_method"].apply(lambda s: (s == "cash").mean())
    assert cash["mexico_city"] > cash["sao_paulo"]


def test_incidents_link_to_their_trip_and_include_off_trip_ones(tables):
    inc = tables.incidents
    on_trip = inc.dropna(subset=["trip_id"]).merge(tables.trips, on="trip_id", suffixes=("", "_trip"))
    assert len(on_trip) == inc["trip_id"].notna().sum()
    assert (on_trip["rider_id"] == on_trip["rider_id_trip"]).all()
    minutes = (on_trip["occurred_at"] - on_trip["requested_at"]).dt.total_seconds() / 60
    assert minutes.between(5, 45).all()
    off = inc[inc["trip_id"].isna()]
    assert len(off) > 0 and (off["rider_id"].isna() | off["merchant_id"].isna()).all()
    assert off["rider_id"].notna().any() and off["merchant_id"].notna().any()
    assert inc["severity"].isin([1, 2]).mean() > 0.5


def test_reporting_delay_is_realistic(tables):
    inc = tables.incidents
    delay = inc["reported_at"] - inc["occurred_at"]
    assert (delay >= pd.Timedelta(0)).all()
    assert (delay > pd.Timedelta(days=2)).mean() > 0.10
    assert delay.max() <= pd.Timedelta(days=45, minutes=30)
    assert pd.Timedelta(hours=6) < delay.median() < pd.Timedelta(days=3)


def test_demand_peaks_at_lunch_and_dinner_in_local_time(tables):
    trips = tables.trips
    for city, tz in (("sao_paulo", "America/Sao_Paulo"), ("mexico_city", "America/Mexico_City")):
        hour = trips.loc[trips["city"] == city, "requested_at"].dt.tz_convert(tz).dt.hour
        peak = hour.isin([11, 12, 13, 14, 18, 19, 20, 21, 22]).mean()
        small = hour.isin([3, 4, 5]).mean()
        assert peak > 0.5 and peak > 15 * small, city


def test_arrow_id_builder_matches_numpy_strings():
    numbers = np.array([0, 1, 42, 9_999_999, 1_234_567])
    assert _ids("T", numbers, 7).to_pylist() == list(make_ids("T", numbers, 7))
    assert all(re.fullmatch(r"T\d{7}", s) for s in _ids("T", numbers, 7).to_pylist())


def test_zone_snapping_agrees_with_h3():
    """Our nearest-centroid lookup (used instead of per-point H3 calls) must give H3's own cell."""
    city_list = build_cities()
    zones = build_zones(city_list, np.random.default_rng(0), PRESETS["small"].start)
    rng = np.random.default_rng(1)
    for ci, city in enumerate(city_list):
        rows = rng.choice(np.arange(zones.offsets[ci], zones.offsets[ci + 1]), 300)
        r, a = 0.25 * np.sqrt(rng.random(300)), rng.uniform(0, 2 * np.pi, 300)
        x, y = zones.x[rows] + r * np.cos(a), zones.y[rows] + r * np.sin(a)
        lat, lng = city.to_latlng(x, y)
        expected = [h3.latlng_to_cell(la, ln, 8) for la, ln in zip(lat, lng, strict=False)]
        assert list(zones.h3[zones.snap(ci, x, y)]) == expected
