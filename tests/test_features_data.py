"""Small hand-made contract tables for the feature tests (seeded; a few riders, merchants and H3 cells)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from safetyml.tables import Tables, tables_from_frames

START = pd.Timestamp("2026-01-01", tz="UTC")
CENTRES = {"sao_paulo": (-23.5505, -46.6333), "mexico_city": (19.4326, -99.1332)}


def raw_frames(
    seed: int = 0, n_trips: int = 80, days: int = 40, with_city: bool = True
) -> dict[str, pd.DataFrame]:
    """Contract tables as plain DataFrames: trips spread over ``days``, incidents reported with delays."""
    rng = np.random.default_rng(seed)
    riders = pd.DataFrame(
        {
            "rider_id": [f"r{i}" for i in range(6)],
            "city": ["sao_paulo"] * 4 + ["mexico_city"] * 2,
            "signup_at": START - pd.to_timedelta(rng.integers(-5, 200, 6), unit="D"),
            "vehicle_type": rng.choice(["motorcycle", "bicycle", "car", "on_foot"], 6),
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": [f"m{i}" for i in range(5)],
            "city": ["sao_paulo"] * 3 + ["mexico_city"] * 2,
            "category": rng.choice(["restaurant", "grocery", "alcohol"], 5),
            "onboarded_at": START - pd.to_timedelta(rng.integers(-10, 300, 5), unit="D"),
            "lat": [CENTRES["sao_paulo"][0]] * 3 + [CENTRES["mexico_city"][0]] * 2,
            "lng": [CENTRES["sao_paulo"][1]] * 3 + [CENTRES["mexico_city"][1]] * 2,
        }
    )
    merchant = rng.integers(0, 5, n_trips)
    city = merchants["city"].to_numpy()[merchant]
    rider = np.where(city == "sao_paulo", rng.integers(0, 4, n_trips), rng.integers(4, 6, n_trips))
    base = np.array([CENTRES[c] for c in city])
    # ~0.004 degrees ≈ a few hundred metres: the trips fall in a handful of resolution-8 cells
    pickup = base + rng.normal(0, 0.004, (n_trips, 2))
    dropoff = base + rng.normal(0, 0.006, (n_trips, 2))
    dropoff[rng.random(n_trips) < 0.08] = np.nan
    requested = START + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, n_trips)).round(), unit="s")
    trips = pd.DataFrame(
        {
            "trip_id": [f"t{i}" for i in range(n_trips)],
            "rider_id": [f"r{i}" for i in rider],
            "merchant_id": [f"m{i}" for i in merchant],
            "requested_at": requested,
            "pickup_lat": pickup[:, 0],
            "pickup_lng": pickup[:, 1],
            "dropoff_lat": dropoff[:, 0],
            "dropoff_lng": dropoff[:, 1],
            "distance_km": rng.uniform(0.5, 8, n_trips).round(2),
            "order_value": rng.gamma(2, 40, n_trips).round(2),
            "payment_method": rng.choice(["card", "cash", "wallet"], n_trips),
        }
    )
    rain = pd.array(rng.random(n_trips) < 0.3, dtype="boolean")
    rain[rng.random(n_trips) < 0.1] = pd.NA
    if with_city:  # the optional columns (drawn either way, so both variants share every other value)
        trips["city"] = city
        trips["rain"] = rain
    n_inc = max(3, n_trips // 5)
    on_trip = rng.choice(n_trips, n_inc, replace=False)
    occurred = pd.DatetimeIndex(trips["requested_at"].to_numpy()[on_trip]) + pd.to_timedelta(
        rng.integers(60, 3600, n_inc), unit="s"
    )
    delay = pd.to_timedelta(
        np.where(rng.random(n_inc) < 0.3, rng.integers(1, 15 * 86400, n_inc), 0), unit="s"
    )
    no_trip = rng.random(n_inc) < 0.2
    lat = pickup[on_trip, 0].copy()
    lat[rng.random(n_inc) < 0.3] = np.nan
    incidents = pd.DataFrame(
        {
            "incident_id": [f"i{i}" for i in range(n_inc)],
            "trip_id": pd.Series(trips["trip_id"].to_numpy()[on_trip], dtype="object").where(~no_trip, None),
            "rider_id": trips["rider_id"].to_numpy()[on_trip],
            "merchant_id": pd.Series(trips["merchant_id"].to_numpy()[on_trip], dtype="object").where(
                rng.random(n_inc) < 0.7, None
            ),
            "occurred_at": occurred,
            "reported_at": occurred + delay,
            "type": rng.choice(["accident", "robbery", "assault"], n_inc),
            "severity": rng.integers(1, 6, n_inc),
            "lat": lat,
            "lng": np.where(np.isnan(lat), np.nan, pickup[on_trip, 1]),
        }
    )
    n_led = 150
    ledger = pd.DataFrame(
        {
            "merchant_id": [f"m{i}" for i in rng.integers(0, 5, n_led)],
            "event_at": START
            - pd.Timedelta(days=30)
            + pd.to_timedelta(rng.uniform(0, (days + 60) * 86400, n_led).round(), unit="s"),
            "kind": rng.choice(
                ["sale", "sale", "sale", "refund", "chargeback", "advance", "repayment", "missed_repayment"],
                n_led,
            ),
            "amount": rng.gamma(2, 300, n_led).round(2),
        }
    )
    credit = pd.DataFrame(
        {
            "merchant_id": ["m1", "m3"],
            "event_at": [START + pd.Timedelta(days=20), START + pd.Timedelta(days=45)],
            "kind": ["advance_default", "chargeback_loss"],
        }
    )
    return {
        "riders": riders,
        "merchants": merchants,
        "trips": trips,
        "incidents": incidents,
        "merchant_ledger": ledger,
        "credit_events": credit,
    }


def make_tables(seed: int = 0, **kwargs) -> Tables:
    """Validated small tables (the contract accepts them as they are)."""
    return tables_from_frames(raw_frames(seed, **kwargs))
