"""Zone aggregation, bands, hotspot flags, drivers, recovery metrics, GeoJSON and the offline HTML map."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import h3
import numpy as np
import pandas as pd
import pytest

from safetyml.batch.drivers import driver_inputs
from safetyml.batch.geo import cell_ring, zones_geojson
from safetyml.batch.recovery import recovery
from safetyml.batch.zone_config import ZoneConfig
from safetyml.batch.zone_map import ratio_colour, render_zone_map
from safetyml.batch.zones import (
    aggregate_zones,
    band_memberships,
    time_band,
    zone_evidence,
    zone_memberships,
    zone_table,
)
from tests.batch_support import StubFeatureSet, synthetic_frame, trained_model

CENTRE = h3.latlng_to_cell(-23.5505, -46.6333, 8)


def test_time_band_uses_each_citys_local_time():
    ts = pd.Series(
        pd.to_datetime(
            ["2026-09-10 23:30", "2026-09-10 12:00", "2026-09-11 03:00", "2026-09-10 12:00"], utc=True
        )
    )
    city = pd.Series(["sao_paulo", "sao_paulo", "mexico_city", "mexico_city"])
    # São Paulo is UTC-3 (20:30 and 09:00 local); Mexico City UTC-6 (21:00 and 06:00 local)
    assert time_band(ts, city, ZoneConfig()).tolist() == ["night", "day", "night", "day"]
    late = ZoneConfig(night_start_hour=22, night_end_hour=5)
    assert time_band(ts, city, late).tolist() == ["day", "day", "day", "day"]


def test_a_trip_counts_once_in_each_distinct_cell_it_touches():
    trips = pd.DataFrame({"pickup_h3": ["a", "b", "c"], "dropoff_h3": ["a", "c", None]})
    both = zone_memberships(trips, "both")
    assert sorted(map(tuple, both[["row", "h3"]].to_numpy().tolist())) == [
        (0, "a"),
        (1, "b"),
        (1, "c"),
        (2, "c"),
    ]
    assert zone_memberships(trips, "dropoff")["h3"].tolist() == ["a", "c"]
    assert zone_memberships(trips, "pickup")["h3"].tolist() == ["a", "b", "c"]


def _trips(n: int, seed: int, hot: list[str], cells: list[str], boost: float = 4.0) -> pd.DataFrame:
    """Trips between random cells; an incident is 4x as likely at each hot end (like the simulator)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(cells, n)
    drop = rng.choice(cells, n)
    p = rng.uniform(0.005, 0.015, n)
    p = p * np.where(np.isin(pick, hot), boost, 1.0) * np.where(np.isin(drop, hot), boost, 1.0)
    return pd.DataFrame(
        {
            "city": "sao_paulo",
            "pickup_h3": pick,
            "dropoff_h3": drop,
            "probability": p,
            "observed": (rng.random(n) < p).astype(int),
            "band": rng.choice(["day", "night"], n),
        }
    )


def test_aggregation_sums_and_the_all_band():
    cells = sorted(h3.grid_disk(CENTRE, 2))
    trips = _trips(2_000, 0, [], cells)
    config = ZoneConfig()
    members = band_memberships(trips, config)
    zones = aggregate_zones(trips, members)
    one = zone_memberships(trips, "both")
    for band in ("day", "night"):
        part = zones[zones["band"] == band]
        rows = one["row"].to_numpy()[trips["band"].to_numpy()[one["row"].to_numpy()] == band]
        assert part["trips"].sum() == len(rows)
        assert part["expected_incidents"].sum() == pytest.approx(trips["probability"].to_numpy()[rows].sum())
    by = zones.pivot_table(index="h3", columns="band", values="trips", aggfunc="sum")
    assert (by["all"] == by["day"] + by["night"]).all()
    assert (zones["expected_rate"] == zones["expected_incidents"] / zones["trips"]).all()


