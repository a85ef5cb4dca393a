"""The point-in-time aggregation engine: entity features as of any number of (id, as_of) queries at once.

How it works (vectorised, no Python loop per row). For each (entity, source table) the events are sorted
by (entity code, known time) and every aggregated quantity (a count, or a filtered sum) becomes a cumulative
sum over that order. Event times are replaced by their rank in the sorted distinct event times, so a single
int64 key ``code * R + rank`` orders all events; a query (code, T) maps T to the number of distinct event
times known at T (``searchsorted`` left for ``time < T``, right for ``reported_at <= T``) and one
``searchsorted`` on the keys gives the position just past the entity's last known event. Then

    value over window w at T = cum[pos(T)] - cum[pos(T - w)]        (all time: cum[pos(T)] - cum[start])

i.e. the events known at T and not already known at T - w. Time since last = T minus the time at
pos(T) - 1. Daily volatility uses one event per (merchant, day) that becomes known at the end of the day.

Zone queries use H3 cells; the neighbour ring is the sum of the seven cells of ``grid_disk(cell, 1)``; rates
are shrunk to the city's rate at the same T (empirical Bayes, see :func:`eb_rate`). A query without a cell
(missing coordinates) gets the city-level value for rates and shares and NaN for volumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from safetyml import cities
from safetyml.features import zones
from safetyml.features.definitions import (
    KNOWN_TIME,
    PAIR_SEPARATOR,
    FeatureDefinition,
    FeatureSet,
    FeatureSpec,
    Measure,
    window_ns,
)
from safetyml.features.request import hour_angle, local_hour_weekday, night_flag, to_ns
from safetyml.tables import Tables

DAY_NS = 86_400 * 10**9
NAT = np.iinfo(np.int64).min
STREAM_AGGS = {"max", "std", "distinct", "rate"}


# ---------------------------------------------------------------------------------------------- events


@dataclass
class EventData:
    """Contract tables prepared for aggregation: int64 ns times, entity codes, derived columns, cells."""

    trips: pd.DataFrame
    incidents: pd.DataFrame
    merchant_ledger: pd.DataFrame
    credit_events: pd.DataFrame
    riders: pd.DataFrame
    merchants: pd.DataFrame
    zone_trips: pd.DataFrame  # one row per (trip, distinct endpoint cell); ``row`` = the trip's row in trips
    zone_incidents: pd.DataFrame  # incidents that have a cell
    index: dict[
        str, pd.Index
    ]  # id -> code per entity (zone: seen cells and their neighbours; city: registry)
    max_time: int  # latest event time in the data (ns)

    def table(self, entity: str, source: str) -> pd.DataFrame:
        if entity == "zone":
            return {"trips": self.zone_trips, "incidents": self.zone_incidents}[source]
        return getattr(self, source)


CODE_COLUMN = {"rider": "rider_code", "merchant": "merchant_code", "zone": "zone_code", "pair": "pair_code"}


def trip_city(trips: pd.DataFrame, merchants: pd.DataFrame) -> pd.Series:
    """A trip's city: its own ``city`` column where present, else its merchant's city."""
    pos = _codes(pd.Index(merchants["merchant_id"]), trips["merchant_id"])
    merchant_city = merchants["city"].astype("str").take(np.maximum(pos, 0)).reset_index(drop=True)
    merchant_city = merchant_city.where(pd.Series(pos >= 0))
    if "city" in trips.columns:
        return trips["city"].astype("str").reset_index(drop=True).fillna(merchant_city)
    return merchant_city


def _times(values: pd.Series) -> np.ndarray:
    return to_ns(values) if len(values) else np.zeros(0, dtype=np.int64)


def _codes(index: pd.Index, values: pd.Series) -> np.ndarray:
    """Position of each value in ``index`` (-1 if absent), hashing only the distinct values."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    codes, uniques = pd.factorize(values)
    lookup = index.get_indexer(pd.Index(uniques))
    return np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1)


