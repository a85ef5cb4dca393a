"""Indicators from the contract tables: counts (numerator, denominator) per period and city or zone.

Every indicator is a rate ``scale × numerator / denominator`` kept as its two counts, so the Monte Carlo
can resample the data and empirical Bayes can weigh small units by how much they saw. A **zone** is the
H3 cell of a trip's pickup or drop-off, as in the batch zone map: a trip counts once in each distinct
cell it touches; a merchant belongs to the cell of its store.

Only facts known at ``as_of`` (the last trip's request time) count: an incident once reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from safetyml import cities
from safetyml.tables import Tables
from safetyml.tasks import INCIDENT_RISK

SEVERE = 3  # severity from which an incident is severe (3 = serious injury or loss)
VIOLENCE = ("assault", "robbery", "harassment")
# Incidents fall in one of six cells (not severe / severe) × (violence, accident, other); the incident
# indicators count unions of cells, so their sampling noise is shared (safetyml.index.rates.draws).
CELLS = [f"cell_{s}_{g}" for s in ("minor", "severe") for g in ("violence", "accident", "other")]
EVENT_CELLS = {
    "incident_rate": list(range(6)),
    "severe_incident_rate": [3, 4, 5],
    "violence_rate": [0, 3],
    "accident_rate": [1, 4],
}
THINNED = {"riders_with_incident": "incident_rate"}  # riders with an incident: a subset of the incidents
CITY_KEYS = ["period", "city"]
ZONE_KEYS = ["period", "city", "h3"]


@dataclass
class Inputs:
    """The tables prepared once for every indicator: trips with period, zones and their incidents."""

    trips: pd.DataFrame  # one row per trip: trip_id, rider_id, merchant_id, city, period, night, ...
    members: pd.DataFrame  # one row per (trip, zone it touches): row (trip position), h3
    merchants: pd.DataFrame  # merchant_id, city, h3
    ledger: pd.DataFrame  # merchant_id, period, kind
    credit_events: pd.DataFrame  # merchant_id, period
    as_of: pd.Timestamp
    hot_zones: set[tuple[str, str]] | None = None  # (city, h3) flagged by the batch zone map
    scores: pd.Series | None = None  # predicted incident probability by trip_id
    _codes: dict[str, tuple[np.ndarray, np.ndarray, pd.DataFrame]] = field(default_factory=dict, repr=False)

    def unit_codes(self, level: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """For a level: the trip row of each membership (every trip for cities; one per zone touched),
        its unit code, and the units' keys (one row per code). Computed once: every trip indicator is
        then a ``bincount``, not a groupby on strings."""
        if level not in self._codes:
            if level == "city":
                rows = np.arange(len(self.trips))
                keys = self.trips[CITY_KEYS]
            else:
                rows = self.members["row"].to_numpy()
                keys = self.trips[CITY_KEYS].iloc[rows].assign(h3=self.members["h3"].to_numpy())
            parts = [pd.factorize(keys[k], sort=True) for k in keys.columns]
            combined = np.zeros(len(keys), dtype=np.int64)
            for codes, uniques in parts:
                combined = combined * len(uniques) + codes
            unique, inverse = np.unique(combined, return_inverse=True)
            decoded, rest = {}, unique
            for name, (_, uniques) in reversed(list(zip(keys.columns, parts, strict=True))):
                decoded[name] = np.asarray(uniques)[rest % len(uniques)]
                rest = rest // len(uniques)
            table = pd.DataFrame({k: decoded[k] for k in keys.columns})
            self._codes[level] = (rows, inverse.astype(np.int64), table)
        return self._codes[level]


@dataclass(frozen=True)
class IndicatorDef:
    """How one indicator is counted: its scale and a function giving (keys..., num, den) at a level."""

    scale: float
    counts: Callable[[Inputs, str], pd.DataFrame]
    needs: str = ""  # an optional input ("hot_zones", "scores", "merchant_ledger", ...) it cannot do without
    resample: bool = True  # counts of events (Poisson); False for sums of probabilities


# ---------------------------------------------------------------------------------------------- inputs


def period_start(times: pd.Series, period: str) -> pd.Series:
    """The start (UTC, naive) of each timestamp's calendar month or ISO week."""
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.dt.to_period("M" if period == "month" else "W-SUN").dt.start_time


