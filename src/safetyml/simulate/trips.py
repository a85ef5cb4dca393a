"""Trips and their incidents, one block of days at a time, drawn from a known per-trip probability."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from safetyml.contract import INCIDENT_TYPES, PAYMENT_METHODS
from safetyml.simulate.dynamics import (
    DRIFT,
    ZONE_WAVE,
    apply_to_trips,
    drift_multipliers,
    wave_logodds,
)
from safetyml.simulate.presets import DAY_NS
from safetyml.simulate.world import VEHICLE_EFFECT, World

# Local-hour profile of demand: lunch and dinner peaks, a thin night.
HOUR_WEIGHT = np.array(
    [
        0.8,
        0.5,
        0.3,
        0.15,
        0.1,
        0.12,
        0.3,
        0.6,
        0.8,
        0.9,
        1.3,
        3.0,
        4.5,
        4.0,
        2.2,
        1.3,
        1.3,
        2.0,
        3.5,
        5.0,
        5.2,
        3.8,
        2.2,
        1.4,
    ]
)
NIGHT = np.array([1.0] * 5 + [0.5] + [0.0] * 14 + [0.5, 0.5, 1.0, 1.0])  # 22-04 night, shoulders half
DOW_WEIGHT = np.array([0.9, 0.9, 0.95, 1.0, 1.15, 1.3, 1.2])  # Monday..Sunday
BASE_LOGIT = -6.1
MISSING_DROPOFF = 0.015
TYPE_BASE = np.array(
    [1.2, -0.6, -0.5, -0.5, -0.3, -0.9]
)  # accident, assault, robbery, harassment, theft, other


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Calendar:
    """Per city and local day: the UTC instant of local midnight, the day's demand weight and rain."""

    midnight_ns: np.ndarray  # (cities, days)
    weight: np.ndarray  # (cities, days)
    rain: np.ndarray  # (cities, days) bool


def build_calendar(world: World, rng: np.random.Generator) -> Calendar:
    days = world.preset.days
    first_day = world.preset.start.date()
    mids, weights, rains = [], [], []
    for city in world.cities:
        local = pd.date_range(pd.Timestamp(first_day), periods=days, freq="D").tz_localize(city.timezone)
        mids.append(local.tz_convert("UTC").as_unit("ns").asi8)
        growth = 1 + 0.15 * np.arange(days) / days
        weights.append(DOW_WEIGHT[local.dayofweek] * growth)
        rains.append(rng.random(days) < city.rain_rate)
    return Calendar(np.array(mids), np.array(weights), np.array(rains))


def trip_counts(world: World, cal: Calendar) -> np.ndarray:
    """Trips per (city, day): the preset total split by city share and day weight, rounded exactly."""
    shares = (
        np.array([c.share for c in world.cities])[:, None]
        * cal.weight
        / cal.weight.sum(axis=1, keepdims=True)
    )
    counts = np.round(np.cumsum(shares.ravel()) / shares.sum() * world.preset.trips).astype(np.int64)
    return np.diff(np.concatenate([[0], counts])).reshape(shares.shape)


def _pick_active(sorted_time: np.ndarray, cum_weight: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Position (in time order) of an entity active at t (joined before t), drawn by weight; -1 if none."""
    k = np.searchsorted(sorted_time, t, side="right")
    total = np.where(k > 0, cum_weight[np.maximum(k - 1, 0)], 0.0)
    pos = np.minimum(np.searchsorted(cum_weight, u * total, side="right"), np.maximum(k - 1, 0))
    return np.where(k > 0, pos, -1)


@dataclass
class Block:
    trips: pa.Table
    truth: pa.Table
    incidents: pd.DataFrame  # without incident_id (assigned once all blocks are done)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Zero-padded ids as an Arrow string array built from one byte buffer (fast for millions of rows)."""
    n = len(numbers)
    digits = np.empty((n, width + 1), dtype=np.uint8)
    digits[:, 0] = ord(prefix)
    rest = numbers.astype(np.int64).copy()
    for i in range(width, 0, -1):
        digits[:, i] = (rest % 10 + 48).astype(np.uint8)
        rest //= 10
    offsets = np.arange(0, (width + 1) * n + 1, width + 1, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes()))


