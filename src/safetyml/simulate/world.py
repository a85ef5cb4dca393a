"""The simulated world: cities, H3 zones with latent risk and hot zones, riders and merchants."""

from __future__ import annotations

from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from safetyml import cities
from safetyml.contract import MERCHANT_CATEGORIES, VEHICLE_TYPES
from safetyml.simulate.presets import CITY_MIX, DAY_NS, END, LEDGER_DAYS, Preset

H3_RES = 8
DISK_K = 11
KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LNG = 111.320

VEHICLE_P = np.array([0.62, 0.20, 0.12, 0.06])  # motorcycle, bicycle, car, on_foot
VEHICLE_EFFECT = np.array([0.35, 0.20, -0.40, -0.50])
CATEGORY_P = np.array([0.55, 0.12, 0.08, 0.12, 0.06, 0.07])
CATEGORY_VALUE = np.log(np.array([55.0, 120.0, 70.0, 45.0, 90.0, 400.0]))  # median order value
CATEGORY_DAILY_SALES = np.log(np.array([2500.0, 4000.0, 2000.0, 1500.0, 1800.0, 5000.0]))
CITY_EFFECT = {"sao_paulo": 0.0, "rio_de_janeiro": 0.25, "belo_horizonte": -0.15, "mexico_city": 0.10}
CASH_SHARE = {"sao_paulo": 0.12, "rio_de_janeiro": 0.18, "belo_horizonte": 0.20, "mexico_city": 0.40}
RAIN_RATE = {"sao_paulo": 0.30, "rio_de_janeiro": 0.22, "belo_horizonte": 0.25, "mexico_city": 0.35}