def prepare(
    tables: Tables,
    period: str = "month",
    experienced_days: int = 90,
    hot_zones: pd.DataFrame | None = None,
    scores: pd.DataFrame | None = None,
) -> Inputs:
    """Trips with their period, local night flag, rider tenure, zones and known incidents."""
    from safetyml.features.request import local_hour_weekday, night_flag
    from safetyml.features.zones import cells_of

    trips = tables.trips
    merchant_city = tables.merchants.set_index("merchant_id")["city"]
    city = (
        trips["city"].astype("str")
        if "city" in trips.columns
        else trips["merchant_id"].map(merchant_city).astype("str")
    )
    as_of = pd.Timestamp(trips["requested_at"].max()) + pd.Timedelta(seconds=1)
    hour, _ = local_hour_weekday(trips["requested_at"], city)
    signup = trips["rider_id"].map(tables.riders.set_index("rider_id")["signup_at"])
    tenure_days = (trips["requested_at"] - signup).dt.total_seconds().to_numpy() / 86_400
    known = tables.incidents[tables.incidents["trip_id"].notna() & (tables.incidents["reported_at"] <= as_of)]
    frame = pd.DataFrame(
        {
            "trip_id": trips["trip_id"].astype("str").to_numpy(),
            "rider_id": trips["rider_id"].astype("str").to_numpy(),
            "city": city.to_numpy(),
            "period": period_start(trips["requested_at"], period).to_numpy(),
            "night": night_flag(hour),
            "experienced": (tenure_days >= experienced_days).astype("float64"),
        }
    )
    severe = (known["severity"] >= SEVERE).to_numpy()
    violence = known["type"].isin(VIOLENCE).to_numpy()
    accident = (known["type"] == "accident").to_numpy()
    cell = 3 * severe + np.where(violence, 0, np.where(accident, 1, 2))
    flags = pd.DataFrame(
        {
            "incidents": 1.0,
            "severe": severe.astype("float64"),
            "violence": violence.astype("float64"),
            "accidents": accident.astype("float64"),
            **{name: (cell == c).astype("float64") for c, name in enumerate(CELLS)},
        },
        index=known["trip_id"].astype("str").to_numpy(),
    )
    per_trip = flags.groupby(level=0).sum().reindex(frame["trip_id"]).fillna(0.0)
    for name in flags.columns:
        frame[name] = per_trip[name].to_numpy(dtype="float64")
    pickup = cells_of(trips["pickup_lat"], trips["pickup_lng"]).to_numpy()
    dropoff = cells_of(trips["dropoff_lat"], trips["dropoff_lng"]).to_numpy()
    rows = np.arange(len(trips))
    members = pd.DataFrame(
        {"row": np.concatenate([rows, rows]), "h3": np.concatenate([pickup, dropoff])}
    ).dropna()
    members = members.drop_duplicates().reset_index(drop=True)
    merchants = pd.DataFrame(
        {
            "merchant_id": tables.merchants["merchant_id"].astype("str").to_numpy(),
            "city": tables.merchants["city"].astype("str").to_numpy(),
            "h3": cells_of(tables.merchants["lat"], tables.merchants["lng"]).to_numpy(),
        }
    )
    ledger = tables.merchant_ledger
    ledger = pd.DataFrame(
        {
            "merchant_id": ledger["merchant_id"].astype("str").to_numpy(),
            "period": period_start(ledger["event_at"], period).to_numpy() if len(ledger) else [],
            "kind": ledger["kind"].astype("str").to_numpy(),
        }
    )
    credit = tables.credit_events
    credit = pd.DataFrame(
        {
            "merchant_id": credit["merchant_id"].astype("str").to_numpy(),
            "period": period_start(credit["event_at"], period).to_numpy() if len(credit) else [],
        }
    )
    hot = None
    if hot_zones is not None:
        flagged = hot_zones[hot_zones["flagged"].astype(bool)] if "flagged" in hot_zones else hot_zones
        hot = set(zip(flagged["city"].astype(str), flagged["h3"].astype(str), strict=True))
    score_series = None
    if scores is not None:
        if not {"trip_id", "probability"} <= set(scores.columns):
            raise KeyError("the scored frame needs columns trip_id and probability")
        score_series = scores.set_index(scores["trip_id"].astype("str"))["probability"]
    return Inputs(frame, members, merchants, ledger, credit, as_of, hot, score_series)


# ---------------------------------------------------------------------------------------------- counts


def _trip_rate(values: Callable[[Inputs], np.ndarray]) -> Callable[[Inputs, str], pd.DataFrame]:
    """num = the sum of a per-trip value, den = trips; at zone level over the trips touching the zone."""

    def counts(inputs: Inputs, level: str) -> pd.DataFrame:
        rows, codes, units = inputs.unit_codes(level)
        value = values(inputs)[rows]
        n = len(units)
        return units.assign(
            num=np.bincount(codes, weights=value, minlength=n),
            den=np.bincount(codes, minlength=n).astype(float),
        )

    return counts


