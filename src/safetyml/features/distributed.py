"""The incident_risk training frame on Dask: the same point-in-time engine, run partition by partition.

How the work is cut (see docs/scaling.md). Every feature of a trip is a function of one entity's events:
its rider's (and rider-merchant pair's), its merchant's, and its pickup and drop-off zones' (cell, ring of
neighbour cells and the city prior). So the trips are routed three times, and each group runs the
existing vectorised :class:`~safetyml.features.engine.FeatureEngine` on its own events only:

- **rider groups** (hash of ``rider_id``): rider and pair columns, plus the trip's keys and label;
- **merchant groups** (hash of ``merchant_id``) with the merchants' ledger and credit events: merchant
  columns;
- **zone groups**, one per city (the registry city nearest to a cell, the coarsest parent that keeps each
  zone's empirical-Bayes city prior inside one group), with a **halo**: a trip is also sent to every
  city one of whose cells lies in the ring of one of the trip's cells, so rings at the edge of a group
  see all their events.

A trip routed to a group only for its events (an incident's linked trip, a halo trip) adds events there
but is not answered there; each (trip, entity) is answered exactly once, by its own group. Riders,
merchants and incidents are broadcast to every worker (they are small next to trips; a billion-trip
platform would shuffle incidents by key instead). The answers are shuffled by day of ``as_of`` and
written as a hive-partitioned Parquet dataset (``date=YYYY-MM-DD/part-0.parquet``), each day sorted as
the pandas engine sorts the whole frame, so the days read in order are the pandas frame.

Parity: counts, maxima, distinct counts, ratios and categorical columns are bit-identical to the pandas
engine; float sums and means over windows are equal up to rounding (relative 1e-12): the engine answers a
window as a difference of cumulative sums, and a group's cumulative sums start from different prefixes.
The groups are a hand-rolled split on futures rather than ``DataFrame.shuffle`` because rows must go to
several groups at once (halo, linked trips) and trips must meet their merchant's ledger in the group of
the same number.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from safetyml.features import zones
from safetyml.features.definitions import PAIR_SEPARATOR, FeatureSet, load_feature_set
from safetyml.features.engine import DAY_NS, FeatureEngine, trip_city
from safetyml.features.frames import ROLES, _merchant_credit, _needed, incident_risk_rows, months_between
from safetyml.tables import ROW_GROUP_ROWS, DaskTables, Tables, table_files, write_parquet
from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT

__all__ = [
    "DaskFrameResult",
    "build_frame_dask",
    "entity_vectors_dask",
    "materialize_dask",
    "read_frame_dataset",
]

GROUP_TRIPS = 250_000  # trips per rider or merchant group (a group is one task's working set)


@dataclass
class DaskFrameResult:
    """What a Dask frame build wrote."""

    task: str
    out: Path
    rows: int
    positives: int
    days: int
    groups: dict[str, int]
    seconds: float


# ---------------------------------------------------------------------------------------------- routing


def _hash_group(ids: pd.Series, n: int) -> np.ndarray:
    """A stable group number per id (pandas' SipHash with its fixed key: the same in every process)."""
    values = pd.Series(ids, dtype="object").astype("str").to_numpy(dtype=object)
    return (pd.util.hash_array(values) % np.uint64(n)).astype(np.int64)


def _halo_pairs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, city) pairs: for each row's cell, every city nearest to a cell of its ring (grid_disk k=1),
    its own city included; a row without a cell has none."""
    unique, inverse = np.unique(cells, return_inverse=True)
    known = np.flatnonzero(unique != zones.NO_CELL)
    if not len(known):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    disk = zones.neighbours(unique[known])
    flat = disk.ravel()
    pairs = pd.DataFrame({"slot": np.repeat(known, disk.shape[1]), "city": zones.nearest_city(flat)})
    pairs = pairs[flat != zones.NO_CELL].drop_duplicates()
    joined = pd.DataFrame({"row": np.arange(len(cells)), "slot": inverse}).merge(pairs, on="slot")
    return joined["row"].to_numpy(), joined["city"].to_numpy(dtype=object)


def _route(
    trips: pd.DataFrame,
    offset: int,
    merchants: pd.DataFrame,
    incidents: pd.DataFrame,
    n_riders: int,
    n_merchants: int,
) -> dict[str, dict[Any, pd.DataFrame]]:
    """Split one partition of trips into its rider, merchant and zone groups (a trip may go to several)."""
    trips = trips.reset_index(drop=True).assign(_row=np.arange(len(trips), dtype=np.int64) + offset)
    linked = incidents[incidents["trip_id"].isin(trips["trip_id"])]
    position = pd.Index(trips["trip_id"]).get_indexer(linked["trip_id"])
    routes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, column, n in (("rider", "rider_id", n_riders), ("merchant", "merchant_id", n_merchants)):
        own = _hash_group(trips[column], n)
        extra = linked[column].notna().to_numpy()  # an incident's trip goes where the incident counts
        rows = np.concatenate([np.arange(len(trips)), position[extra]])
        groups = np.concatenate([own, _hash_group(linked[column][extra], n)])
        routes[kind] = (rows, groups)
    city = trip_city(trips, merchants).to_numpy(dtype=object)
    zone_rows, zone_groups = [], []
    for role in ROLES:
        cells = zones.cells_int(trips[f"{role}_lat"], trips[f"{role}_lng"])
        rows, cities = _halo_pairs(cells)
        missing = np.flatnonzero(cells == zones.NO_CELL)  # an end without a cell: the trip's city answers
        zone_rows += [rows, missing]
        zone_groups += [cities, city[missing]]
    zone = pd.DataFrame({"row": np.concatenate(zone_rows), "group": np.concatenate(zone_groups)}).dropna()
    routes["zone"] = (zone["row"].to_numpy(), zone["group"].to_numpy(dtype=object))
    out: dict[str, dict[Any, pd.DataFrame]] = {}
    for kind, (rows, groups) in routes.items():
        pairs = pd.DataFrame({"row": rows, "group": groups}).drop_duplicates()
        out[kind] = {
            group: trips.iloc[np.sort(part["row"].to_numpy())] for group, part in pairs.groupby("group")
        }
    return out


def _split_by_key(frame: pd.DataFrame, column: str, n: int) -> dict[int, pd.DataFrame]:
    """A table's rows by the hash group of ``column`` (the ledger and credit events by merchant)."""
    groups = _hash_group(frame[column], n)
    return {int(g): frame[groups == g] for g in np.unique(groups)}