def test_hotspots_flag_a_planted_cluster_but_not_its_ordinary_neighbours():
    cells = sorted(h3.grid_disk(CENTRE, 6))
    hot = [CENTRE, sorted(set(h3.grid_disk(CENTRE, 1)) - {CENTRE})[0]]
    trips = _trips(150_000, 3, hot, cells)
    zones = zone_evidence(trips, ZoneConfig())
    everywhere = zones[zones["band"] == "all"].set_index("h3")
    flagged = set(everywhere.index[everywhere["flagged"]])
    assert flagged == set(hot)
    assert everywhere.loc[hot, "risk_ratio"].between(3.0, 5.5).all()  # planted 4x, recovered
    ring = sorted(set(h3.grid_disk(CENTRE, 1)) - set(hot))
    assert 0.8 < everywhere.loc[ring, "risk_ratio"].median() < 1.25  # neighbours are not blamed
    assert (everywhere.loc[ring, "risk_ratio"] < 2.0).all()
    assert everywhere.loc[ring, "hot_cluster"].any()  # ... though their Gi* neighbourhood is hot
    assert (everywhere.loc[hot, "tier"] == "very_high").all()
    with_gi = zone_evidence(trips, ZoneConfig(flag_test="own_or_gi"))
    assert set(hot) <= set(with_gi.loc[with_gi["flagged"] & (with_gi["band"] == "all"), "h3"])
    truth = pd.DataFrame(
        {
            "city": "sao_paulo",
            "h3": hot + ["8fffffffffffffff"],
            "start": pd.Timestamp("2026-01-01", tz="UTC"),
            "end": pd.Timestamp("2026-12-01", tz="UTC"),
            "multiplier": 4.0,
            "kind": ["planted", "planted", "emerging"],
        }
    )
    truth.loc[2, "start"] = pd.Timestamp("2026-11-20", tz="UTC")  # not active in the window
    got = recovery(zones, truth, pd.Timestamp("2026-09-01", tz="UTC"), pd.Timestamp("2026-09-08", tz="UTC"))
    assert got["planted_cells"] == 2 and got["recall"] == 1.0
    assert got["cluster_recall"] == 1.0


def test_zone_config_reads_yaml_and_rejects_bad_tiers(tmp_path):
    path = tmp_path / "zones.yaml"
    path.write_text("evidence: 28d\nflag_test: own_or_gi\nmin_trips: 5\n")
    config = ZoneConfig.from_yaml(path)
    assert (config.evidence, config.flag_test, config.min_trips) == ("28d", "own_or_gi", 5)
    assert config.tier_of(np.array([0.5, 1.0, 1.5, 2.2, 9.0])).tolist() == [
        "low",
        "normal",
        "elevated",
        "high",
        "very_high",
    ]
    path.write_text("tiers: [{name: a, min_ratio: 0}, {name: b, min_ratio: 0}]\n")
    with pytest.raises(ValueError, match="strictly increase"):
        ZoneConfig.from_yaml(path)


def test_recovery_counts_a_flagged_neighbour_as_a_false_positive():
    neighbour = sorted(set(h3.grid_disk(CENTRE, 1)) - {CENTRE})[0]
    zones = pd.DataFrame(
        {"city": "sao_paulo", "band": "all", "h3": [CENTRE, neighbour], "flagged": [True, True]}
    )
    truth = pd.DataFrame(
        {
            "city": ["sao_paulo"],
            "h3": [CENTRE],
            "start": [pd.Timestamp("2026-01-01", tz="UTC")],
            "end": [pd.Timestamp("2026-12-01", tz="UTC")],
            "multiplier": [3.0],
            "kind": ["planted"],
        }
    )
    got = recovery(zones, truth, pd.Timestamp("2026-09-01", tz="UTC"), pd.Timestamp("2026-09-08", tz="UTC"))
    assert got["recall"] == 1.0 and got["precision"] == 0.5 and got["precision_within_1"] == 1.0


@pytest.fixture(scope="module")
def scored_zones():
    """A real model on a synthetic window; one cell's trips have risky riders and many incidents."""
    frame = synthetic_frame(8_000, seed=4)
    model = trained_model(synthetic_frame(6_000, seed=5))
    cell = frame.loc[frame["city"] == "sao_paulo", "pickup_h3"].mode().iloc[0]
    risky = ((frame["pickup_h3"] == cell) | (frame["dropoff_h3"] == cell)).to_numpy()
    frame.loc[risky, "rider_incidents_30d"] += 3
    frame.loc[risky, "rider_incidents_90d"] += 4
    rng = np.random.default_rng(0)
    evidence = frame[["trip_id", "city", "as_of", "pickup_h3", "dropoff_h3"]].assign(
        observed=(rng.random(len(frame)) < np.where(risky, 0.25, 0.02)).astype("int64")
    )
    as_of = frame["as_of"].max() + pd.Timedelta(seconds=1)
    zones = zone_table(frame, model, evidence, as_of, StubFeatureSet(), ZoneConfig(min_trips=10))
    return frame, model, zones, cell, evidence