def _column(name: str) -> Callable[[Inputs], np.ndarray]:
    return lambda inputs: inputs.trips[name].to_numpy(dtype="float64")


def _hot_trip(inputs: Inputs) -> np.ndarray:
    hot = inputs.hot_zones or set()
    members = inputs.members
    city = inputs.trips["city"].to_numpy()[members["row"].to_numpy()]
    touches = np.fromiter(
        ((c, h) in hot for c, h in zip(city, members["h3"].to_numpy(), strict=True)), bool, len(members)
    )
    out = np.zeros(len(inputs.trips))
    np.maximum.at(out, members["row"].to_numpy(), touches.astype("float64"))
    return out


def _predicted(inputs: Inputs) -> np.ndarray:
    assert inputs.scores is not None
    found = inputs.trips["trip_id"].map(inputs.scores)
    return found.fillna(found.mean()).to_numpy(dtype="float64")


def _riders_with_incident(inputs: Inputs, level: str) -> pd.DataFrame:
    """Active riders (a trip in the unit and period) and those with an incident on one of those trips."""
    rows, codes, units = inputs.unit_codes(level)
    rider, riders = pd.factorize(inputs.trips["rider_id"])
    pair = codes * len(riders) + rider[rows]
    hit = inputs.trips["incidents"].to_numpy()[rows] > 0
    order = np.argsort(pair, kind="stable")
    first = np.r_[True, pair[order][1:] != pair[order][:-1]]
    group = np.cumsum(first) - 1
    any_hit = np.zeros(int(first.sum()), dtype=bool)
    np.logical_or.at(any_hit, group, hit[order])
    unit_of_pair = codes[order][first]
    n = len(units)
    return units.assign(
        num=np.bincount(unit_of_pair, weights=any_hit.astype(float), minlength=n),
        den=np.bincount(unit_of_pair, minlength=n).astype(float),
    )


def _merchant_counts(
    events: Callable[[Inputs], pd.DataFrame], base: Callable[[Inputs], pd.DataFrame]
) -> Callable[[Inputs, str], pd.DataFrame]:
    """num = events per merchant-period, den = the merchant-period base, summed over the merchants' unit."""

    def counts(inputs: Inputs, level: str) -> pd.DataFrame:
        keys = CITY_KEYS if level == "city" else ZONE_KEYS
        where = inputs.merchants.set_index("merchant_id")
        parts = []
        for column, frame in (("num", events(inputs)), ("den", base(inputs))):
            grouped = (
                frame.groupby(["merchant_id", "period"], as_index=False)
                .size()
                .rename(columns={"size": column})
            )
            parts.append(grouped)
        merged = parts[1].merge(parts[0], on=["merchant_id", "period"], how="left").fillna({"num": 0})
        merged = merged.join(where, on="merchant_id")
        return merged.groupby(keys, as_index=False)[["num", "den"]].sum()

    return counts


def _kind(kind: str) -> Callable[[Inputs], pd.DataFrame]:
    return lambda inputs: inputs.ledger[inputs.ledger["kind"] == kind]


def _active_merchants(inputs: Inputs) -> pd.DataFrame:
    sales = inputs.ledger[inputs.ledger["kind"] == "sale"]
    return sales.drop_duplicates(["merchant_id", "period"])


INDICATORS: dict[str, IndicatorDef] = {
    "incident_rate": IndicatorDef(10_000, _trip_rate(_column("incidents"))),
    "severe_incident_rate": IndicatorDef(10_000, _trip_rate(_column("severe"))),
    "violence_rate": IndicatorDef(10_000, _trip_rate(_column("violence"))),
    "accident_rate": IndicatorDef(10_000, _trip_rate(_column("accidents"))),
    "riders_with_incident": IndicatorDef(1_000, _riders_with_incident),
    "night_share": IndicatorDef(100, _trip_rate(_column("night"))),
    "experienced_share": IndicatorDef(100, _trip_rate(_column("experienced"))),
    "hot_zone_share": IndicatorDef(100, _trip_rate(_hot_trip), needs="hot_zones"),
    "predicted_risk": IndicatorDef(10_000, _trip_rate(_predicted), needs="scores", resample=False),
    "chargeback_rate": IndicatorDef(
        1_000, _merchant_counts(_kind("chargeback"), _kind("sale")), needs="merchant_ledger"
    ),
    "credit_event_rate": IndicatorDef(
        100, _merchant_counts(lambda i: i.credit_events, _active_merchants), needs="merchant_ledger"
    ),
}
"""Every indicator the configuration may name, by name (an unknown name is a config error)."""