def _piece(split: dict, key: Any) -> pd.DataFrame | None:
    return split.get(key)


def _concat_rows(*pieces: pd.DataFrame | None) -> pd.DataFrame | None:
    frames = [p for p in pieces if p is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def _group_of(routed: dict[str, dict[Any, pd.DataFrame]], kind: str, group: Any) -> pd.DataFrame | None:
    return routed[kind].get(group)


def _concat(*pieces: pd.DataFrame | None) -> pd.DataFrame:
    frames = [p for p in pieces if p is not None and len(p)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).sort_values("_row", kind="stable").reset_index(drop=True)


def _groups_of(routed: dict[str, dict[Any, pd.DataFrame]], kind: str) -> list:
    return list(routed[kind])


# ---------------------------------------------------------------------------------------------- groups


def _tables(
    trips: pd.DataFrame, riders: pd.DataFrame, merchants: pd.DataFrame, incidents: pd.DataFrame, **others
) -> Tables:
    empty = {name: others.get(name) for name in ("merchant_ledger", "credit_events")}
    return Tables(
        riders=riders,
        merchants=merchants,
        trips=trips.drop(columns="_row"),
        incidents=incidents,
        merchant_ledger=empty["merchant_ledger"],
        credit_events=empty["credit_events"],
    )


def _group_tables(
    trips: pd.DataFrame,
    riders: pd.DataFrame,
    merchants: pd.DataFrame,
    incidents: pd.DataFrame,
    ledger: pd.DataFrame | None,
    credit: pd.DataFrame | None,
    empty: dict[str, pd.DataFrame],
) -> Tables:
    """A merchant group's tables: its ledger and credit events, or the empty ones when it has none."""
    return _tables(
        trips,
        riders,
        merchants,
        incidents,
        merchant_ledger=empty["merchant_ledger"] if ledger is None else ledger,
        credit_events=empty["credit_events"] if credit is None else credit,
    )


def _by_day(frame: pd.DataFrame, t: np.ndarray) -> dict[int, pd.DataFrame]:
    day = t // DAY_NS
    return {int(d): part.drop(columns="_day") for d, part in frame.assign(_day=day).groupby("_day")}


def _rider_group(
    trips: pd.DataFrame,
    group: int,
    n_groups: int,
    riders: pd.DataFrame,
    merchants: pd.DataFrame,
    incidents: pd.DataFrame,
    empty: dict[str, pd.DataFrame],
    fs: FeatureSet,
    label_min_severity: int,
) -> dict[int, pd.DataFrame]:
    """Keys, label, rider and pair columns of the trips whose rider is in ``group``, split by day."""
    engine = FeatureEngine(_tables(trips, riders, merchants, incidents, **empty), fs)
    ev = engine.events
    own = np.flatnonzero(_hash_group(ev.trips["rider_id"], n_groups) == group)
    trips_own = ev.trips.iloc[own].reset_index(drop=True)
    t = trips_own["t"].to_numpy()
    need = _needed(fs, fs.for_task(INCIDENT_RISK))
    out = {
        "_row": trips["_row"].to_numpy()[own],
        "t": t,
        "trip_id": trips_own["trip_id"],
        "rider_id": trips_own["rider_id"],
        "merchant_id": trips_own["merchant_id"],
        "city": trips_own["city"].astype("str"),
        "pickup_cell": trips_own["pickup_cell"].to_numpy(),
        "dropoff_cell": trips_own["dropoff_cell"].to_numpy(),
        "distance_km": trips_own["distance_km"].to_numpy(),
        "order_value": trips_own["order_value"].to_numpy(),
        "payment_method": trips_own["payment_method"],
        "rain": trips_own["rain"].to_numpy(),
    }
    inc = ev.incidents
    positive = inc.loc[inc["severity"].to_numpy() >= label_min_severity, "trip_id"].dropna().astype("str")
    out["label"] = trips_own["trip_id"].isin(positive.unique()).to_numpy().astype("int64")
    rider = engine.columns("rider", None, t, names=need["rider"], codes=trips_own["rider_code"].to_numpy())
    out.update({f"rider:{k}": v for k, v in rider.items()})
    if need["pair"]:
        pair = engine.columns("pair", None, t, names=need["pair"], codes=trips_own["pair_code"].to_numpy())
        out.update({f"pair:{k}": v for k, v in pair.items()})
    return _by_day(pd.DataFrame(out), t)


def _merchant_group(
    trips: pd.DataFrame,
    group: int,
    n_groups: int,
    riders: pd.DataFrame,
    merchants: pd.DataFrame,
    incidents: pd.DataFrame,
    ledger: pd.DataFrame | None,
    credit: pd.DataFrame | None,
    empty: dict[str, pd.DataFrame],
    fs: FeatureSet,
    snapshots: dict[str, Any] | None = None,
) -> dict[int, pd.DataFrame]:
    """Merchant columns of the trips whose merchant is in ``group`` (with that group's ledger and credit
    events), split by day; with ``snapshots`` (merchant_credit), the group's merchants' month-end rows
    instead (:func:`_credit_rows`)."""
    tables = _group_tables(trips, riders, merchants, incidents, ledger, credit, empty)
    engine = FeatureEngine(tables, fs)
    if snapshots is not None:
        return _credit_rows(engine, group, n_groups, fs, **snapshots)
    ev = engine.events
    own = np.flatnonzero(_hash_group(ev.trips["merchant_id"], n_groups) == group)
    t = ev.trips["t"].to_numpy()[own]
    need = _needed(fs, fs.for_task(INCIDENT_RISK))
    codes = ev.trips["merchant_code"].to_numpy()[own]
    merchant = engine.columns("merchant", None, t, names=need["merchant"], codes=codes)
    out = {"_row": trips["_row"].to_numpy()[own], **{f"merchant:{k}": v for k, v in merchant.items()}}
    return _by_day(pd.DataFrame(out), t)


def _zone_group(
    trips: pd.DataFrame,
    city: str,
    riders: pd.DataFrame,
    merchants: pd.DataFrame,
    incidents: pd.DataFrame,
    empty: dict[str, pd.DataFrame],
    fs: FeatureSet,
) -> dict[int, pd.DataFrame]:
    """Pickup and drop-off zone columns answered by the zone group of ``city``, split by day.

    A trip end is answered here when its cell's nearest city is ``city`` (or, without a cell, when the
    trip's city is); the other trips of the group are halo: their events count, their ends are answered
    by their own group.
    """
    engine = FeatureEngine(_tables(trips, riders, merchants, incidents, **empty), fs)
    ev = engine.events
    need = _needed(fs, fs.for_task(INCIDENT_RISK))
    pieces = []
    for role in ROLES:
        cells = ev.trips[f"{role}_cell"].to_numpy()
        home = zones.nearest_city(cells)
        home = np.where(cells == zones.NO_CELL, ev.trips["city"].astype("object").to_numpy(), home)
        own = np.flatnonzero(home == city)
        t = ev.trips["t"].to_numpy()[own]
        cols = engine.columns("zone", cells[own], t, city=ev.trips["city"].iloc[own], names=need["zone"])
        frame = pd.DataFrame({"_row": trips["_row"].to_numpy()[own], "_role": role, "_t": t})
        pieces.append(frame.assign(**{f"zone:{k}": v for k, v in cols.items()}))
    frame = pd.concat(pieces, ignore_index=True)
    return _by_day(frame.drop(columns="_t"), frame["_t"].to_numpy())


def _credit_rows(
    engine: FeatureEngine,
    group: int,
    n_groups: int,
    fs: FeatureSet,
    horizon_days: int,
    min_history_days: int,
    months: np.ndarray,
    data_end: int,
) -> dict[int, pd.DataFrame]:
    """The merchant_credit rows (month-end snapshots) of the merchants in ``group``, by snapshot day: the
    pandas engine's own snapshot code on the group's events, with the snapshot ``months`` and the
    label-maturity end of the whole data set."""
    own = _hash_group(engine.events.merchants["merchant_id"], n_groups) == group
    frame = _merchant_credit(
        engine, fs, horizon_days, min_history_days, snapshots=months, data_end=data_end, own=own
    )
    return _by_day(frame, pd.DatetimeIndex(frame["as_of"]).asi8)


def _span(frame: pd.DataFrame, column: str) -> tuple[int, int] | None:
    """(first, last) time of ``column`` in ns, None for an empty partition."""
    t = pd.to_datetime(frame[column], utc=True).dropna()
    return (int(t.min().value), int(t.max().value)) if len(t) else None


def _credit_clock(tables: DaskTables, client: Any) -> dict[str, Any]:
    """The snapshot months and the label-maturity end of the whole data set (what the pandas engine reads
    off all events), from each partition's first and last event time."""
    columns = {
        "trips": "requested_at",
        "incidents": "reported_at",
        "merchant_ledger": "event_at",
        "credit_events": "event_at",
    }
    spans: dict[str, tuple[int, int] | None] = {}
    for name, column in columns.items():
        found = [s for s in client.gather(client.map(_span, tables.partitions[name], column=column)) if s]
        spans[name] = (min(s[0] for s in found), max(s[1] for s in found)) if found else None
    last = max((s[1] for s in spans.values() if s), default=0)
    first = (spans["merchant_ledger"] or spans["trips"] or (last, last))[0]
    credit_ends = [spans[n][1] for n in ("merchant_ledger", "credit_events", "trips") if spans[n]]
    return {"months": months_between(first, last).asi8, "data_end": max(credit_ends, default=last)}


def _assemble_credit_days(days: list[int], out: Path, pieces: list) -> tuple[int, int]:
    """Some snapshot days of the merchant_credit frame from every group, sorted as the pandas engine sorts
    the frame (as_of, merchant_id), one Parquet part per day."""
    frame = pd.concat([p for p in pieces if p is not None], ignore_index=True)
    frame = frame.sort_values(["as_of", "merchant_id"], kind="stable").reset_index(drop=True)
    day_of = pd.DatetimeIndex(frame["as_of"]).asi8 // DAY_NS
    for day in days:
        _write_day(frame[day_of == day].reset_index(drop=True), out, day)
    return len(frame), int(frame["label"].sum())


def _write_day(frame: pd.DataFrame, out: Path, day: int) -> None:
    folder = out / f"date={pd.Timestamp(day * DAY_NS, tz='UTC').strftime('%Y-%m-%d')}"
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(frame, folder / "part-0.parquet")


# ---------------------------------------------------------------------------------------------- days


def _days_piece(result: dict[int, pd.DataFrame], days: list[int]) -> pd.DataFrame | None:
    pieces = [result[d] for d in days if d in result]
    return pd.concat(pieces, ignore_index=True) if pieces else None


def _day_counts(result: dict[int, pd.DataFrame]) -> dict[int, int]:
    return {day: len(frame) for day, frame in result.items()}


def _batches(counts: dict[int, int], rows: int) -> list[list[int]]:
    """Consecutive days in batches of at least ``rows`` trips (the last may be smaller): one assembly
    task per batch, so a small platform's days do not each pay a task's fixed cost."""
    out: list[list[int]] = [[]]
    total = 0
    for day in sorted(counts):
        if total >= rows:
            out.append([])
            total = 0
        out[-1].append(day)
        total += counts[day]
    return [batch for batch in out if batch]


def _assemble_days(
    days: list[int], out: Path, fs: FeatureSet, base: list, merchant: list, zone: list
) -> tuple[int, int]:
    """Some consecutive days of the frame: the groups' answers joined on the trip, ordered as the pandas
    engine orders the whole frame (by request time, then input order), request features computed, each
    day written as its own Parquet part."""
    keys = pd.concat([p for p in base if p is not None], ignore_index=True)
    keys = keys.sort_values(["t", "_row"], kind="stable").reset_index(drop=True)
    rows = pd.Index(keys["_row"])

    def aligned(pieces: list, prefix: str, role: str | None = None) -> dict[str, np.ndarray]:
        """The answers of one entity (one trip end for zones) in the day's row order."""
        frames = [p for p in pieces if p is not None]
        if role is not None:
            frames = [f[f["_role"].to_numpy() == role] for f in frames]
        if not frames:
            return {}
        joined = pd.concat(frames, ignore_index=True).set_index("_row")
        if not joined.index.is_unique:
            raise AssertionError(f"a trip was answered twice for {prefix}{role or ''}")
        joined = joined.reindex(rows)
        return {c.split(":", 1)[1]: joined[c].to_numpy() for c in joined.columns if c.startswith(prefix)}

    def strip(frame: pd.DataFrame, prefix: str) -> dict[str, np.ndarray]:
        return {c.split(":", 1)[1]: frame[c].to_numpy() for c in frame.columns if c.startswith(prefix)}

    parts: dict[str, Any] = {"rider": strip(keys, "rider:"), "merchant": aligned(merchant, "merchant:")}
    pair = strip(keys, "pair:")
    if pair:
        parts["pair"] = pair
    for role in ROLES:
        parts[role] = aligned(zone, "zone:", role)
    frame = incident_risk_rows(keys, keys["label"].to_numpy(), parts, fs)
    day_of = keys["t"].to_numpy() // DAY_NS
    for day in days:
        _write_day(frame[day_of == day].reset_index(drop=True), out, day)
    return len(frame), int(frame["label"].sum())


# ---------------------------------------------------------------------------------------------- build


def _gathered(tables: DaskTables, name: str) -> pd.DataFrame:
    return tables.get(name).compute().reset_index(drop=True)


@dataclass
class _Routing:
    """The trips routed to their groups on the cluster, and what every group task shares (broadcast)."""

    client: Any
    groups: int  # rider and merchant groups (hash of the id)
    cities: list[str]  # zone groups
    routed: list  # futures: each trips partition split by group
    by_merchant: dict[str, list]  # futures: ledger and credit events split by merchant group
    riders: Any
    merchants: Any
    incidents: Any
    empty: dict[str, pd.DataFrame]
    fs: Any

    def trips(self, kind: str, group: Any) -> Any:
        """A future of the trips of one group (its own trips and those routed to it for their events)."""
        pieces = [self.client.submit(_group_of, r, kind, group) for r in self.routed]
        return self.client.submit(_concat, *pieces)

    def merchant_rows(self, name: str, group: int) -> Any:
        pieces = [self.client.submit(_piece, split, group) for split in self.by_merchant[name]]
        return self.client.submit(_concat_rows, *pieces)

    def merchant_group(self, group: int, snapshots: Any = None) -> Any:
        """A future of :func:`_merchant_group` on merchant group ``group`` (its trips, ledger and credit
        events)."""
        ledger, credit = (
            self.merchant_rows("merchant_ledger", group),
            self.merchant_rows("credit_events", group),
        )
        trips = self.trips("merchant", group)
        return self.client.submit(
            _merchant_group,
            trips,
            group,
            self.groups,
            *self.shared(),
            ledger,
            credit,
            self.empty,
            self.fs,
            snapshots,
        )

    def shared(self) -> tuple:
        return self.riders, self.merchants, self.incidents


def _same(value: Any) -> Any:
    return value


def _shared(client: Any, value: Any) -> Any:
    """A future of ``value`` copied to every worker that, unlike ``client.scatter``, survives a worker
    restart: it is the result of a task whose input is the value, so the scheduler can run it again.
    (Measured on the large preset: a worker killed for memory took the only copy of scattered tables
    with it, and the build failed with "already forgotten".)"""
    future = client.submit(_same, value, pure=False)
    client.replicate([future])
    return future


def _routing(
    tables: DaskTables, client: Any, fs: FeatureSet, n_groups: int | None, group_trips: int
) -> _Routing:
    """Broadcast riders, merchants and incidents; route every trips partition to its groups."""
    from safetyml.engine import worker_count

    n_trips = tables.row_counts["trips"] - tables.quarantined.get("trips", 0)
    groups = n_groups or max(worker_count(client), -(-n_trips // group_trips))
    small = [_gathered(tables, name) for name in ("riders", "merchants", "incidents")]
    riders, merchants, incidents = (_shared(client, frame) for frame in small)
    fs_future = _shared(client, fs)
    parts = tables.partitions["trips"]
    lengths = client.gather(client.map(len, parts))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).tolist()
    routed = [
        client.submit(_route, part, offset, merchants, incidents, groups, groups)
        for part, offset in zip(parts, offsets, strict=True)
    ]
    by_merchant = {
        name: client.map(_split_by_key, tables.partitions[name], column="merchant_id", n=groups)
        for name in ("merchant_ledger", "credit_events")
    }
    cities = sorted({c for r in client.gather(client.map(_groups_of, routed, kind="zone")) for c in r})
    empty = {name: tables.get(name)._meta for name in ("merchant_ledger", "credit_events")}
    return _Routing(
        client, groups, cities, routed, by_merchant, riders, merchants, incidents, empty, fs_future
    )


def build_frame_dask(
    task: str,
    tables: DaskTables,
    client: Any,
    out: Path,
    fs: FeatureSet | None = None,
    *,
    label_min_severity: int = 1,
    horizon_days: int = 90,
    min_history_days: int = 60,
    group_trips: int = GROUP_TRIPS,
    n_groups: int | None = None,
) -> DaskFrameResult:
    """Build the ``task`` frame on the cluster of ``client`` into the dataset folder ``out``.

    ``n_groups`` fixes the number of rider and merchant groups (default: one per ``group_trips`` trips,
    at least one per worker). ``merchant_credit`` runs on the merchant groups only (its features are
    merchant features) and is written by snapshot day (``date=YYYY-MM-01``).
    """
    from safetyml.engine import EngineError

    if task not in (INCIDENT_RISK, MERCHANT_CREDIT):
        raise EngineError(f"unknown task {task!r}; tasks: {INCIDENT_RISK}, {MERCHANT_CREDIT}")
    started = time.perf_counter()
    fs = fs or load_feature_set()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; the Dask engine writes a dataset folder there")
    r = _routing(tables, client, fs, n_groups, group_trips)
    if task == MERCHANT_CREDIT:
        return _build_credit(r, tables, out, horizon_days, min_history_days, started)
    results: dict[str, list] = {"rider": [], "merchant": [], "zone": []}
    for g in range(r.groups):
        results["rider"].append(
            client.submit(
                _rider_group, r.trips("rider", g), g, r.groups, *r.shared(), r.empty, r.fs, label_min_severity
            )
        )
        results["merchant"].append(r.merchant_group(g))
    for city in r.cities:
        results["zone"].append(
            client.submit(_zone_group, r.trips("zone", city), city, *r.shared(), r.empty, r.fs)
        )
    counts_by_day = _rows_by_day(client, results["rider"])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for batch in _batches(counts_by_day, ROW_GROUP_ROWS):
        pieces = {
            kind: [client.submit(_days_piece, f, batch) for f in futures] for kind, futures in results.items()
        }
        written.append(
            client.submit(
                _assemble_days, batch, out, r.fs, pieces["rider"], pieces["merchant"], pieces["zone"]
            )
        )
    groups = {"rider": r.groups, "merchant": r.groups, "zone": len(r.cities)}
    return _written(task, out, client.gather(written), len(counts_by_day), groups, started)


def _rows_by_day(client: Any, results: list) -> dict[int, int]:
    """Rows per day over the groups' answers (each a dict day -> frame), without moving the frames."""
    counts_by_day: dict[int, int] = defaultdict(int)
    for counts in client.gather(client.map(_day_counts, results)):
        for day, rows in counts.items():
            counts_by_day[day] += rows
    return counts_by_day


def _written(
    task: str, out: Path, counts: list, days: int, groups: dict[str, int], started: float
) -> DaskFrameResult:
    return DaskFrameResult(
        task=task,
        out=out,
        rows=sum(c[0] for c in counts),
        positives=sum(c[1] for c in counts),
        days=days,
        groups=groups,
        seconds=time.perf_counter() - started,
    )


def _build_credit(
    r: _Routing, tables: DaskTables, out: Path, horizon_days: int, min_history_days: int, started: float
) -> DaskFrameResult:
    """merchant_credit on the merchant groups, then one assembly task per batch of snapshot days."""
    client = r.client
    settings = {"horizon_days": horizon_days, "min_history_days": min_history_days}
    snapshots = _shared(client, {**settings, **_credit_clock(tables, client)})
    results = [r.merchant_group(g, snapshots) for g in range(r.groups)]
    counts_by_day = _rows_by_day(client, results)
    out.mkdir(parents=True, exist_ok=True)
    written = [
        client.submit(
            _assemble_credit_days, batch, out, [client.submit(_days_piece, f, batch) for f in results]
        )
        for batch in _batches(counts_by_day, ROW_GROUP_ROWS)
    ]
    groups = {"merchant": r.groups}
    return _written(MERCHANT_CREDIT, out, client.gather(written), len(counts_by_day), groups, started)


# ---------------------------------------------------------------------------------------------- materialize


def _group_vectors(
    trips: pd.DataFrame,
    kind: str,
    group: Any,
    n_groups: int,
    cities: list[str],
    riders: pd.DataFrame,
    merchants: pd.DataFrame,
    incidents: pd.DataFrame,
    ledger: pd.DataFrame | None,
    credit: pd.DataFrame | None,
    empty: dict[str, pd.DataFrame],
    fs: FeatureSet,
    as_of: pd.Timestamp,
    columns: dict[str, list[str]],
) -> dict[str, pd.DataFrame]:
    """The online-store vectors one group answers for, by the pandas engine's own
    :func:`~safetyml.features.online.entity_vectors` on the group's events (other entities' columns are
    left out, so they cost only their ids)."""
    from safetyml.features.online import ENTITIES, entity_vectors

    mine = {"rider": ("rider", "pair"), "merchant": ("merchant",), "zone": ("zone", "city")}[kind]
    tables = _group_tables(trips, riders, merchants, incidents, ledger, credit, empty)
    limited = {e: (columns[e] if e in mine else []) for e in ENTITIES}
    vectors = entity_vectors(FeatureEngine(tables, fs), as_of, limited)
    out = {}
    for entity in mine:
        frame = vectors.get(entity)
        if frame is None:
            continue
        ids = pd.Series(frame.index, dtype="object")
        if entity in ("rider", "merchant"):
            keep = _hash_group(ids, n_groups) == group
        elif entity == "pair":
            keep = _hash_group(ids.str.split(PAIR_SEPARATOR, n=1).str[0], n_groups) == group
        elif entity == "zone":
            keep = frame["city"].to_numpy() == group
        else:  # a city's row where its zone group is; cities with no data in the first group
            keep = (ids == group).to_numpy() | (~ids.isin(cities).to_numpy() & (group == cities[0]))
        out[entity] = frame[np.asarray(keep)]
    return out


def _entity_piece(vectors: dict[str, pd.DataFrame], entity: str) -> pd.DataFrame | None:
    return vectors.get(entity)


def _max_times(tables: DaskTables) -> SimpleNamespace:
    """The latest time of each event column, as one-row tables :func:`default_as_of` can read."""
    import dask

    columns = {
        "trips": "requested_at",
        "incidents": "reported_at",
        "merchant_ledger": "event_at",
        "credit_events": "event_at",
    }
    present = {n: c for n, c in columns.items() if c in tables.get(n).columns}
    maxima = dask.compute(*[tables.get(n)[c].max() for n, c in present.items()])
    frames = {n: pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]")}) for n, c in columns.items()}
    for (name, column), value in zip(present.items(), maxima, strict=True):
        if pd.notna(value):
            frames[name] = pd.DataFrame({column: pd.Series([value], dtype="datetime64[ns, UTC]")})
    return SimpleNamespace(**frames)


def entity_vectors_dask(
    tables: DaskTables,
    client: Any,
    as_of: Any = None,
    fs: FeatureSet | None = None,
    features: list[str] | None = None,
    *,
    group_trips: int = GROUP_TRIPS,
    n_groups: int | None = None,
) -> tuple[pd.Timestamp, dict[str, pd.DataFrame]]:
    """Every rider, merchant, pair, zone and city vector as of ``as_of`` (default: after the last event),
    computed by the groups of :func:`build_frame_dask` and gathered here, in the pandas engine's order."""
    from safetyml.features.online import ENTITIES, default_as_of, store_columns
    from safetyml.values import utc_timestamp

    fs = fs or load_feature_set()
    stamp = utc_timestamp(default_as_of(_max_times(tables)) if as_of is None else as_of)
    if features is None:
        columns = {e: [d.name for d in fs.entity_features("zone" if e == "city" else e)] for e in ENTITIES}
    else:
        columns = store_columns(fs, features)
    r = _routing(tables, client, fs, n_groups, group_trips)
    jobs = []
    for kind, group in [("rider", g) for g in range(r.groups)] + [("merchant", g) for g in range(r.groups)]:
        ledger = r.merchant_rows("merchant_ledger", group) if kind == "merchant" else None
        credit = r.merchant_rows("credit_events", group) if kind == "merchant" else None
        jobs.append(
            client.submit(
                _group_vectors,
                r.trips(kind, group),
                kind,
                group,
                r.groups,
                r.cities,
                *r.shared(),
                ledger,
                credit,
                r.empty,
                r.fs,
                stamp,
                columns,
            )
        )
    for city in r.cities:
        jobs.append(
            client.submit(
                _group_vectors,
                r.trips("zone", city),
                "zone",
                city,
                r.groups,
                r.cities,
                *r.shared(),
                None,
                None,
                r.empty,
                r.fs,
                stamp,
                columns,
            )
        )
    out: dict[str, pd.DataFrame] = {}
    for entity in ENTITIES:
        pieces = [
            p for p in client.gather([client.submit(_entity_piece, j, entity) for j in jobs]) if p is not None
        ]
        if pieces:
            out[entity] = pd.concat(pieces)
    riders, merchants = _gathered(tables, "riders"), _gathered(tables, "merchants")
    rider_ids, merchant_ids = riders["rider_id"].astype("str"), merchants["merchant_id"].astype("str")
    out["rider"] = out["rider"].reindex(pd.Index(rider_ids, name="id"))
    out["merchant"] = out["merchant"].reindex(pd.Index(merchant_ids, name="id"))
    if "pair" in out:  # the pandas order: by rider, then merchant, in table order
        halves = pd.Series(out["pair"].index, dtype="object").str.split(PAIR_SEPARATOR, n=1)
        rider_pos = pd.Index(rider_ids).get_indexer(halves.str[0])
        merchant_pos = pd.Index(merchant_ids).get_indexer(halves.str[1])
        out["pair"] = out["pair"].iloc[np.lexsort((merchant_pos, rider_pos))]
    if "zone" in out:
        out["zone"] = out["zone"].iloc[np.argsort(zones.to_int(out["zone"].index.to_numpy()), kind="stable")]
    if "city" in out:
        out["city"] = out["city"].sort_index()
    return stamp, out


def materialize_dask(
    tables: DaskTables,
    client: Any,
    fs: FeatureSet | None = None,
    as_of: Any = None,
    store: Any = None,
    features: list[str] | None = None,
) -> dict[str, Any]:
    """:func:`~safetyml.features.online.materialize` on the Dask engine: the vectors computed on the cluster,
    written here to the same online store."""
    from safetyml.features.online import OnlineStore

    fs = fs or load_feature_set()
    stamp, vectors = entity_vectors_dask(tables, client, as_of, fs, features)
    store = store or OnlineStore.open()
    store.write_all(vectors, stamp, fs.version)  # one version: one transaction (SQLite), one switch (Redis)
    return store.metadata()


def read_frame_dataset(path: Path) -> pd.DataFrame:
    """A frame dataset written by :func:`build_frame_dask` read back whole, its days in order (small data:
    tests and notebooks; the layout-only ``date`` key is not a column)."""
    frames = [pd.read_parquet(file) for file in table_files(Path(path))]
    return pd.concat(frames, ignore_index=True)