def test_zone_table_drivers_name_the_feature_group_that_raises_a_zone(scored_zones):
    _, _, zones, cell, _ = scored_zones
    row = zones[(zones["h3"] == cell) & (zones["band"] == "all")].iloc[0]
    assert row["flagged"] and row["tier"] in ("high", "very_high")
    assert row["drivers"], "a flagged zone gets drivers"
    top = row["drivers"][0]
    assert top["group"] == "rider_incidents"  # 30d and 90d summed into one group
    assert top["feature"] in ("rider_incidents_30d", "rider_incidents_90d")
    assert top["contribution_logodds"] > 0 and "rider incidents" in top["description"]
    assert all(len(d) == 0 for d in zones.loc[~zones["flagged"] & (zones["tier"] != "very_high"), "drivers"])


def test_zone_table_counts_only_incidents_known_by_as_of(scored_zones):
    frame, model, _, _, evidence = scored_zones
    as_of = frame["as_of"].max()
    first = frame.head(10)
    incidents = pd.DataFrame(
        {"trip_id": first["trip_id"], "reported_at": [as_of + pd.Timedelta(days=d) for d in range(-5, 5)]}
    )
    zones = zone_table(frame, model, evidence, as_of, StubFeatureSet(), incidents=incidents)
    known = first[(incidents["reported_at"] <= as_of).to_numpy()]
    cells_touched = sum(
        len({p, d} - {None, np.nan})
        for p, d in zip(
            known["pickup_h3"],
            known["dropoff_h3"].astype(object).where(known["dropoff_h3"].notna(), None),
            strict=True,
        )
    )
    assert zones.loc[zones["band"] == "all", "observed_incidents"].sum() == cells_touched
    assert zones.loc[zones["band"] == "all", "trips"].sum() == len(zone_memberships(frame, "both"))


def test_driver_inputs_are_exact_shap(scored_zones):
    frame, model, *_ = scored_zones
    inputs = driver_inputs(model, frame.head(200), StubFeatureSet())
    raw = model.predict_raw(frame.head(200))
    contrib = model.contributions(frame.head(200))
    np.testing.assert_allclose(inputs.phi.sum(axis=1) + contrib[:, -1], raw, rtol=1e-9, atol=1e-9)
    assert inputs.groups.count("rider_incidents") == 1


def test_geojson_polygons_are_closed_counter_clockwise_hexes(scored_zones):
    zones = scored_zones[2]
    ring = cell_ring(CENTRE)
    assert len(ring) == 7 and ring[0] == ring[-1]
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring[:-1], ring[1:], strict=True))
    assert area > 0
    lat, lng = h3.cell_to_latlng(CENTRE)
    assert min(p[0] for p in ring) < lng < max(p[0] for p in ring)  # [lng, lat] order
    gj = json.loads(json.dumps(zones_geojson(zones)))  # JSON-serialisable as written
    assert len(gj["features"]) == len(zones)
    props = gj["features"][0]["properties"]
    assert set(props) >= {"h3", "band", "risk_ratio", "tier", "flagged", "gi_z", "gi_q", "drivers"}
    with_drivers = [f for f in gj["features"] if f["properties"]["drivers"]]
    assert with_drivers and "description" in with_drivers[0]["properties"]["drivers"][0]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_map_draws_every_zone_offline_with_tooltips(scored_zones):
    zones = scored_zones[2]
    assert zones["flagged"].any()
    page = render_zone_map(zones, "t", "s")
    parser = _Collect()
    parser.feed(page)
    polygons = [a for t, a in parser.tags if t == "polygon"]
    assert len(polygons) == len(zones)
    assert sum("flagged" in a["class"] for a in polygons) == int(zones["flagged"].sum())
    for tag, attrs in parser.tags:  # the data layer needs no network: no external scripts, styles, images
        for key in ("src", "href"):
            assert not str(attrs.get(key, "")).startswith(("http", "//")), (tag, attrs)
    assert not re.search(r"@import|url\(", page)
    assert "drivers: rider incidents" in page
    assert (
        ratio_colour(1.0) == "#ffffbf"
        and ratio_colour(10.0) == "#67000d"
        and ratio_colour(float("nan")) == "#cccccc"
    )