def available(inputs: Inputs, name: str) -> str | None:
    """Why an indicator cannot be computed from these inputs, or None when it can."""
    needs = INDICATORS[name].needs
    if needs == "hot_zones" and inputs.hot_zones is None:
        return (
            "not available: no batch zone map given (--hot-zones zones.parquet from `safetyml score-zones`)"
        )
    if needs == "scores" and inputs.scores is None:
        return (
            f"not available: no scored trips given (--scores FILE: trip_id and {INCIDENT_RISK} probability)"
        )
    if needs == "merchant_ledger" and inputs.ledger.empty:
        return "not available: the merchant_ledger table is empty or absent"
    return None


# ---------------------------------------------------------------------------------------------- panel


@dataclass
class Panel:
    """Counts of every indicator for every unit (period × city, or period × zone) of one level."""

    level: str
    units: pd.DataFrame  # period, city, h3 (zone level), market, group, trips
    indicators: list[str]
    num: np.ndarray  # (units, indicators); NaN where the unit has no denominator
    den: np.ndarray
    scale: np.ndarray  # (indicators,)
    resample: np.ndarray  # (indicators,) bool
    notes: dict[str, str] = field(default_factory=dict)  # indicator → why it was left out
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # fits reused by every draw
    cells: np.ndarray | None = None  # (units, len(CELLS)) incident counts per cell, when incidents count

    @property
    def raw(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.den > 0, self.scale * self.num / np.where(self.den > 0, self.den, 1), np.nan)

    def period_codes(self) -> tuple[np.ndarray, np.ndarray]:
        codes, uniques = pd.factorize(self.units["period"], sort=True)
        return codes, np.asarray(uniques)

    def group_codes(self, min_units: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Shrinkage group of each unit, and its pool (the same group over all periods).

        The group is the unit's market within the period (cities) or its city within the period
        (zones). A group with fewer than ``min_units`` units cannot estimate its between-unit variance
        (three cities say little), so its units join the period's pooled group ``*`` instead."""
        group = self.units["group"].astype(str)
        size = (self.units["period"].astype(str) + "|" + group).map(
            (self.units["period"].astype(str) + "|" + group).value_counts()
        )
        group = group.where(size >= min_units, "*")
        groups = pd.factorize(self.units["period"].astype(str) + "|" + group)[0]
        return groups, pd.factorize(group)[0]


def build_panel(inputs: Inputs, names: list[str], level: str, min_trips: int = 1) -> Panel:
    """Count ``names`` for every unit of ``level`` with at least ``min_trips`` trips in the period."""
    keys = CITY_KEYS if level == "city" else ZONE_KEYS
    _, codes, table = inputs.unit_codes(level)
    trips = table.assign(trips=np.bincount(codes, minlength=len(table)))
    units = trips[trips["trips"] >= min_trips].sort_values(keys).reset_index(drop=True)
    markets = {c: info.market for c, info in cities.registry().items()}
    units["market"] = units["city"].map(markets).fillna("unknown")
    units["group"] = units["market"] if level == "city" else units["city"]
    kept, notes = [], {}
    for name in names:
        reason = available(inputs, name)
        if reason:
            notes[name] = reason
        else:
            kept.append(name)
    num = np.full((len(units), len(kept)), np.nan)
    den = np.zeros((len(units), len(kept)))
    for j, name in enumerate(kept):
        counts = INDICATORS[name].counts(inputs, level)
        merged = units[keys].merge(counts, on=keys, how="left")
        den[:, j] = merged["den"].fillna(0).to_numpy(dtype="float64")
        num[:, j] = np.where(den[:, j] > 0, merged["num"].fillna(0).to_numpy(dtype="float64"), np.nan)
    scale = np.array([INDICATORS[n].scale for n in kept], dtype="float64")
    resample = np.array([INDICATORS[n].resample for n in kept], dtype=bool)
    cells = None
    if any(n in EVENT_CELLS for n in kept):
        cells = np.column_stack(
            [
                units[keys]
                .merge(_trip_rate(_column(c))(inputs, level), on=keys, how="left")["num"]
                .to_numpy()
                for c in CELLS
            ]
        )
    return Panel(level, units, kept, num, den, scale, resample, notes, cells=cells)


def read_optional(path: Path | None) -> pd.DataFrame | None:
    """A Parquet or CSV file given on the command line, or None."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