def draw_trips(
    world: World, cal: Calendar, counts: np.ndarray, day_lo: int, day_hi: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """The raw trips requested on local days [day_lo, day_hi) of every city, sorted by request time."""
    z, r, m = world.zones, world.riders, world.merchants
    parts = []
    for ci, city in enumerate(world.cities):
        n_day = counts[ci, day_lo:day_hi]
        n = int(n_day.sum())
        day = np.repeat(np.arange(day_lo, day_hi), n_day)
        hour = rng.choice(24, size=n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
        t = cal.midnight_ns[ci, day] + (hour * 3600 + rng.integers(0, 3600, n)) * 10**9
        # merchant: onboarded before t, still trading at t (a few redraws, then the trip is dropped)
        mrows = np.flatnonzero(m.city == ci)
        mrows = mrows[np.argsort(m.onboarded_ns[mrows], kind="stable")]
        mcum = np.cumsum(m.popularity[mrows])
        merchant = np.full(n, -1)
        todo = np.arange(n)
        for _ in range(4):
            pos = _pick_active(m.onboarded_ns[mrows], mcum, t[todo], rng.random(len(todo)))
            cand = np.where(pos >= 0, mrows[np.maximum(pos, 0)], -1)
            ok = (cand >= 0) & (m.closed_ns[np.maximum(cand, 0)] > t[todo])
            merchant[todo[ok]] = cand[ok]
            todo = todo[~ok]
        rrows = np.flatnonzero(r.city == ci)
        rrows = rrows[np.argsort(r.signup_ns[rrows], kind="stable")]
        pos = _pick_active(r.signup_ns[rrows], np.cumsum(r.weight[rrows]), t, rng.random(n))
        rider = np.where(pos >= 0, rrows[np.maximum(pos, 0)], -1)
        keep = (merchant >= 0) & (rider >= 0) & (t < world.end_ns)
        day, t, merchant, rider = day[keep], t[keep], merchant[keep], rider[keep]
        n = len(t)
        # temporal dynamics (spells, fronts, daily risk) may move a trip's rider, merchant and hour
        dyn = apply_to_trips(world.dynamics, world, ci, cal.midnight_ns[ci], day, t, merchant, rider, rng)
        t, merchant, rider = dyn["t"], dyn["merchant"], dyn["rider"]
        hour = (t - cal.midnight_ns[ci, day]) // (3600 * 10**9)
        p_mult, shift = drift_multipliers(world.dynamics, ci, day)
        # pickup at the merchant (tiny jitter), drop-off a few km away, well inside its H3 cell
        jr, ja = 0.02 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
        px, py = m.x[merchant] + jr * np.cos(ja), m.y[merchant] + jr * np.sin(ja)
        dist = np.minimum(rng.lognormal(np.log(2.2), 0.5, n), 8.0)
        ang = rng.uniform(0, 2 * np.pi, n)
        dzone = z.snap(ci, px + dist * np.cos(ang), py + dist * np.sin(ang))
        jr, ja = 0.25 * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
        dx, dy = z.x[dzone] + jr * np.cos(ja), z.y[dzone] + jr * np.sin(ja)
        plat, plng = city.to_latlng(px, py)
        dlat, dlng = city.to_latlng(dx, dy)
        route = np.hypot(dx - px, dy - py) * rng.uniform(1.15, 1.45, n) + 0.2
        route = np.minimum(route * shift["distance_km"], 20.0)
        value_mu = m.value_mu[merchant] + dyn["value_log"] + np.log(shift["order_value"])
        value = np.round(np.exp(value_mu + 0.45 * rng.standard_normal(n)), 2)
        pay_p = np.array([0.88 - city.cash_share, city.cash_share, 0.08, 0.04])
        pay = rng.choice(len(PAYMENT_METHODS), size=n, p=pay_p / pay_p.sum())
        pay = np.where(rng.random(n) < dyn["cash"], 1, pay)
        rain = cal.rain[ci, day]
        wave = wave_logodds(world.dynamics, m.zone[merchant], dzone, day)
        drifted = (p_mult != 1) | (shift["distance_km"] != 1) | (shift["order_value"] != 1)
        episode = dyn["episode"] | np.where(wave > 0, ZONE_WAVE, 0) | np.where(drifted, DRIFT, 0)
        parts.append(
            dict(
                city=np.full(n, ci),
                t=t,
                hour=hour,
                merchant=merchant,
                rider=rider,
                pzone=m.zone[merchant],
                dzone=dzone,
                plat=plat,
                plng=plng,
                dlat=dlat,
                dlng=dlng,
                dist=route,
                value=value,
                pay=pay,
                rain=rain,
                dyn_logit=dyn["logit"] + wave,
                robbery=np.maximum(dyn["robbery"], (wave > 0).astype(float)),
                episode=episode.astype(np.uint8),
                p_mult=p_mult,
            )
        )
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def split_trips(b: dict[str, np.ndarray], cut_ns: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sort by request time and split at a UTC instant (local days of cities straddle UTC days)."""
    order = np.argsort(b["t"], kind="stable")
    b = {k: v[order] for k, v in b.items()}
    k = int(np.searchsorted(b["t"], cut_ns))
    return {key: v[:k] for key, v in b.items()}, {key: v[k:] for key, v in b.items()}


def finish_block(
    world: World, b: dict[str, np.ndarray], first_number: int, id_width: int, rng: np.random.Generator
) -> Block:
    """Probabilities, incidents and Arrow tables for sorted raw trips."""
    z, r, m = world.zones, world.riders, world.merchants
    n = len(b["t"])

    # --- the known incident probability
    tenure = np.maximum(b["t"] - r.signup_ns[b["rider"]], 0) / DAY_NS
    inexp = np.exp(-(tenure + r.prior_days[b["rider"]]) / 45.0)
    veh = r.vehicle[b["rider"]]
    moto = (veh == 0).astype(float)
    night = NIGHT[b["hour"]]
    rain = b["rain"].astype(float)
    cash = (b["pay"] == 1).astype(float)
    hot_p = z.hot_logmult(b["pzone"], b["t"])
    hot_d = z.hot_logmult(b["dzone"], b["t"])
    city_eff = np.array([c.effect for c in world.cities])[b["city"]]
    logit = (
        BASE_LOGIT
        + city_eff
        + r.propensity[b["rider"]]
        + 0.9 * inexp
        + VEHICLE_EFFECT[veh]
        + m.location_effect[b["merchant"]]
        + 0.6 * z.log_risk[b["pzone"]]
        + 0.8 * z.log_risk[b["dzone"]]
        + hot_p
        + hot_d
        + 0.9 * night * z.night_mult[b["dzone"]]
        + 0.35 * rain
        + 0.06 * b["dist"]
        + 0.5 * night * moto
        + 0.6 * rain * inexp
        + 0.3 * cash * night
        + b["dyn_logit"]
    )
    # the oracle: injected drift multiplies the probability itself, as the monitoring checks assume
    p = np.minimum(sigmoid(logit) * b["p_mult"], 1.0)
    hot_any = np.maximum(((hot_p + hot_d) > 0).astype(float), b["robbery"])
    q_severe = sigmoid(-1.7 + 0.8 * night + 0.5 * moto + 0.4 * hot_any + 0.03 * b["dist"])

    # --- incidents
    hit = np.flatnonzero(rng.random(n) < p)
    severe = rng.random(len(hit)) < q_severe[hit]
    severity = np.where(
        severe,
        rng.choice([3, 4, 5], len(hit), p=[0.7, 0.22, 0.08]),
        rng.choice([1, 2], len(hit), p=[0.6, 0.4]),
    )
    # type logits of every trip (an incident's type is their Gumbel-max draw, i.e. softmax probabilities)
    type_logit = np.tile(TYPE_BASE, (n, 1))
    type_logit[:, 0] += 0.8 * rain + 0.05 * b["dist"]
    type_logit[:, 1] += 1.2 * night + 1.0 * hot_any
    type_logit[:, 2] += 1.2 * night + 1.0 * hot_any + 0.5 * cash + 1.0 * b["robbery"]
    type_logit[:, 4] += 0.5 * cash
    tl = type_logit[hit]
    itype = np.argmax(tl + rng.gumbel(size=tl.shape), axis=1)
    occurred = b["t"][hit] + rng.integers(5 * 60, 45 * 60, len(hit)) * 10**9
    missing = rng.random(n) < MISSING_DROPOFF
    at_drop = (rng.random(len(hit)) < 0.7) & ~missing[hit]
    ilat = np.where(at_drop, b["dlat"][hit], b["plat"][hit]) + rng.normal(0, 0.0005, len(hit))
    ilng = np.where(at_drop, b["dlng"][hit], b["plng"][hit]) + rng.normal(0, 0.0005, len(hit))
    numbers = np.arange(first_number, first_number + n)
    trip_ids = _ids("T", numbers, id_width)
    incidents = {
        "trip": numbers[hit],
        "rider": b["rider"][hit],
        "merchant": b["merchant"][hit],
        "occurred": occurred,
        "type": itype,
        "severity": severity,
        "lat": ilat,
        "lng": ilng,
    }

    # --- a few incidents off-trip: at a merchant (no rider) or of a rider between trips (no merchant)
    n_off = max(1, int(round(0.03 * len(hit))))
    src = rng.integers(0, n, n_off)
    at_merchant = rng.random(n_off) < 0.5
    off = {
        "trip": np.full(n_off, -1),
        "rider": np.where(at_merchant, -1, b["rider"][src]),
        "merchant": np.where(at_merchant, b["merchant"][src], -1),
        "occurred": b["t"][src] - rng.integers(30 * 60, 180 * 60, n_off) * 10**9,
        "type": rng.choice([2, 3, 4, 5], n_off),
        "severity": rng.choice([1, 2, 3], n_off, p=[0.6, 0.3, 0.1]),
        "lat": np.where(at_merchant, b["plat"][src], b["dlat"][src]),
        "lng": np.where(at_merchant, b["plng"][src], b["dlng"][src]),
    }
    inc = pd.DataFrame({k: np.concatenate([incidents[k], off[k]]) for k in incidents})

    dlat = np.where(missing, np.nan, np.round(b["dlat"], 6))
    dlng = np.where(missing, np.nan, np.round(b["dlng"], 6))
    ts = pa.timestamp("ns", tz="UTC")
    trips = pa.table(
        {
            "trip_id": trip_ids,
            "rider_id": pa.array(r.id, type=pa.string()).take(pa.array(b["rider"])),
            "merchant_id": pa.array(m.id, type=pa.string()).take(pa.array(b["merchant"])),
            "requested_at": pa.array(b["t"], type=ts),
            "pickup_lat": np.round(b["plat"], 6),
            "pickup_lng": np.round(b["plng"], 6),
            "dropoff_lat": pa.array(dlat, from_pandas=True),
            "dropoff_lng": pa.array(dlng, from_pandas=True),
            "distance_km": np.round(b["dist"], 3),
            "order_value": b["value"],
            "payment_method": pa.array(np.array(PAYMENT_METHODS, dtype=object)[b["pay"]], type=pa.string()),
            "city": pa.array(
                np.array([c.id for c in world.cities], dtype=object)[b["city"]], type=pa.string()
            ),
            "rain": b["rain"],
        }
    )
    type_share = np.exp(type_logit - type_logit.max(axis=1, keepdims=True))
    type_share /= type_share.sum(axis=1, keepdims=True)
    truth = pa.table(
        {
            "trip_id": trip_ids,
            "p_incident": p,
            "p_incident_severe": p * q_severe,
            # P(incident of that type) = p x softmax(type logits): assault + robbery + harassment; accident
            "p_incident_violence": p * type_share[:, 1:4].sum(axis=1),
            "p_incident_accident": p * type_share[:, 0],
            "log_odds_dynamic": b["dyn_logit"].astype(np.float32),
            "episode": b["episode"],
        }
    )
    return Block(trips, truth, inc)


def incidents_frame(world: World, parts: list[pd.DataFrame], rng: np.random.Generator) -> pd.DataFrame:
    """Join the blocks' incidents, add reporting delays, sort by occurrence and give ids."""
    inc = pd.concat(parts, ignore_index=True)
    inc = inc[inc["occurred"] >= world.start_ns].reset_index(drop=True)
    n = len(inc)
    delay_min = np.minimum(rng.lognormal(np.log(1440.0), 1.4, n), 45 * 1440) + rng.uniform(1, 30, n)
    reported = inc["occurred"].to_numpy() + (delay_min * 60).astype(np.int64) * 10**9
    inc = (
        inc.assign(reported=reported).sort_values(["occurred", "trip"], kind="stable").reset_index(drop=True)
    )
    width = max(7, len(str(n)))
    trip_width = max(7, len(str(world.preset.trips + 1)))

    def ids(prefix: str, numbers: np.ndarray, w: int, table: np.ndarray | None = None) -> pd.Series:
        valid = numbers >= 0
        out = np.full(len(numbers), None, dtype=object)
        if table is None:
            out[valid] = np.asarray(_ids(prefix, numbers[valid], w).to_pylist(), dtype=object)
        else:
            out[valid] = table[numbers[valid]]
        return pd.Series(pd.array(out, dtype="str"))

    return pd.DataFrame(
        {
            "incident_id": ids("I", np.arange(1, n + 1), width),
            "trip_id": ids("T", inc["trip"].to_numpy(), trip_width),
            "rider_id": ids("R", inc["rider"].to_numpy(), 0, world.riders.id),
            "merchant_id": ids("M", inc["merchant"].to_numpy(), 0, world.merchants.id),
            "occurred_at": pd.to_datetime(inc["occurred"].to_numpy(), utc=True).astype("datetime64[ns, UTC]"),
            "reported_at": pd.to_datetime(inc["reported"].to_numpy(), utc=True).astype("datetime64[ns, UTC]"),
            "type": pd.array(np.array(INCIDENT_TYPES, dtype=object)[inc["type"].to_numpy()], dtype="str"),
            "severity": inc["severity"].to_numpy().astype(np.int64),
            "lat": np.round(inc["lat"].to_numpy(), 6),
            "lng": np.round(inc["lng"].to_numpy(), 6),
        }
    )
