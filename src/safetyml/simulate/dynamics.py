"""Temporal dynamics of the simulated platform, and drift injection for monitoring checks.

Real platforms are not stationary: accounts are taken over or shared for a few days, merchants turn
into robbery or fraud fronts for some weeks, robbery waves sweep a zone and its ring, and every rider
has better and worse days. Each effect here changes both the incident probability (the oracle) and
the events a point-in-time feature engine sees (order value, hour, merchant choice, trips per day,
incidents reported nearby), so short windows and deviations from an entity's own profile carry signal.

All episodes live on the local days of a city (day 0 = the preset's first day); a trip belongs to an
episode when its local day is inside ``[start_day, end_day)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import h3
import numpy as np
import pandas as pd

from safetyml.simulate.presets import DAY_NS, Dynamics, Episode, Waves

# Bit flags of ``truth/trip_probability.episode``: which dynamics touched a trip.
RIDER_SPELL, MERCHANT_FRONT, ZONE_WAVE, DRIFT = 1, 2, 4, 8
NIGHT_HOURS = np.array([22, 23, 0, 1, 2, 3])
DRIFT_FEATURES = ("order_value", "distance_km")


@dataclass(frozen=True)
class Drift:
    """A change injected from a local day on: a city's incident probability or a feature, times a factor."""

    kind: str  # city_incident_rate | feature_shift
    city: str  # a city id, or "all"
    factor: float
    day: int  # first local day (index from the preset's start) the change applies to
    feature: str | None = None  # for feature_shift: order_value | distance_km

    def applies(self, city_ids: list[str], city: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Mask of trips (by city index and local day) the drift touches."""
        if self.city == "all":
            return day >= self.day
        return (city == city_ids.index(self.city)) & (day >= self.day)


_DRIFT_HELP = (
    "city_incident_rate:CITY:FACTOR:DAY or feature_shift:FEATURE:CITY:FACTOR:DAY, where CITY is a city id "
    "or 'all', FACTOR is +30% / -20% / x1.3, DAY is a date (2026-09-01) or a day number from the start"
)


def parse_drift(text: str, city_ids: list[str], start: pd.Timestamp, days: int) -> Drift:
    """Parse one ``--drift`` value; the error says which part is wrong and what was expected."""
    parts = text.split(":")
    kind = parts[0]
    if kind == "city_incident_rate" and len(parts) == 4:
        feature, (city, factor_s, day_s) = None, parts[1:]
    elif kind == "feature_shift" and len(parts) == 5:
        feature, city, factor_s, day_s = parts[1:]
        if feature not in DRIFT_FEATURES:
            raise ValueError(f"--drift {text!r}: feature must be one of {', '.join(DRIFT_FEATURES)}")
    else:
        raise ValueError(f"--drift {text!r}: expected {_DRIFT_HELP}")
    if city != "all" and city not in city_ids:
        raise ValueError(
            f"--drift {text!r}: unknown city {city!r}; choose one of {', '.join(city_ids)} or all"
        )
    # a bare number is refused: "30" could mean +30% or x30
    m = re.fullmatch(r"([+-]\d+(?:\.\d+)?)%|x(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)x", factor_s)
    if not m:
        raise ValueError(f"--drift {text!r}: factor {factor_s!r} is not like +30%, -20% or x1.3")
    factor = 1 + float(m.group(1)) / 100 if m.group(1) else float(m.group(2) or m.group(3))
    if factor <= 0:
        raise ValueError(f"--drift {text!r}: the factor must be positive, got {factor}")
    if day_s.isdigit():
        day = int(day_s)
    else:
        try:
            day = (pd.Timestamp(day_s).date() - start.date()).days
        except ValueError:
            raise ValueError(f"--drift {text!r}: day {day_s!r} is neither a date nor a day number") from None
    if not 0 <= day < days:
        raise ValueError(
            f"--drift {text!r}: day {day_s} is outside the simulated {days} days from {start.date()}"
        )
    return Drift(kind, city, factor, day, feature)


def _durations(rng: np.random.Generator, ep: Episode | Waves, n: int) -> np.ndarray:
    return rng.integers(ep.min_days, ep.max_days + 1, n)


@dataclass
class EntityEpisodes:
    """At most one episode per rider (merchant): its kind (-1 none) and local days [start, end)."""

    kinds: tuple[Episode, ...]
    kind: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def active(self, entity: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Kind index of the episode each (entity, day) is in, -1 if none."""
        k = self.kind[entity]
        on = (k >= 0) & (day >= self.start[entity]) & (day < self.end[entity])
        return np.where(on, k, -1)

    def attr(self, name: str, kind: np.ndarray, default: float) -> np.ndarray:
        """A per-trip episode parameter (``default`` outside episodes)."""
        values = np.array([getattr(e, name) for e in self.kinds] + [default], dtype=float)
        return values[kind]  # kind -1 picks the default at the end

    def day_table(self, city: np.ndarray, weight: np.ndarray, days: int) -> tuple[np.ndarray, ...]:
        """Extra trip weight per (city, day) an episode's velocity asks for, as rows sorted by city-day key.

        Returns (key, entity, cumulative extra weight); key = city * days + day.
        """
        ent = np.flatnonzero(self.kind >= 0)
        vel = self.attr("velocity", self.kind[ent], 1.0)
        ent, vel = ent[vel > 1], vel[vel > 1]
        lengths = self.end[ent] - self.start[ent]
        rows = np.repeat(ent, lengths)
        day = np.repeat(self.start[ent], lengths) + (
            np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        extra = np.repeat(weight[ent] * (vel - 1), lengths)
        return extra_table(city[rows] * days + day, rows, extra)


def extra_table(key: np.ndarray, entity: np.ndarray, extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """(key, entity, cumulative extra weight) sorted by city-day key, as ``reassign`` reads it."""
    order = np.argsort(key, kind="stable")
    return key[order], entity[order], np.cumsum(extra[order])


def daily_table(
    city: np.ndarray, weight: np.ndarray, daily: np.ndarray, first_day: np.ndarray, velocity: float
) -> tuple[np.ndarray, ...]:
    """Extra trips on a rider's riskier days (tired riders rush, work longer): weight x (e^(v x risk) - 1)."""
    days = daily.shape[1]
    rows, day = np.nonzero((daily > 0) & (np.arange(days)[None, :] >= first_day[:, None]))
    extra = weight[rows] * np.expm1(velocity * daily[rows, day].astype(np.float64))
    return extra_table(city[rows] * days + day, rows, extra)


def draw_episodes(
    kinds: tuple[Episode, ...], n: int, first_day: np.ndarray, days: int, rng: np.random.Generator
) -> EntityEpisodes:
    """Give a share of the entities one episode each, starting after ``first_day`` (their first full day)."""
    shares = np.array([e.share for e in kinds])
    u = rng.random(n)
    kind = np.searchsorted(np.cumsum(shares), u, side="right") if len(kinds) else np.full(n, 0)
    kind = np.where(kind < len(kinds), kind, -1)
    length = np.zeros(n, dtype=np.int64)
    for i, ep in enumerate(kinds):
        sel = kind == i
        length[sel] = _durations(rng, ep, int(sel.sum()))
    lo = np.clip(first_day, 0, days - 1)
    start = lo + (rng.random(n) * np.maximum(days - lo, 1)).astype(np.int64)
    kind = np.where(start < days, kind, -1)
    end = np.minimum(start + length, days)
    return EntityEpisodes(kinds, kind, start, end)


def draw_waves(waves: Waves, zones, city_ids: list[str], days: int, rng: np.random.Generator):
    """Robbery waves per city: returns (log-odds per zone row and local day, truth rows)."""
    logmult = np.zeros((len(zones.h3), days), dtype=np.float32)
    rows = []
    row_of = {c: i for i, c in enumerate(zones.h3)}
    wave_id = 0
    for ci, city in enumerate(city_ids):
        n = rng.poisson(waves.per_city_per_30_days * days / 30) if waves.per_city_per_30_days > 0 else 0
        zrows = np.arange(zones.offsets[ci], zones.offsets[ci + 1])
        w = np.exp(-np.hypot(zones.x[zrows], zones.y[zrows]) / 3.0)
        for _ in range(n):
            centre = int(rng.choice(zrows, p=w / w.sum()))
            length = int(_durations(rng, waves, 1)[0])
            start = int(rng.integers(0, max(days - length, 1)))
            wave_id += 1
            ring = [  # the simulated disk's edge cells have part of their ring outside the city
                row_of[c]
                for c in sorted(h3.grid_disk(zones.h3[centre], 1))
                if c != zones.h3[centre] and c in row_of
            ]
            for z, odds, k in [(centre, waves.odds, 0)] + [(r, waves.ring_odds, 1) for r in ring]:
                sl = logmult[z, start : start + length]
                np.maximum(sl, np.log(odds), out=sl)
                rows.append((wave_id, city, zones.h3[z], k, start, start + length, odds))
    return logmult, rows


def rider_daily_logodds(n: int, days: int, sd: float, phi: float, rng: np.random.Generator) -> np.ndarray:
    """AR(1) log-odds per rider and day, centred so the mean probability barely moves (-sd^2/2)."""
    out = np.empty((n, days), dtype=np.float32)
    if sd == 0:
        out[:] = 0
        return out
    e = sd * rng.standard_normal(n)
    out[:, 0] = e
    for d in range(1, days):
        e = phi * e + sd * np.sqrt(1 - phi**2) * rng.standard_normal(n)
        out[:, d] = e
    out -= sd**2 / 2
    return out


def reassign(
    key: np.ndarray,
    table: tuple[np.ndarray, ...],
    base_weight: np.ndarray,
    current: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Move trips to entities in an episode so they get ``velocity`` x their usual trips per day.

    ``table`` is (key, entity, cumulative extra weight) from ``EntityEpisodes.day_table``; a trip at
    city-day ``key`` moves with probability extra(key) / base_weight(key) to an entity drawn by extra weight.
    """
    tkey, entity, cum = table
    out = current.copy()
    if len(tkey) == 0:
        return out
    lo = np.searchsorted(tkey, key, side="left")
    hi = np.searchsorted(tkey, key, side="right")
    before = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    extra = np.where(hi > lo, cum[np.maximum(hi - 1, 0)] - before, 0.0)
    move = rng.random(len(key)) < extra / np.maximum(base_weight, 1e-12)
    u = before[move] + rng.random(int(move.sum())) * extra[move]
    pos = np.minimum(np.searchsorted(cum, u, side="right"), hi[move] - 1)
    out[move] = entity[pos]
    return out


def episodes_frame(
    ep: EntityEpisodes,
    ids: np.ndarray,
    city: np.ndarray,
    id_col: str,
    city_ids: list[str],
    midnight: np.ndarray,
) -> pd.DataFrame:
    """Truth rows of the riders' spells (merchants' fronts), with UTC start and end instants."""
    sel = np.flatnonzero(ep.kind >= 0)
    kinds = ep.kind[sel]
    ends = np.minimum(ep.end[sel], midnight.shape[1] - 1)
    end_ns = midnight[city[sel], ends] + np.where(ep.end[sel] >= midnight.shape[1], DAY_NS, 0)
    df = pd.DataFrame(
        {
            id_col: pd.array(ids[sel], dtype="str"),
            "city": pd.array(np.array(city_ids, dtype=object)[city[sel]], dtype="str"),
            "kind": pd.array(np.array([e.name for e in ep.kinds] + [""], dtype=object)[kinds], dtype="str"),
            "start_day": ep.start[sel].astype(np.int64),
            "end_day": ep.end[sel].astype(np.int64),
            "start": pd.to_datetime(midnight[city[sel], ep.start[sel]], utc=True).astype(
                "datetime64[ns, UTC]"
            ),
            "end": pd.to_datetime(end_ns, utc=True).astype("datetime64[ns, UTC]"),
        }
    )
    for name in ("odds", "velocity", "value", "night", "cash", "new_merchant"):
        df[f"{name}_multiplier" if name in ("odds", "velocity", "value") else f"{name}_share"] = ep.attr(
            name, kinds, np.nan
        )
    return df.sort_values(["start", id_col], kind="stable").reset_index(drop=True)


def waves_frame(rows: list, city_ids: list[str], cal_midnight: np.ndarray) -> pd.DataFrame:
    """Truth rows of the zone waves: one per zone (ring 0 = the centre, 1 = its neighbours)."""
    cols = ["wave_id", "city", "h3", "ring", "start_day", "end_day", "odds_multiplier"]
    df = pd.DataFrame(rows, columns=cols)
    ci = np.array([city_ids.index(c) for c in df["city"]], dtype=np.int64)
    s, e = df["start_day"].to_numpy(np.int64), df["end_day"].to_numpy(np.int64)
    last = cal_midnight.shape[1] - 1
    end_ns = cal_midnight[ci, np.minimum(e, last)] + np.where(e > last, DAY_NS, 0)
    df["start"] = pd.to_datetime(cal_midnight[ci, s], utc=True).astype("datetime64[ns, UTC]")
    df["end"] = pd.to_datetime(end_ns, utc=True).astype("datetime64[ns, UTC]")
    df["city"] = pd.array(df["city"], dtype="str")
    df["h3"] = pd.array(df["h3"].astype(object), dtype="str")
    return df.astype({"wave_id": np.int64, "ring": np.int64, "start_day": np.int64, "end_day": np.int64})


def write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def dynamics_json(dyn: Dynamics) -> dict:
    return asdict(dyn)


def drift_json(drifts: tuple[Drift, ...], city_ids: list[str], midnight: np.ndarray) -> dict:
    """What was injected, with the UTC instant each drift starts in each city it touches."""
    out = []
    for d in drifts:
        cities = city_ids if d.city == "all" else [d.city]
        out.append(
            {
                **asdict(d),
                "start_utc": {
                    c: pd.Timestamp(int(midnight[city_ids.index(c), d.day]), tz="UTC").isoformat()
                    for c in cities
                },
            }
        )
    return {"drifts": out}


def episode_rates(trips: pd.DataFrame, incidents: pd.DataFrame, truth_p: pd.DataFrame) -> pd.DataFrame:
    """Observed incident rate and mean oracle probability of trips overall and in each kind of episode."""
    hit = trips["trip_id"].isin(set(incidents["trip_id"].dropna())).to_numpy()
    flags = truth_p["episode"].to_numpy()
    p = truth_p["p_incident"].to_numpy()
    rows = []
    for name, mask in (
        ("all trips", np.ones(len(flags), bool)),
        ("no episode", flags == 0),
        ("rider spell", (flags & RIDER_SPELL) > 0),
        ("merchant front", (flags & MERCHANT_FRONT) > 0),
        ("zone wave", (flags & ZONE_WAVE) > 0),
        ("drift", (flags & DRIFT) > 0),
    ):
        n = int(mask.sum())
        rows.append(
            {
                "trips": name,
                "n": n,
                "incident_rate": float(hit[mask].mean()) if n else np.nan,
                "mean_p": float(p[mask].mean()) if n else np.nan,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class DynamicsState:
    """Everything drawn once per simulation that the trip blocks read: episodes, waves, daily risk, drift."""

    params: Dynamics
    drifts: tuple[Drift, ...]
    city_ids: list[str]
    days: int
    spells: EntityEpisodes
    fronts: EntityEpisodes
    rider_extra: tuple[np.ndarray, ...]
    merchant_extra: tuple[np.ndarray, ...]
    rider_base: np.ndarray  # (cities, days) trip weight of the riders signed up by that day
    merchant_base: np.ndarray  # (cities, days) popularity of the merchants onboarded by that day
    wave_logmult: np.ndarray  # (zones, days)
    wave_rows: list
    rider_daily: np.ndarray  # (riders, days)
    daily_extra: tuple[np.ndarray, ...]
    regulars: np.ndarray  # (riders, k) each rider's regular merchants (rows)


def _base(city: np.ndarray, since_ns: np.ndarray, weight: np.ndarray, midnight: np.ndarray) -> np.ndarray:
    """Per (city, day): the total weight of the entities that joined before that day's local midnight."""
    out = np.zeros(midnight.shape)
    for ci in range(midnight.shape[0]):
        rows = city == ci
        order = np.argsort(since_ns[rows], kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(weight[rows][order])])
        out[ci] = cum[np.searchsorted(since_ns[rows][order], midnight[ci], side="right")]
    return np.maximum(out, 1e-12)


def build_state(
    world, midnight: np.ndarray, dyn: Dynamics, drifts: tuple[Drift, ...], rng: np.random.Generator
) -> DynamicsState:
    """Draw the episodes, waves and daily risk of one simulation (its own random stream)."""
    r, m = world.riders, world.merchants
    days = world.preset.days
    start_ns = world.preset.start.value
    city_ids = [c.id for c in world.cities]
    # +2: the first local day fully after joining, whatever the city's UTC offset
    r_first = (r.signup_ns - start_ns) // DAY_NS + 2
    m_first = (m.onboarded_ns - start_ns) // DAY_NS + 2
    spells = draw_episodes(dyn.spells, len(r.id), r_first, days, rng)
    fronts = draw_episodes(dyn.fronts, len(m.id), m_first, days, rng)
    wave_logmult, wave_rows = draw_waves(dyn.waves, world.zones, city_ids, days, rng)
    daily = rider_daily_logodds(len(r.id), days, dyn.daily_sd, dyn.daily_phi, rng)
    regulars = np.zeros((len(r.id), max(dyn.regulars, 1)), dtype=np.int64)
    for ci in range(len(city_ids)):
        rows, mrows = np.flatnonzero(r.city == ci), np.flatnonzero(m.city == ci)
        w = m.popularity[mrows]
        regulars[rows] = mrows[rng.choice(len(mrows), size=(len(rows), regulars.shape[1]), p=w / w.sum())]
    return DynamicsState(
        dyn,
        drifts,
        city_ids,
        days,
        spells,
        fronts,
        spells.day_table(r.city, r.weight, days),
        fronts.day_table(m.city, m.popularity, days),
        _base(r.city, r.signup_ns, r.weight, midnight),
        _base(m.city, m.onboarded_ns, m.popularity, midnight),
        wave_logmult,
        wave_rows,
        daily,
        daily_table(r.city, r.weight, daily, r_first, dyn.daily_velocity),
        regulars,
    )


def _pick_uniform_open(m, rows: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A merchant of ``rows`` (sorted by onboarding) drawn uniformly among those open at t; -1 if none."""
    k = np.searchsorted(m.onboarded_ns[rows], t, side="right")
    pick = np.minimum((rng.random(len(t)) * k).astype(np.int64), np.maximum(k - 1, 0))
    cand = rows[pick]
    return np.where((k > 0) & (m.closed_ns[cand] > t), cand, -1)


def apply_to_trips(
    state: DynamicsState,
    world,
    ci: int,
    midnight: np.ndarray,
    day: np.ndarray,
    t: np.ndarray,
    merchant: np.ndarray,
    rider: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Apply habits, spells, fronts and daily risk to one city's trips of a block.

    Returns the (possibly moved) ``t``, ``merchant``, ``rider`` and per trip: ``value_log`` (log
    order-value multiplier), ``cash`` (probability of being forced to cash), ``logit`` (extra
    log-odds), ``robbery`` (incidents lean to robbery) and ``episode`` flags without the zone wave
    (zones are known only once the drop-off is drawn: see ``wave_logodds``).
    """
    m, r = world.merchants, world.riders
    key = ci * state.days + day
    # habits: part of each rider's trips go to one of their regular merchants (if it is open at t)
    use = np.flatnonzero(rng.random(len(t)) < state.params.regular_share)
    cand = state.regulars[rider[use], rng.integers(0, state.regulars.shape[1], len(use))]
    ok = (m.onboarded_ns[cand] <= t[use]) & (m.closed_ns[cand] > t[use])
    merchant = merchant.copy()
    merchant[use[ok]] = cand[ok]
    # velocity: more trips on riders' riskier days, for riders in a spell and merchants in a front
    for table in (state.daily_extra, state.rider_extra):
        moved = reassign(key, table, state.rider_base[ci, day], rider, rng)
        rider = np.where(r.signup_ns[moved] <= t, moved, rider)
    moved = reassign(key, state.merchant_extra, state.merchant_base[ci, day], merchant, rng)
    ok = (m.onboarded_ns[moved] <= t) & (m.closed_ns[moved] > t)
    merchant = np.where(ok, moved, merchant)
    # a spell's trips go to merchants the rider does not usually use
    spell = state.spells.active(rider, day)
    new = rng.random(len(t)) < state.spells.attr("new_merchant", spell, 0.0)
    if new.any():
        mrows = np.flatnonzero(m.city == ci)
        mrows = mrows[np.argsort(m.onboarded_ns[mrows], kind="stable")]
        cand = _pick_uniform_open(m, mrows, t[new], rng)
        merchant[np.flatnonzero(new)[cand >= 0]] = cand[cand >= 0]
    front = state.fronts.active(merchant, day)
    # unusual hours: part of the episode's trips move to the night of the same local day
    night = np.maximum(state.spells.attr("night", spell, 0.0), state.fronts.attr("night", front, 0.0))
    move = np.flatnonzero(rng.random(len(t)) < night)
    hour = rng.choice(NIGHT_HOURS, len(move))
    t2 = midnight[day[move]] + (hour * 3600 + rng.integers(0, 3600, len(move))) * 10**9
    mm, rr = merchant[move], rider[move]
    ok = (m.onboarded_ns[mm] <= t2) & (m.closed_ns[mm] > t2) & (r.signup_ns[rr] <= t2) & (t2 < world.end_ns)
    t = t.copy()
    t[move[ok]] = t2[ok]
    value_log = np.log(state.spells.attr("value", spell, 1.0)) + np.log(
        state.fronts.attr("value", front, 1.0)
    )
    value_log = value_log + np.where((spell >= 0) | (front >= 0), 0.25 * rng.standard_normal(len(t)), 0.0)
    cash = np.maximum(state.spells.attr("cash", spell, 0.0), state.fronts.attr("cash", front, 0.0))
    logit = (
        state.rider_daily[rider, day]
        + np.log(state.spells.attr("odds", spell, 1.0))
        + np.log(state.fronts.attr("odds", front, 1.0))
    )
    robbery = state.fronts.attr("robbery", front, 0.0)
    episode = np.where(spell >= 0, RIDER_SPELL, 0) | np.where(front >= 0, MERCHANT_FRONT, 0)
    return dict(
        t=t,
        merchant=merchant,
        rider=rider,
        value_log=value_log,
        cash=cash,
        logit=logit.astype(np.float64),
        robbery=robbery,
        episode=episode.astype(np.uint8),
    )


def wave_logodds(state: DynamicsState, pzone: np.ndarray, dzone: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Extra log-odds of a trip from robbery waves on its pickup and drop-off zones that day."""
    return state.wave_logmult[pzone, day].astype(np.float64) + state.wave_logmult[dzone, day]


def drift_multipliers(
    state: DynamicsState, ci: int, day: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per trip: the incident-probability factor and each feature's factor from the injected drifts."""
    p_mult = np.ones(len(day))
    feats = {f: np.ones(len(day)) for f in DRIFT_FEATURES}
    city = np.full(len(day), ci)
    for d in state.drifts:
        hit = d.applies(state.city_ids, city, day)
        target = p_mult if d.kind == "city_incident_rate" else feats[d.feature]
        target[hit] *= d.factor
    return p_mult, feats