@dataclass
class CityInfo:
    """One simulated city: registry entry, share of activity and a local km frame around its centre."""

    id: str
    timezone: str
    lat: float
    lng: float
    share: float
    effect: float
    cash_share: float
    rain_rate: float

    def to_xy(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Degrees to km east/north of the centre (equirectangular: fine over ~15 km)."""
        x = (lng - self.lng) * KM_PER_DEG_LNG * np.cos(np.radians(self.lat))
        return x, (lat - self.lat) * KM_PER_DEG_LAT

    def to_latlng(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lng = self.lng + x / (KM_PER_DEG_LNG * np.cos(np.radians(self.lat)))
        return self.lat + y / KM_PER_DEG_LAT, lng


@dataclass
class Zones:
    """All zones of all cities (rows), with latent risk, and a nearest-centroid index per city."""

    city: np.ndarray  # city index
    h3: np.ndarray  # cell strings
    x: np.ndarray
    y: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    log_risk: np.ndarray
    night_mult: np.ndarray
    planted_logmult: np.ndarray  # active over the whole period
    emerging_logmult: np.ndarray  # active from emerging_start_ns
    emerging_start_ns: np.ndarray
    offsets: np.ndarray  # first zone row of each city (len n_cities + 1)
    trees: list[cKDTree]
    hot_zones: pd.DataFrame

    def snap(self, city: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Zone row with the centroid nearest each point of one city (its H3 cell near a centroid)."""
        _, idx = self.trees[city].query(np.column_stack([x, y]))
        return idx + self.offsets[city]

    def hot_logmult(self, zone: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        return self.planted_logmult[zone] + self.emerging_logmult[zone] * (
            t_ns >= self.emerging_start_ns[zone]
        )


@dataclass
class Riders:
    id: np.ndarray
    city: np.ndarray
    signup_ns: np.ndarray
    vehicle: np.ndarray
    propensity: np.ndarray  # latent risky-driving propensity (heavy tail)
    prior_days: np.ndarray  # latent experience gained elsewhere before signing up (days)
    weight: np.ndarray  # how many trips the rider takes, relatively


@dataclass
class Merchants:
    id: np.ndarray
    city: np.ndarray
    category: np.ndarray
    onboarded_ns: np.ndarray
    lat: np.ndarray
    lng: np.ndarray
    x: np.ndarray
    y: np.ndarray
    zone: np.ndarray
    popularity: np.ndarray
    location_effect: np.ndarray  # latent incident-prone location
    value_mu: np.ndarray  # log median order value
    quality: np.ndarray  # latent credit quality
    fraud: np.ndarray  # latent fraud propensity
    closed_ns: np.ndarray  # when the merchant stopped trading (after a credit event); int64 max if never


@dataclass
class World:
    preset: Preset
    cities: list[CityInfo]
    zones: Zones
    riders: Riders
    merchants: Merchants
    start_ns: int
    end_ns: int
    dynamics: object = None  # the DynamicsState the trip blocks read (set once the calendar is built)


def make_ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded string ids (``R000123``) for an array of numbers, vectorised."""
    return np.char.add(prefix, np.char.zfill(numbers.astype(np.int64).astype(str), width)).astype(object)


def build_cities() -> list[CityInfo]:
    reg = cities.registry()
    out = []
    for city_id, share in CITY_MIX.items():
        c = reg[city_id]
        out.append(
            CityInfo(
                city_id,
                c.timezone,
                c.lat,
                c.lng,
                share,
                CITY_EFFECT[city_id],
                CASH_SHARE[city_id],
                RAIN_RATE[city_id],
            )
        )
    return out


def split_counts(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` in proportion to ``shares`` (deterministic rounding of the cumsum)."""
    cum = np.round(np.cumsum(shares) / shares.sum() * total).astype(np.int64)
    return np.diff(np.concatenate([[0], cum]))


def build_zones(city_list: list[CityInfo], rng: np.random.Generator, start: pd.Timestamp) -> Zones:
    """H3 disks around each centre with smooth latent log-risk, planted hot clusters and one emerging one."""
    parts: dict[str, list] = {
        k: [] for k in ("city", "h3", "x", "y", "lat", "lng", "lr", "nm", "pl", "em", "es")
    }
    hot_rows = []
    offsets = [0]
    trees = []
    emerging_start = start + pd.Timedelta(days=int(0.6 * (END - start).days))
    for ci, city in enumerate(city_list):
        centre = h3.latlng_to_cell(city.lat, city.lng, H3_RES)
        cells = sorted(h3.grid_disk(centre, DISK_K))
        latlng = np.array([h3.cell_to_latlng(c) for c in cells])
        x, y = city.to_xy(latlng[:, 0], latlng[:, 1])
        d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
        kernel = np.exp(-d2 / (2 * 1.3**2))
        smooth = kernel @ rng.standard_normal(len(cells)) / kernel.sum(axis=1)
        log_risk = 0.45 * smooth / smooth.std() + 0.03 * np.hypot(x, y)
        night = np.exp(0.3 * rng.standard_normal(len(cells)) + 0.3 * (log_risk - log_risk.mean()))
        planted = np.zeros(len(cells))
        emerging = np.zeros(len(cells))
        dist = np.hypot(x, y)
        taken: list[int] = []
        for kind in ("emerging", "planted", "planted", "planted"):
            max_km = 2.0 if kind == "emerging" else 5.5
            ok = dist < max_km
            for t in taken:
                ok &= np.hypot(x - x[t], y - y[t]) > 2.6
            seed_cell = int(rng.choice(np.flatnonzero(ok)))
            neighbours = np.flatnonzero(
                (np.hypot(x - x[seed_cell], y - y[seed_cell]) < 1.2) & (d2[seed_cell] > 0)
            )
            extra = rng.choice(neighbours, size=int(rng.integers(1, 3)), replace=False)
            cluster = [seed_cell, *map(int, extra)]
            taken.append(seed_cell)
            mult = float(rng.uniform(3.0, 5.0)) if kind == "planted" else 5.0
            for z in cluster:
                if kind == "planted":
                    planted[z] = np.log(mult)
                    night[z] *= 1.5
                    begin = start
                else:
                    emerging[z] = np.log(mult)
                    begin = emerging_start
                hot_rows.append(
                    {
                        "city": city.id,
                        "h3": cells[z],
                        "start": begin,
                        "end": END,
                        "multiplier": round(mult, 3),
                        "kind": kind,
                    }
                )
        parts["city"].append(np.full(len(cells), ci))
        parts["h3"].append(np.array(cells, dtype=object))
        parts["x"].append(x)
        parts["y"].append(y)
        parts["lat"].append(latlng[:, 0])
        parts["lng"].append(latlng[:, 1])
        parts["lr"].append(log_risk)
        parts["nm"].append(night)
        parts["pl"].append(planted)
        parts["em"].append(emerging)
        parts["es"].append(np.full(len(cells), emerging_start.value, dtype=np.int64))
        offsets.append(offsets[-1] + len(cells))
        trees.append(cKDTree(np.column_stack([x, y])))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    hot = pd.DataFrame(hot_rows)
    hot["start"] = pd.to_datetime(hot["start"], utc=True).astype("datetime64[ns, UTC]")
    hot["end"] = pd.to_datetime(hot["end"], utc=True).astype("datetime64[ns, UTC]")
    return Zones(
        cat["city"],
        cat["h3"],
        cat["x"],
        cat["y"],
        cat["lat"],
        cat["lng"],
        cat["lr"],
        cat["nm"],
        cat["pl"],
        cat["em"],
        cat["es"],
        np.array(offsets),
        trees,
        hot,
    )


def build_riders(preset: Preset, city_list: list[CityInfo], rng: np.random.Generator) -> Riders:
    """Couriers: most signed up before the period, a quarter join during it; a few are much riskier."""
    counts = split_counts(preset.riders, np.array([c.share for c in city_list]))
    n = int(counts.sum())
    city = np.repeat(np.arange(len(city_list)), counts)
    start_ns, end_ns = preset.start.value, END.value
    before = rng.random(n) < 0.75
    signup = np.where(
        before,
        start_ns - (rng.random(n) * 730 * DAY_NS).astype(np.int64),
        start_ns + (rng.random(n) * 0.9 * (end_ns - start_ns)).astype(np.int64),
    )
    signup -= signup % 10**9  # whole seconds
    vehicle = rng.choice(len(VEHICLE_TYPES), size=n, p=VEHICLE_P)
    tail = rng.random(n) < 0.05
    propensity = 0.35 * rng.standard_normal(n) + tail * rng.uniform(1.0, 2.0, n)
    prior_days = np.where(rng.random(n) < 0.5, 0.0, rng.exponential(90.0, n))
    weight = rng.gamma(1.5, 1.0, n)
    ids = make_ids("R", np.arange(1, n + 1), 6)
    return Riders(ids, city, signup, vehicle, propensity, prior_days, weight)


def build_merchants(
    preset: Preset, city_list: list[CityInfo], zones: Zones, rng: np.random.Generator
) -> Merchants:
    """Merchants clustered near the centre, at a point well inside their zone's H3 cell."""
    counts = split_counts(preset.merchants, np.array([c.share for c in city_list]))
    n = int(counts.sum())
    city = np.repeat(np.arange(len(city_list)), counts)
    zone = np.empty(n, dtype=np.int64)
    for ci in range(len(city_list)):
        rows = np.arange(zones.offsets[ci], zones.offsets[ci + 1])
        w = np.exp(-np.hypot(zones.x[rows], zones.y[rows]) / 3.0)
        zone[city == ci] = rng.choice(rows, size=int(counts[ci]), p=w / w.sum())
    r = 0.2 * np.sqrt(rng.random(n))
    a = rng.uniform(0, 2 * np.pi, n)
    x = zones.x[zone] + r * np.cos(a)
    y = zones.y[zone] + r * np.sin(a)
    lat = np.empty(n)
    lng = np.empty(n)
    for ci, c in enumerate(city_list):
        m = city == ci
        lat[m], lng[m] = c.to_latlng(x[m], y[m])
    category = rng.choice(len(MERCHANT_CATEGORIES), size=n, p=CATEGORY_P)
    ledger_start = END.value - LEDGER_DAYS * DAY_NS
    early = rng.random(n) < 0.6
    onboarded = np.where(
        early,
        ledger_start - (rng.random(n) * 540 * DAY_NS).astype(np.int64),
        ledger_start + (rng.random(n) * (LEDGER_DAYS - 20) * DAY_NS).astype(np.int64),
    )
    onboarded -= onboarded % 10**9
    fraud = 0.8 * rng.standard_normal(n) + (rng.random(n) < 0.04) * 2.0
    return Merchants(
        id=make_ids("M", np.arange(1, n + 1), 6),
        city=city,
        category=category,
        onboarded_ns=onboarded,
        lat=lat,
        lng=lng,
        x=x,
        y=y,
        zone=zone,
        popularity=rng.lognormal(0.0, 0.8, n),
        location_effect=0.3 * rng.standard_normal(n),
        value_mu=CATEGORY_VALUE[category] + 0.2 * rng.standard_normal(n),
        quality=rng.standard_normal(n),
        fraud=fraud,
        closed_ns=np.full(n, np.iinfo(np.int64).max),
    )


def riders_frame(world: World) -> pd.DataFrame:
    r = world.riders
    return pd.DataFrame(
        {
            "rider_id": pd.array(r.id, dtype="str"),
            "city": pd.array([world.cities[i].id for i in r.city], dtype="str"),
            "signup_at": pd.to_datetime(r.signup_ns, utc=True).astype("datetime64[ns, UTC]"),
            "vehicle_type": pd.array(np.array(VEHICLE_TYPES, dtype=object)[r.vehicle], dtype="str"),
        }
    )


def merchants_frame(world: World) -> pd.DataFrame:
    m = world.merchants
    return pd.DataFrame(
        {
            "merchant_id": pd.array(m.id, dtype="str"),
            "city": pd.array([world.cities[i].id for i in m.city], dtype="str"),
            "category": pd.array(np.array(MERCHANT_CATEGORIES, dtype=object)[m.category], dtype="str"),
            "onboarded_at": pd.to_datetime(m.onboarded_ns, utc=True).astype("datetime64[ns, UTC]"),
            "lat": np.round(m.lat, 6),
            "lng": np.round(m.lng, 6),
        }
    )


def zones_frame(world: World) -> pd.DataFrame:
    z = world.zones
    return pd.DataFrame(
        {
            "city": pd.array([world.cities[i].id for i in z.city], dtype="str"),
            "h3": pd.array(z.h3, dtype="str"),
            "log_risk": z.log_risk,
            "night_multiplier": z.night_mult,
        }
    )