def prepare_events(tables: Tables) -> EventData:
    """Derive what aggregation needs from validated tables (all computed once per build)."""
    riders = tables.riders.reset_index(drop=True)
    merchants = tables.merchants.reset_index(drop=True)
    rider_index, merchant_index = pd.Index(riders["rider_id"]), pd.Index(merchants["merchant_id"])
    raw = tables.trips.reset_index(drop=True)
    city = trip_city(raw, merchants)
    trips = pd.DataFrame(
        {
            "trip_id": raw["trip_id"],
            "rider_id": raw["rider_id"],
            "merchant_id": raw["merchant_id"],
            "rider_code": _codes(rider_index, raw["rider_id"]),
            "merchant_code": _codes(merchant_index, raw["merchant_id"]),
            "t": _times(raw["requested_at"]),
            "city": city,
            "distance_km": raw["distance_km"].to_numpy(dtype="float64"),
            "order_value": raw["order_value"].to_numpy(dtype="float64"),
            "payment_method": raw["payment_method"],
            "rain": (
                raw["rain"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
                if "rain" in raw.columns
                else np.full(len(raw), np.nan)
            ),
            "pickup_cell": zones.cells_int(raw["pickup_lat"], raw["pickup_lng"]),
            "dropoff_cell": zones.cells_int(raw["dropoff_lat"], raw["dropoff_lng"]),
        }
    )
    hour, weekday = local_hour_weekday(raw["requested_at"], trips["city"])
    trips["local_hour"], trips["weekday"], trips["night"] = hour, weekday, night_flag(hour)
    trips["hour_cos"], trips["hour_sin"] = hour_angle(hour)
    trips["requested_at"] = trips["t"]
    n_merchants = len(merchant_index)

    inc = tables.incidents.reset_index(drop=True)
    trip_pos = _codes(pd.Index(raw["trip_id"]), inc["trip_id"])
    has_trip = trip_pos >= 0
    icity = pd.Series([None] * len(inc), dtype="object")
    icity[has_trip] = trips["city"].to_numpy()[trip_pos[has_trip]]
    for key, index, table in (("merchant_id", merchant_index, merchants), ("rider_id", rider_index, riders)):
        pos = _codes(index, inc[key])
        by_key = pd.Series(
            np.where(pos >= 0, table["city"].astype("object").to_numpy()[np.maximum(pos, 0)], None)
        )
        icity = icity.where(icity.notna(), by_key)
    cell = zones.cells_int(inc["lat"], inc["lng"]) if len(inc) else np.zeros(0, dtype=np.int64)
    fallback = np.zeros(len(inc), dtype=np.int64)
    fallback[has_trip] = trips["pickup_cell"].to_numpy()[trip_pos[has_trip]]
    cell = np.where(cell == zones.NO_CELL, fallback, cell)
    incidents = pd.DataFrame(
        {
            "incident_id": inc["incident_id"],
            "trip_id": inc["trip_id"],
            "rider_code": _codes(rider_index, inc["rider_id"]),
            "merchant_code": _codes(merchant_index, inc["merchant_id"]),
            "t": _times(inc["reported_at"]),
            "occurred_at": _times(inc["occurred_at"]),
            "type": inc["type"],
            "severity": inc["severity"].to_numpy(dtype="float64"),
            "city": icity.to_numpy(),
            "cell": cell,
        }
    )
    incidents["reported_at"] = incidents["t"]
    # event time: the linked trip's request time (the same clock as the trips a rate divides by), else
    # when the incident happened
    event_t = incidents["occurred_at"].to_numpy().copy()
    event_t[has_trip] = trips["t"].to_numpy()[trip_pos[has_trip]]
    incidents["event_t"] = event_t
    ihour, _ = local_hour_weekday(inc["occurred_at"], incidents["city"])
    incidents["local_hour"], incidents["night"] = ihour, night_flag(ihour)

    led = tables.merchant_ledger.reset_index(drop=True)
    ledger = pd.DataFrame(
        {
            "merchant_code": _codes(merchant_index, led["merchant_id"]),
            "t": _times(led["event_at"]),
            "kind": led["kind"],
            "amount": led["amount"].to_numpy(dtype="float64"),
        }
    )
    ledger["event_at"] = ledger["t"]
    ce = tables.credit_events.reset_index(drop=True)
    credit = pd.DataFrame(
        {
            "merchant_code": _codes(merchant_index, ce["merchant_id"]),
            "t": _times(ce["event_at"]),
            "kind": ce["kind"],
        }
    )

    pickup, dropoff = trips["pickup_cell"].to_numpy(), trips["dropoff_cell"].to_numpy()
    second = np.flatnonzero(dropoff != pickup)
    # zone trips point at their trip (``row``) instead of copying its columns; filters read the trips table
    rows = np.concatenate([np.arange(len(trips)), second])
    cells = np.concatenate([pickup, dropoff[second]])
    keep = cells != zones.NO_CELL
    zone_trips = pd.DataFrame(
        {"row": rows[keep], "cell": cells[keep], "t": trips["t"].to_numpy()[rows[keep]]}
    )
    zone_incidents = incidents[incidents["cell"].to_numpy() != zones.NO_CELL].reset_index(drop=True)
    # Zone codes cover every seen cell and its neighbours, so a ring (grid_disk k=1) query of any seen or
    # neighbouring cell finds its events; a cell outside has no events in its ring by construction.
    seen = np.unique(np.concatenate([zone_trips["cell"].to_numpy(), zone_incidents["cell"].to_numpy()]))
    disk = zones.neighbours(seen).ravel()
    zone_index = pd.Index(np.unique(np.concatenate([seen, disk[disk != zones.NO_CELL]])))
    city_index = pd.Index(sorted(cities.registry()))
    for frame in (zone_trips, zone_incidents):
        frame["zone_code"] = zone_index.get_indexer(pd.Index(frame["cell"].to_numpy()))
        frame["zone_city_code"] = city_index.get_indexer(
            pd.Index(zones.nearest_city(frame["cell"].to_numpy()))
        )

    trip_pairs = _pair_keys(trips["rider_code"].to_numpy(), trips["merchant_code"].to_numpy(), n_merchants)
    incident_pairs = _pair_keys(
        incidents["rider_code"].to_numpy(), incidents["merchant_code"].to_numpy(), n_merchants
    )
    keys = np.concatenate([trip_pairs, incident_pairs])
    pair_index = pd.Index(np.unique(keys[keys >= 0]))
    trips["pair_code"] = np.where(trip_pairs >= 0, pair_index.get_indexer(trip_pairs), -1)
    incidents["pair_code"] = np.where(incident_pairs >= 0, pair_index.get_indexer(incident_pairs), -1)

    times = [trips["t"], incidents["t"], ledger["t"], credit["t"]]
    max_time = max((int(t.max()) for t in times if len(t)), default=0)
    return EventData(
        trips=trips,
        incidents=incidents,
        merchant_ledger=ledger,
        credit_events=credit,
        riders=riders,
        merchants=merchants,
        zone_trips=zone_trips,
        zone_incidents=zone_incidents,
        index={
            "rider": rider_index,
            "merchant": merchant_index,
            "zone": zone_index,
            "city": city_index,
            "pair": pair_index,
        },
        max_time=max_time,
    )


def _pair_keys(rider_codes: np.ndarray, merchant_codes: np.ndarray, n_merchants: int) -> np.ndarray:
    """One int64 per (rider, merchant) pair; -1 when either is unknown."""
    ok = (rider_codes >= 0) & (merchant_codes >= 0)
    return np.where(ok, rider_codes.astype(np.int64) * max(n_merchants, 1) + merchant_codes, -1)


def where_mask(frame: pd.DataFrame, where: dict[str, Any]) -> np.ndarray:
    """Rows matching every condition (missing values never match)."""
    mask = np.ones(len(frame), dtype=bool)
    for column, cond in where.items():
        values = frame[column]
        if isinstance(cond, dict):
            for op, target in cond.items():
                if op == "in":
                    hit = values.isin(list(target))
                else:
                    hit = {
                        "ge": values >= target,
                        "gt": values > target,
                        "le": values <= target,
                        "lt": values < target,
                        "ne": values != target,
                    }[op]
                mask &= pd.Series(hit).fillna(False).to_numpy(dtype=bool)
        elif isinstance(cond, list):
            mask &= values.isin(cond).to_numpy(dtype=bool)
        else:
            mask &= pd.Series(values == cond).fillna(False).to_numpy(dtype=bool)
    return mask


# ---------------------------------------------------------------------------------------------- streams


class Stream:
    """Events of one source grouped by entity code and sorted by known time, with cumulative sums.

    ``rows`` maps each event to a row of ``frame`` (filters and values are read through it); an event may
    appear under several codes (the neighbour ring), hence the separate mapping.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        codes: np.ndarray,
        times: np.ndarray,
        inclusive: bool,
        rows: np.ndarray | None = None,
    ):
        rows = np.arange(len(codes)) if rows is None else rows
        ok = (codes >= 0) & (times != NAT)
        codes, times, rows = codes[ok].astype(np.int64), times[ok], rows[ok]
        # Rank of each time among all event times (ties share the first rank): an order-preserving
        # compression of time that keeps ``code * R + rank`` inside int64.
        t_order = np.argsort(times, kind="stable")
        self.grid = times[t_order]
        rank = np.empty(len(times), dtype=np.int64)
        if len(times):  # rank of a sorted value = index of its first occurrence
            first = np.ones(len(times), dtype=bool)
            first[1:] = self.grid[1:] != self.grid[:-1]
            rank[t_order] = np.maximum.accumulate(np.where(first, np.arange(len(times)), 0))
        self.R = len(self.grid) + 1
        keys = codes * self.R + rank
        order = _sort_order(keys)
        self.keys = keys[order]
        self.times = times[order]
        self.inclusive = inclusive
        self._source = frame  # not copied: cumulative sums read its columns through ``rows``
        self.rows = rows[order]
        self._cums: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def cum(
        self, where: dict[str, Any] | None = None, value: str | None = None, square: bool = False
    ) -> np.ndarray:
        """Per-entity running total of ``value`` (1 for a count) over rows matching ``where``: element i is
        the sum over the events of event i's entity up to and including i (answer windows with
        ``Queries.between``, which knows where each entity starts).

        The totals restart at each entity, so no other entity's events, nor any event after T, change the
        rounding of a window's sum at T: a global prefix sum would make a window's value depend on
        unrelated data (and on how the events are partitioned, which the Dask engine changes). Counts are
        integers, exact in a global float64 prefix sum: they take that faster path.
        """
        key = json.dumps([where or {}, value, square], sort_keys=True, default=str)
        if key not in self._cums:
            if value is None:
                x = np.ones(len(self.keys))
            else:
                x = self.values(value)
                x[np.isnan(x)] = 0.0
            if square:
                x = x * x
            if where:
                x = x * where_mask(self._source, where)[self.rows]
            self._cums[key] = self._running(x, exact_global=value is None)
        return self._cums[key]

    def _running(self, x: np.ndarray, exact_global: bool) -> np.ndarray:
        """Inclusive running sums of ``x`` restarting at each entity (events are sorted by entity)."""
        if not len(x):
            return x
        if exact_global:  # integer-valued: the global prefix minus the prefix before the entity is exact
            total, first = np.cumsum(x), self.entity_first()
            return total - (total[first] - x[first])
        return pd.Series(x).groupby(self.keys // self.R, sort=False).cumsum().to_numpy()

    def entity_first(self) -> np.ndarray:
        """Position of the first event of each event's entity (events are sorted by entity)."""
        if "entity_first" not in self._cums:
            codes = self.keys // self.R
            start = np.ones(len(codes), dtype=bool)
            start[1:] = codes[1:] != codes[:-1]
            self._cums["entity_first"] = np.maximum.accumulate(np.where(start, np.arange(len(codes)), 0))
        return self._cums["entity_first"]

    def values(self, value: str) -> np.ndarray:
        """The ``value`` column of each event, in stream order (NaN where missing)."""
        return self._source[value].to_numpy(dtype="float64", na_value=np.nan)[self.rows]

    def moments(self, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-entity running (count of non-missing values, sum, sum of squares) of ``value`` minus its
        entity's first value, each event's total including itself.

        The shift leaves the variance unchanged and keeps it exact when the std is small next to the mean
        (the first value is known before any later event, so the shift is point-in-time too). The sums
        restart at each entity (a pandas group-wise cumsum) so that no other entity's events, nor any event
        after T, change the rounding of a window's moments: a global prefix sum would make a near-zero std
        depend on unrelated data.
        """
        key = f"moments:{value}"
        if key not in self._cums:
            x = self.values(value)
            valid = np.isfinite(x)
            d = np.where(valid, x - np.nan_to_num(x[self.entity_first()] if len(x) else x), 0.0)
            self._cums[key] = (
                self._running(valid.astype("float64"), exact_global=True),
                self._running(d, exact_global=False),
                self._running(d * d, exact_global=False),
            )
        return self._cums[key]

    def range_max(self, value: str) -> RangeMax:
        key = f"max:{value}"
        if key not in self._cums:
            x = self.values(value)
            self._cums[key] = RangeMax(np.where(np.isfinite(x), x, -np.inf))
        return self._cums[key]

    def positions(self, codes: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Global position just past the last event of each query's entity known at its time t."""
        return Queries(codes, t).pos(self, 0)

    def starts(self, codes: np.ndarray) -> np.ndarray:
        return Queries(codes, np.zeros(len(codes), dtype=np.int64)).pos(self, None)


class RangeMax:
    """Maximum of ``x[s:e]`` for many ranges at once in O(n) memory: maxima within fixed blocks from the left
    and from the right, plus a sparse table over whole blocks (a block-decomposed range-maximum query).

    Written here because the queries are arbitrary as_of times (trip requests, month ends, the store's
    as_of), not the events themselves that ``pandas.rolling().max()`` answers at; tested against it.
    """

    BLOCK = 16

    def __init__(self, x: np.ndarray):
        n, b = len(x), self.BLOCK
        blocks = np.full((max(-(-n // b), 1), b), -np.inf)
        blocks.ravel()[:n] = x
        self.x = blocks.ravel()
        self.prefix = np.maximum.accumulate(blocks, axis=1).ravel()
        self.suffix = np.maximum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()
        self.levels = [blocks.max(axis=1)]  # level j: max over 2**j blocks starting at each block
        while 2 ** len(self.levels) <= len(blocks):
            prev, step = self.levels[-1], 2 ** (len(self.levels) - 1)
            self.levels.append(np.maximum(prev[:-step], prev[step:]))
        self.short = [self.x]  # level j: max over 2**j elements starting at each element (ranges < a block)
        while 2 ** len(self.short) <= b:
            prev, step = self.short[-1], 2 ** (len(self.short) - 1)
            self.short.append(np.maximum(prev, np.concatenate([prev[step:], np.full(step, -np.inf)])))

    def query(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """max(x[start:end]) per range; -inf for an empty range."""
        b = self.BLOCK
        out = np.full(len(start), -np.inf)
        last = end - 1
        first_block, last_block = start // b, last // b
        nonempty = end > start
        same = np.flatnonzero(nonempty & (first_block == last_block))
        if len(same):  # two overlapping power-of-two spans from the element-level table
            s, e = start[same], end[same]
            level = np.floor(np.log2(e - s)).astype(np.int64)
            best = np.empty(len(same))
            for j in np.unique(level):
                rows = np.flatnonzero(level == j)
                table = self.short[j]
                best[rows] = np.maximum(table[s[rows]], table[e[rows] - 2**j])
            out[same] = best
        across = np.flatnonzero(nonempty & (first_block < last_block))
        if len(across):
            best = np.maximum(self.suffix[start[across]], self.prefix[last[across]])
            lo, hi = first_block[across] + 1, last_block[across]  # whole blocks [lo, hi)
            inner = hi > lo
            length = np.where(inner, hi - lo, 1)
            level = np.floor(np.log2(length)).astype(np.int64)
            for j in np.unique(level[inner]):
                rows = np.flatnonzero(inner & (level == j))
                table = self.levels[j]
                best[rows] = np.maximum(best[rows], np.maximum(table[lo[rows]], table[hi[rows] - 2**j]))
            out[across] = best
        return out


def _sort_order(keys: np.ndarray) -> np.ndarray:
    """``argsort(keys)``; when ``key * n + i`` fits in int64, one ``np.sort`` of packed values (about twice
    as fast as ``argsort`` on millions of int64: it moves 8 bytes per element instead of 16)."""
    n = len(keys)
    if n == 0 or (int(keys.max()) + 1) * n >= 2**62:
        return np.argsort(keys, kind="stable")
    packed = np.sort(keys * n + np.arange(n, dtype=np.int64))
    return packed % n


class Queries:
    """A batch of (entity code, as_of ns) queries with cached stream positions.

    Queries are searched in sorted order (by time for the time rank, by (code, time) for the keys): sorted
    needles make ``np.searchsorted`` cache-friendly, several times faster on a million rows.
    """

    def __init__(self, codes: np.ndarray, t: np.ndarray):
        self.codes = np.asarray(codes, dtype=np.int64)
        self.t = np.asarray(t, dtype=np.int64)
        self.t_order = np.argsort(self.t, kind="stable")
        self.t_sorted = self.t[self.t_order]
        self.ct_order = self.t_order[np.argsort(self.codes[self.t_order], kind="stable")]
        self._pos: dict[tuple[int, int | None], np.ndarray] = {}  # kept for the next measure on a stream
        self._unique: tuple[np.ndarray, np.ndarray] | None = None

    def pos(self, stream: Stream, offset: int | None) -> np.ndarray:
        """Positions at T - offset (offset None: the entity's first event, for all-time sums)."""
        key = (id(stream), offset)
        if key not in self._pos:
            if offset is None:  # one search per distinct entity, not per query
                if self._unique is None:
                    self._unique = np.unique(self.codes, return_inverse=True)
                codes, inverse = self._unique
                starts = np.searchsorted(stream.keys, np.where(codes >= 0, codes * stream.R, -1), side="left")
                self._pos[key] = starts[inverse.ravel()]
                return self._pos[key]
            side = "right" if stream.inclusive else "left"
            rank = np.empty(len(self.t), dtype=np.int64)
            rank[self.t_order] = np.searchsorted(stream.grid, self.t_sorted - offset, side=side)
            needles = np.where(self.codes >= 0, self.codes * stream.R + rank, -1)[self.ct_order]
            # int32 when the stream allows: half the memory of the kept positions (a ring keeps 7 sets)
            dtype = np.int32 if len(stream.keys) < 2**31 - 1 else np.int64
            pos = np.empty(len(self.t), dtype=dtype)
            pos[self.ct_order] = np.searchsorted(stream.keys, needles, side="left")
            self._pos[key] = pos
        return self._pos[key]

    def between(
        self, stream: Stream, running: np.ndarray, upper: int | None, lower: int | None
    ) -> np.ndarray:
        """Sum of the stream's values known in [T - lower, T - upper) (``lower`` None: since the first), from
        per-entity running totals (``Stream.cum``, ``Stream.moments``): the total just before the upper
        position minus the total just before the lower one, where a position at the entity's first event
        has a total of 0."""
        first = self.pos(stream, None)

        def before(position: np.ndarray) -> np.ndarray:
            inside = position > first
            if not len(running):
                return np.zeros(len(position))
            return np.where(inside, running[np.where(inside, position - 1, 0)], 0.0)

        lower_total = 0.0 if lower is None else before(self.pos(stream, lower))
        return before(self.pos(stream, upper)) - lower_total

    def window_sum(self, stream: Stream, running: np.ndarray, window: int | None) -> np.ndarray:
        return self.between(stream, running, 0, window)


class RingQueries:
    """Queries over a cell's neighbour ring (grid_disk k=1): each windowed sum is the sum of the seven
    cells' windowed sums, answered on the per-cell stream.

    Instead of repeating each zone event once per cell of its disk (a 7x larger stream of codes, times,
    rows and cumulative sums: 20 GiB on the large preset), the queries are asked seven times, one disk
    slot at a time. Each slot keeps its positions (int32) like any ``Queries``: a ring's windows are asked
    by several features, and searching them again cost ~15% of a medium build. Only sums decompose this
    way (counts, sums, ratios and rates of them: every ring aggregation the definitions allow); a maximum,
    deviation or distinct count over a ring would need the events themselves.
    """

    def __init__(self, slots: np.ndarray, t: np.ndarray):
        # slots: (queries, 7) zone codes of each query cell's disk, -1 for padding or unknown cells
        self.parts = [Queries(slots[:, j], t) for j in range(slots.shape[1])]

    def between(
        self, stream: Stream, running: np.ndarray, upper: int | None, lower: int | None
    ) -> np.ndarray:
        out = self.parts[0].between(stream, running, upper, lower)
        for part in self.parts[1:]:
            out = out + part.between(stream, running, upper, lower)
        return out

    def window_sum(self, stream: Stream, running: np.ndarray, window: int | None) -> np.ndarray:
        return self.between(stream, running, 0, window)

    def pos(self, stream: Stream, offset: int | None) -> np.ndarray:
        raise ValueError(
            "a ring feature must be a count, sum, ratio or rate (a sum over the seven cells); "
            "maxima, deviations and distinct counts have no ring"
        )


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def eb_rate(
    k: np.ndarray, n: np.ndarray, city_k: np.ndarray, city_n: np.ndarray, prior: float, per: float
) -> np.ndarray:
    """Empirical-Bayes (gamma-Poisson) incidents per ``per`` trips shrunk toward the city rate.

    With the city's rate m = K/N as the prior mean and a prior worth ``prior`` trips (set in zone.yaml), the
    posterior mean rate is (k + prior·m) / (n + prior): a zone with 2 trips sits at the city rate; a zone with
    20,000 trips sits at its own rate.
    """
    m = _ratio(city_k, city_n)
    return per * (k + prior * m) / (n + prior)


# ---------------------------------------------------------------------------------------------- engine


def zone_floor_ns(fs: FeatureSet) -> int | None:
    """The zone features' ``as_of_floor`` in ns (None: zones are answered at T itself)."""
    floor = fs.entity_file("zone").as_of_floor if "zone" in fs.files else None
    return window_ns(floor) if floor else None


class FeatureEngine:
    """Computes the entity features of a :class:`FeatureSet` from a :class:`Tables`, point in time."""

    def __init__(self, tables: Tables | None, fs: FeatureSet, events: EventData | None = None):
        self.fs = fs
        self.events = events or prepare_events(tables)
        self.index = self.events.index
        self._streams: dict[tuple, Stream] = {}
        self.zone_floor = zone_floor_ns(fs)

    # --------------------------------------------------------------------------------------- streams
    def stream(
        self,
        entity: str,
        source: str,
        group: str | None = None,
        where: dict | None = None,
        clock: tuple | None = None,
    ) -> Stream:
        """Events of ``source`` keyed by ``entity`` or by city (``group='city'``), optionally filtered
        (ring features ask the per-cell stream through :class:`RingQueries`).

        ``clock`` re-times the events (see :meth:`_retime`): ``("mature", shift)`` for rate numerators,
        ``("distinct", column, window)`` for distinct counts.
        """
        key = (entity, source, group, json.dumps(where or {}, sort_keys=True, default=str), clock)
        if key not in self._streams:
            frame = self.events.table(entity, source)
            if entity == "zone" and source == "trips":
                base, base_rows = self.events.trips, frame["row"].to_numpy()
            else:
                base, base_rows = frame, np.arange(len(frame))
            rows = np.flatnonzero(where_mask(base, where)[base_rows]) if where else np.arange(len(frame))
            times = frame["t"].to_numpy()[rows]
            if group == "city":
                codes = frame["zone_city_code"].to_numpy()[rows]
            else:
                codes = frame[CODE_COLUMN[entity]].to_numpy()[rows]
            if clock is not None:
                codes, times, rows = self._retime(clock, key[:4], frame, base, base_rows, codes, times, rows)
            self._streams[key] = Stream(base, codes, times, KNOWN_TIME[source][1], rows=base_rows[rows])
        return self._streams[key]

    def _retime(self, clock: tuple, events: tuple, frame, base, base_rows, codes, times, rows):
        """Events re-timed so that one-dimensional "known at T" sums answer two-sided conditions.

        ``("mature", shift)``: an incident counts at T when its event time is < T - shift *and* it is
        reported by T, i.e. when ``max(event_t + shift + 1ns, reported_at) <= T``.
        ``("distinct", column, w)``: an event is the first of its (entity, value) in the window [T-w, T) iff
        its previous occurrence is before T - w; counting events with ``max(t, previous + w) < T`` and
        subtracting the events before T - w leaves one event per distinct value (``w`` None: first
        occurrences only, all time).
        """
        if clock[0] == "mature":
            shifted = frame["event_t"].to_numpy()[rows] + clock[1] + 1
            return codes, np.maximum(shifted, times), rows
        _, column, window = clock
        key = ("previous", *events, column)
        if key not in self._streams:  # one (previous occurrence) pass per stream, shared by every window
            values, _ = pd.factorize(base[column])
            vcode = values[base_rows[rows]]
            keep = np.flatnonzero((vcode >= 0) & (codes >= 0))
            c, t, v = codes[keep], times[keep], vcode[keep]
            # (entity, value) groups in time order: sort by time, then stably by the group
            order = np.argsort(t, kind="stable")
            order = order[np.argsort(c[order] * (int(v.max(initial=0)) + 1) + v[order], kind="stable")]
            same = np.zeros(len(order), dtype=bool)
            same[1:] = (c[order][1:] == c[order][:-1]) & (v[order][1:] == v[order][:-1])
            previous = np.full(len(order), NAT, dtype=np.int64)
            previous[order[1:][same[1:]]] = t[order][:-1][same[1:]]
            self._streams[key] = (keep, previous)
        keep, previous = self._streams[key]
        codes, times, rows = codes[keep], times[keep], rows[keep]
        if window == "all":  # the distinct values' events, unchanged (the subtracted term)
            return codes, times, rows
        has = previous != NAT
        if window is None:
            return codes[~has], times[~has], rows[~has]
        return codes, np.where(has, np.maximum(times, previous + window), times), rows

    def ring_codes(self) -> np.ndarray:
        """For each zone code, the codes of its grid_disk(k=1) cells (-1 for cells outside the index)."""
        if not hasattr(self, "_ring_codes"):
            cells = self.index["zone"].to_numpy()
            disk = zones.neighbours(cells)
            codes = self.index["zone"].get_indexer(pd.Index(disk.ravel())).reshape(disk.shape)
            codes[disk == zones.NO_CELL] = -1
            self._ring_codes = codes
        return self._ring_codes

    def daily_stream(self, entity: str, source: str, where: dict, value: str) -> Stream:
        """One event per (entity, UTC day) with the day's total, known at the end of that day."""
        key = (entity, source, "daily", json.dumps([where, value], sort_keys=True, default=str))
        if key not in self._streams:
            frame = self.events.table(entity, source)
            frame = frame.loc[where_mask(frame, where)] if where else frame
            column = CODE_COLUMN[entity]
            daily = (
                pd.DataFrame(
                    {
                        "code": frame[column].to_numpy(),
                        "day": frame["t"].to_numpy() // DAY_NS,
                        "v": frame[value].to_numpy(dtype="float64"),
                    }
                )
                .groupby(["code", "day"], sort=False)["v"]
                .sum()
                .reset_index()
            )
            daily["t"] = (daily["day"].to_numpy() + 1) * DAY_NS
            self._streams[key] = Stream(
                daily[["v"]], daily["code"].to_numpy(), daily["t"].to_numpy(), inclusive=True
            )
        return self._streams[key]

    # --------------------------------------------------------------------------------------- queries
    def codes(self, entity: str, ids: Any) -> np.ndarray:
        """Entity codes of ids (-1 when unknown); zone ids are H3 cells (strings or ints)."""
        if entity == "zone":
            return self.index["zone"].get_indexer(pd.Index(self.cell_ints(ids)))
        if entity == "pair":
            parts = pd.Series(ids, dtype="object").astype("str").str.split(PAIR_SEPARATOR, n=1, expand=True)
            if parts.shape[1] < 2:
                return np.full(len(parts), -1, dtype=np.int64)
            riders = self.index["rider"].get_indexer(pd.Index(parts[0].to_numpy()))
            merchants = self.index["merchant"].get_indexer(pd.Index(parts[1].fillna("").to_numpy()))
            keys = _pair_keys(riders, merchants, len(self.index["merchant"]))
            return np.where(keys >= 0, self.index["pair"].get_indexer(pd.Index(keys)), -1)
        if isinstance(ids, pd.Series):
            return self.index[entity].get_indexer(pd.Index(ids))
        return self.index[entity].get_indexer(pd.Index(pd.Series(ids, dtype="object").to_numpy()))

    @staticmethod
    def cell_ints(ids: Any) -> np.ndarray:
        arr = ids.to_numpy() if isinstance(ids, pd.Series) else np.asarray(ids)
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        return zones.to_int(pd.Series(arr, dtype="object"))

    def _measure(
        self, entity: str, measure: Measure, q: Queries | RingQueries, window: int | None, group: str | None
    ) -> np.ndarray:
        stream = self.stream(entity, measure.source, group)
        return q.window_sum(stream, stream.cum(measure.where, measure.value), window)

    def _stream_agg(
        self, entity: str, d: FeatureDefinition, q: Queries | RingQueries, group: str | None
    ) -> np.ndarray:
        """max, std, distinct and rate (or a rate's pending activity) of one column for a batch of queries."""
        spec, window = d.spec, d.window_ns
        where = spec.where or None
        if spec.agg == "rate":
            den = spec.denominator
            den_stream = self.stream(entity, den.source or spec.source, group, den.where or None)
            ones = den_stream.cum(None, den.value)
            horizon = window_ns(d.horizon)
            if d.variant == "pending":
                return q.window_sum(den_stream, ones, horizon)
            n = q.between(den_stream, ones, horizon, None if window is None else horizon + window)
            k = self._mature_count(entity, spec.source, where, group, q, horizon, window)
            return n, k
        if spec.agg == "distinct":
            clock = ("distinct", spec.distinct, window)
            firsts = self.stream(entity, spec.source, group, where, clock)
            out = q.window_sum(firsts, firsts.cum(), None)
            if window is not None:
                events_key = (
                    entity,
                    spec.source,
                    group,
                    json.dumps(where or {}, sort_keys=True, default=str),
                )
                keep, _ = self._streams[("previous", *events_key, spec.distinct)]
                # every event has a value (the usual case): the plain stream already holds them, in order
                clock = None if keep.all() else ("distinct", spec.distinct, "all")
                events = self.stream(entity, spec.source, group, where, clock)
                ones = events.cum()
                out = out - q.between(events, ones, window, None)
            return out
        stream = self.stream(entity, spec.source, group, where)
        if spec.agg == "max":
            end, start = q.pos(stream, 0), q.pos(stream, window)
            best = stream.range_max(spec.value).query(start, end)
            return np.where(np.isfinite(best), best, np.nan)
        if spec.agg == "std":  # sample standard deviation (ddof=1, as pandas), NaN below two values
            count, total, squares = (q.window_sum(stream, c, window) for c in stream.moments(spec.value))
            with np.errstate(divide="ignore", invalid="ignore"):
                var = (squares - total * total / count) / (count - 1)
            return np.where(count >= 2, np.sqrt(np.maximum(var, 0.0)), np.nan)
        raise ValueError(f"agg {spec.agg!r} is not a stream aggregation")

    def _mature_count(
        self, entity, source, where, group, q: Queries | RingQueries, horizon: int, window: int | None
    ):
        """Events (incidents) whose event time is in [T - horizon - window, T - horizon) and that are
        reported by T: the numerator of a rate over the same event-time window as its activity."""
        upper = self.stream(entity, source, group, where, ("mature", horizon))
        count = q.between(upper, upper.cum(), 0, None)
        if window is not None:
            lower = self.stream(entity, source, group, where, ("mature", horizon + window))
            count = count - q.between(lower, lower.cum(), 0, None)
        return count

    def _formula(self, spec: FeatureSpec, window: int | None, meas) -> np.ndarray:
        """Aggregations that are functions of windowed sums (shared by riders, merchants, zones, rings)."""
        main = Measure(source=spec.source, where=spec.where, value=spec.value)
        if spec.agg == "count":
            return meas(Measure(source=spec.source, where=spec.where), window)
        if spec.agg == "sum":
            return meas(main, window)
        if spec.agg == "mean":
            return _ratio(meas(main, window), meas(Measure(source=spec.source, where=spec.where), window))
        if spec.agg in ("ratio", "net"):
            other = spec.denominator if spec.agg == "ratio" else spec.minus
            other = Measure(source=other.source or spec.source, where=other.where, value=other.value)
            if spec.agg == "ratio":
                return _ratio(meas(main, window), meas(other, window))
            return meas(main, window) - meas(other, window)
        if spec.agg == "trend":
            short, long = (window_ns(w) for w in spec.windows)
            pace_short = meas(main, short) / (short / DAY_NS)
            pace_long = meas(main, long) / (long / DAY_NS)
            return _ratio(pace_short, pace_long)
        raise ValueError(f"agg {spec.agg!r} is not a windowed-sum aggregation")

    def compute(
        self,
        entity: str,
        ids: Any,
        as_of: Any,
        city: Any = None,
        names: list[str] | None = None,
        codes: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Features of ``entity`` for each (id, as_of) row; ``names`` limits to some entity-level columns.

        ``as_of`` is one timestamp or one per row. For zones ``ids`` are H3 cells (strings or ints) and
        ``city`` gives each row's city (used only for rows without a cell). ``codes`` (riders, merchants)
        skips the id lookup when the caller already has the engine's integer codes.
        """
        n = len(ids) if ids is not None else len(codes)
        return pd.DataFrame(self.columns(entity, ids, as_of, city, names, codes), index=pd.RangeIndex(n))

    def columns(
        self,
        entity: str,
        ids: Any,
        as_of: Any,
        city: Any = None,
        names: list[str] | None = None,
        codes: np.ndarray | None = None,
        city_counts: CityCounts | None = None,
    ) -> dict[str, Any]:
        """:meth:`compute` as a dict of arrays (no DataFrame: building one copies every column once more).

        ``city_counts`` (zones) supplies the city-level quantities instead of this engine's own events
        (:meth:`zone_city_counts`): the Dask engine's H3-parent groups hold only part of a city."""
        n = len(ids) if ids is not None else len(codes)
        t = self._as_of_ns(as_of, n)
        defs = [d for d in self.fs.entity_features(entity) if names is None or d.name in names]
        if entity == "zone":
            return self._compute_zone(ids, t, city, defs, city_counts)
        q = Queries(self.codes(entity, ids) if codes is None else codes, t)
        return {d.name: self._entity_value(entity, d, q) for d in defs}

    @staticmethod
    def _as_of_ns(as_of: Any, n: int) -> np.ndarray:
        if isinstance(as_of, np.ndarray) and as_of.dtype == np.int64:
            return as_of
        if isinstance(as_of, (pd.Series, pd.DatetimeIndex, np.ndarray, list)):
            return to_ns(as_of)
        return np.full(n, to_ns([as_of])[0], dtype=np.int64)

    def _entity_value(self, entity: str, d: FeatureDefinition, q: Queries) -> Any:
        spec = d.spec
        window = d.window_ns
        table = self.events.riders if entity == "rider" else self.events.merchants
        if spec.agg == "tenure":
            start = np.full(len(q.codes), NAT, dtype=np.int64)
            known = q.codes >= 0
            start[known] = to_ns(table[spec.column])[q.codes[known]]
            days = (q.t - start) / DAY_NS
            return np.where(known & (q.t >= start), days, np.nan)
        if spec.agg == "attribute":
            values = np.full(len(q.codes), None, dtype=object)
            known = q.codes >= 0
            values[known] = table[spec.column].astype("object").to_numpy()[q.codes[known]]
            if d.kind == "categorical":
                return pd.Categorical(values, categories=d.categories)
            return values
        if spec.agg == "time_since_last":
            stream = self.stream(entity, spec.source, None, spec.where or None)
            end, start = q.pos(stream, 0), q.pos(stream, None)
            has = end > start
            last = stream.times[np.maximum(end - 1, 0)] if len(stream) else np.zeros(len(end), dtype=np.int64)
            return np.where(has, (q.t - last) / DAY_NS, np.nan)
        if spec.agg == "daily_cv":
            stream = self.daily_stream(entity, spec.source, spec.where, spec.value)
            days = window / DAY_NS
            total = q.window_sum(stream, stream.cum(None, "v"), window)
            squares = q.window_sum(stream, stream.cum(None, "v", square=True), window)
            mean = total / days
            var = np.maximum(squares / days - mean * mean, 0.0)
            return _ratio(np.sqrt(var), mean)

        if spec.agg in STREAM_AGGS:
            value = self._stream_agg(entity, d, q, None)
            if spec.agg == "rate" and d.variant is None:
                n, k = value
                return spec.per * _ratio(k, n)
            return value

        def meas(measure: Measure, w: int | None) -> np.ndarray:
            return self._measure(entity, measure, q, w, None)

        return self._formula(spec, window, meas)

    # --------------------------------------------------------------------------------------- zones
    def _compute_zone(
        self,
        ids: Any,
        t: np.ndarray,
        city: Any,
        defs: list[FeatureDefinition],
        city_counts: CityCounts | None = None,
    ) -> dict[str, np.ndarray]:
        n = len(t)
        cells = self.cell_ints(ids)
        if self.zone_floor:
            t = (t // self.zone_floor) * self.zone_floor
        city_codes = self.index["city"].get_indexer(
            pd.Index(pd.Series(city if city is not None else [None] * n, dtype="object").to_numpy())
        )
        zone_codes = self.index["zone"].get_indexer(pd.Index(cells))
        # A cell's city is the registry city nearest to it (geography, not data): the same offline, online and
        # at every as_of. The row's own city is used only when it has no cell.
        geo_city = self.index["city"].get_indexer(pd.Index(zones.nearest_city(cells)))
        city_codes = np.where(cells != zones.NO_CELL, geo_city, city_codes)
        # Deduplicate (cell, city, as_of): many trips share a zone and (after flooring) a time.
        cell_f, cell_u = pd.factorize(cells)
        t_f, t_u = pd.factorize(t)
        combined = (cell_f.astype(np.int64) * (len(self.index["city"]) + 1) + (city_codes + 1)) * (
            len(t_u) + 1
        ) + t_f
        inverse, uniq = pd.factorize(combined)
        first = np.zeros(len(uniq), dtype=np.int64)
        first[inverse[::-1]] = np.arange(n)[::-1]
        u_cell, u_city, u_t = cells[first], city_codes[first], t[first]

        q_cell = Queries(zone_codes[first], u_t)
        ring: list[RingQueries] = []  # built at the first ring feature

        def local(d: FeatureDefinition) -> Queries | RingQueries:
            if not d.ring:
                return q_cell
            if not ring:
                slots = np.where(q_cell.codes[:, None] >= 0, self.ring_codes()[q_cell.codes], -1)
                ring.append(RingQueries(slots, u_t))
            return ring[0]

        no_cell = u_cell == zones.NO_CELL
        counts = (city_counts or self.zone_city_counts)(u_city, u_t, defs)

        def city_meas(measure: Measure, w: int | None) -> np.ndarray:
            return counts[city_key(measure, w)]

        out: dict[str, np.ndarray] = {}
        for d in defs:
            spec = d.spec
            q = local(d)

            def local_meas(measure: Measure, w: int | None, q=q) -> np.ndarray:
                return self._measure("zone", measure, q, w, None)

            if spec.agg in STREAM_AGGS:
                value = self._stream_agg("zone", d, q, None)
                fallback = np.full(len(u_t), np.nan)
                if spec.agg == "rate" and d.variant is None:
                    trips, k = value
                    city_n, city_k = counts[f"rate_n:{d.name}"], counts[f"rate_k:{d.name}"]
                    if spec.prior_trips:
                        value = eb_rate(k, trips, city_k, city_n, spec.prior_trips, spec.per)
                    else:
                        value = spec.per * _ratio(k, trips)
                    fallback = spec.per * _ratio(city_k, city_n)
            elif spec.agg == "eb_rate":
                num_m, den_m = _eb_measures(spec)
                k, m = local_meas(num_m, d.window_ns), local_meas(den_m, d.window_ns)
                city_k, city_n = city_meas(num_m, d.window_ns), city_meas(den_m, d.window_ns)
                value = eb_rate(k, m, city_k, city_n, spec.prior_trips, spec.per)
                fallback = spec.per * _ratio(city_k, city_n)
            else:
                value = self._formula(spec, d.window_ns, local_meas)
                if spec.agg in ("count", "sum", "net"):
                    fallback = np.full(len(value), np.nan)
                else:
                    fallback = self._formula(spec, d.window_ns, city_meas)
            out[d.name] = np.where(no_cell, fallback, value)[inverse]
        return out

    def zone_city_counts(
        self, city_codes: np.ndarray, t: np.ndarray, defs: list[FeatureDefinition]
    ) -> dict[str, np.ndarray]:
        """Every city-level quantity the zone features ``defs`` read at (city code, T), keyed as
        :func:`city_key` (T already floored): the empirical-Bayes priors and the fallbacks of rows without
        a cell. The Dask engine computes them per H3-parent group on the group's own cells and adds them
        up (see :func:`city_counts_additive`)."""
        q_city = Queries(city_codes, t)
        out: dict[str, np.ndarray] = {}

        def city_meas(measure: Measure, w: int | None) -> np.ndarray:
            key = city_key(measure, w)
            if key not in out:
                out[key] = self._measure("zone", measure, q_city, w, "city")
            return out[key]

        for d in defs:
            spec = d.spec
            if spec.agg in STREAM_AGGS:
                if spec.agg == "rate" and d.variant is None:
                    out[f"rate_n:{d.name}"], out[f"rate_k:{d.name}"] = self._stream_agg(
                        "zone", d, q_city, "city"
                    )
            elif spec.agg == "eb_rate":
                for measure in _eb_measures(spec):
                    city_meas(measure, d.window_ns)
            elif spec.agg not in ("count", "sum", "net"):
                self._formula(spec, d.window_ns, city_meas)
        return out


CityCounts = (
    Any  # (city codes, floored T, defs) -> {city_key: array}: FeatureEngine.zone_city_counts or a lookup
)


def city_key(measure: Measure, window: int | None) -> str:
    """The name of one city-level windowed measure in :meth:`FeatureEngine.zone_city_counts`."""
    return json.dumps(["measure", measure.source, measure.where or {}, measure.value, window], default=str)


def _eb_measures(spec: FeatureSpec) -> tuple[Measure, Measure]:
    """(numerator, denominator) counts of an empirical-Bayes rate."""
    den = spec.denominator
    return (
        Measure(source=spec.source, where=spec.where),
        Measure(source=den.source or spec.source, where=den.where),
    )


def city_counts_additive(defs: list[FeatureDefinition]) -> bool:
    """True when every city-level quantity of these zone features is a count (no value summed): counts
    split over disjoint sets of cells add up exactly, so partial city quantities can be summed."""
    for d in defs:
        spec = d.spec
        den = spec.denominator
        if spec.agg == "rate" and d.variant is None and den is not None and den.value is not None:
            return False
        if spec.agg in STREAM_AGGS or spec.agg in ("count", "sum", "net", "eb_rate"):
            continue
        if spec.value is not None or (den is not None and den.value is not None):
            return False
        minus = getattr(spec, "minus", None)
        if minus is not None and minus.value is not None:
            return False
    return True


def max_event_time(tables: Tables) -> pd.Timestamp:
    """The latest event time in the data (trips requested, incidents reported, ledger, credit events)."""
    candidates = [
        tables.trips["requested_at"],
        tables.incidents["reported_at"],
        tables.merchant_ledger.get("event_at", pd.Series(dtype="datetime64[ns, UTC]")),
        tables.credit_events.get("event_at", pd.Series(dtype="datetime64[ns, UTC]")),
    ]
    values = [pd.to_datetime(c, utc=True).max() for c in candidates if len(c)]
    values = [v for v in values if pd.notna(v)]
    if not values:
        raise ValueError("the tables hold no events: nothing to compute features from")
    return max(values)
