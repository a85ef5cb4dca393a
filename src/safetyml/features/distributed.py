"""The incident_risk training frame on Dask: the same point-in-time engine, run partition by partition.

How the work is cut (see docs/scaling.md). Every feature of a trip is a function of one entity's events:
its rider's (and rider-merchant pair's), its merchant's, and its pickup and drop-off zones' (cell, ring of
neighbour cells and the city prior). So the trips are routed three times, and each group runs the
existing vectorised :class:`~safetyml.features.engine.FeatureEngine` on its own events only:

- **rider groups** (hash of ``rider_id``): rider and pair columns, plus the trip's keys and label;
- **merchant groups** (hash of ``merchant_id``) with the merchants' ledger and credit events: merchant
  columns;
- **zone groups**: whole H3 parent cells packed into groups of bounded size
  (:mod:`safetyml.features.zone_groups`), with a **halo**: a trip end is also sent to the group of every
  cell of its ring, so rings at the edge of a group see all their events. The city-level quantities that
  zone rates are shrunk toward (empirical Bayes at the same instant) are counts: each group counts them on
  the cells it owns at every zone query time of the city, the counts are summed per city (exact: integer
  sums) and joined back into the groups that answer the zones.

Routing is a disk shuffle: each trips partition writes its pieces with one Parquet row group per group
(``OUT/_routes``) and each group task reads only its own (``materialize`` keeps the pieces as futures).
A trip routed to a group only for its events (an incident's linked trip, a halo trip) adds events there
but is not answered there; each (trip, entity) is answered exactly once, by its own group. Riders,
merchants and incidents are broadcast to every worker (they are small next to trips; a billion-trip
platform would shuffle incidents by key instead). Each group writes its answers as one small Parquet file
per day into a working folder; the days are then assembled from those files and written as a
hive-partitioned Parquet dataset (``date=YYYY-MM-DD/part-0.parquet``), each day sorted as the pandas
engine sorts the whole frame, so the days read in order are the pandas frame.

Parity: every column is bit-identical to the pandas engine (window sums are per-entity running totals,
``Stream.cum``; city counts are integers). The groups are a hand-rolled split on futures rather than
``DataFrame.shuffle`` because rows must go to several groups at once (halo, linked trips) and trips must
meet their merchant's ledger in the group of the same number.
"""

from __future__ import annotations

import shutil
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
from safetyml.features.engine import DAY_NS, FeatureEngine, city_counts_additive, trip_city, zone_floor_ns
from safetyml.features.frames import ROLES, _merchant_credit, _needed, incident_risk_rows, months_between
from safetyml.features.request import to_ns
from safetyml.features.zone_groups import ZoneGroups, halo_pairs, plan_zone_groups
from safetyml.tables import ROW_GROUP_ROWS, DaskTables, Tables, table_files, write_parquet
from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT

__all__ = [
    "DaskFrameResult",
    "build_frame_dask",
    "entity_vectors_dask",
    "materialize_dask",
    "read_frame_dataset",
]

GROUP_TRIPS = 250_000  # trips per rider or merchant group, trip ends per zone group (one task's working set)
NO_CELL_GROUP = "no cell"  # the zone group of trip ends without a cell (they read only their city's counts)


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


@dataclass
class _Context:
    """What every group task shares (broadcast to every worker once): the small tables, the empty ledger
    and credit tables of a group without any, the feature set and the zone groups."""

    riders: pd.DataFrame
    merchants: pd.DataFrame
    incidents: pd.DataFrame
    empty: dict[str, pd.DataFrame]
    fs: FeatureSet
    zone_groups: ZoneGroups | None = None

    def engine(
        self, trips: pd.DataFrame, ledger: pd.DataFrame | None = None, credit: pd.DataFrame | None = None
    ) -> FeatureEngine:
        """The pandas engine on one group's trips (and a merchant group's ledger and credit events)."""
        tables = Tables(
            riders=self.riders,
            merchants=self.merchants,
            trips=trips.drop(columns="_row"),
            incidents=self.incidents,
            merchant_ledger=self.empty["merchant_ledger"] if ledger is None else ledger,
            credit_events=self.empty["credit_events"] if credit is None else credit,
        )
        return FeatureEngine(tables, self.fs)


# ---------------------------------------------------------------------------------------------- routing


def _hash_group(ids: pd.Series, n: int) -> np.ndarray:
    """A stable group number per id (pandas' SipHash with its fixed key: the same in every process)."""
    values = pd.Series(ids, dtype="object").astype("str").to_numpy(dtype=object)
    return (pd.util.hash_array(values) % np.uint64(n)).astype(np.int64)


def _halo_pairs(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, city) pairs: for each row's cell, every city nearest to a cell of its ring (grid_disk k=1),
    its own city included; a row without a cell has none (the zone groups of ``materialize``)."""
    return halo_pairs(cells, zones.nearest_city)


def _end_cells(trips: pd.DataFrame) -> np.ndarray:
    """The (pickup, drop-off) H3 cell of each trip of a partition, int64 (NO_CELL without coordinates)."""
    return np.column_stack([zones.cells_int(trips[f"{role}_lat"], trips[f"{role}_lng"]) for role in ROLES])


def _cell_counts(cells: np.ndarray) -> pd.Series:
    """Trip ends per cell of one partition (an end counted once per trip when both ends share a cell)."""
    pickup, dropoff = cells[:, 0], cells[:, 1]
    ends = np.concatenate([pickup, dropoff[dropoff != pickup]])
    return pd.Series(ends).value_counts()


def _zone_routes(
    cells: np.ndarray, city: np.ndarray, zone_groups: ZoneGroups | None
) -> tuple[np.ndarray, np.ndarray]:
    """(row, zone group) pairs of a partition: each end's owner and halo groups (the nearest cities of its
    ring without ``zone_groups``); an end without a cell goes to its trip's city, or the no-cell group."""
    rows_out, groups_out = [], []
    for j in range(len(ROLES)):
        end = cells[:, j]
        if zone_groups is None:
            rows, groups = _halo_pairs(end)
        elif zone_groups.halo:
            rows, groups = halo_pairs(end, zone_groups.of)
        else:
            rows = np.flatnonzero(end != zones.NO_CELL)
            groups = zone_groups.of(end[rows]).astype(object)
        missing = np.flatnonzero(end == zones.NO_CELL)
        rows_out += [rows, missing]
        if zone_groups is None:
            groups_out += [groups, city[missing]]
        else:
            groups_out += [groups, np.full(len(missing), NO_CELL_GROUP, dtype=object)]
    zone = pd.DataFrame({"row": np.concatenate(rows_out), "group": np.concatenate(groups_out)}).dropna()
    return zone["row"].to_numpy(), zone["group"].to_numpy(dtype=object)


def _query_times(
    cells: np.ndarray, t: np.ndarray, city: np.ndarray, floor: int | None
) -> dict[str, np.ndarray]:
    """The distinct zone query times (floored as the engine floors them) of each city in a partition: a
    cell's city is its nearest city, an end without a cell asks its trip's city."""
    if floor:
        t = (t // floor) * floor
    found: dict[str, list[np.ndarray]] = defaultdict(list)
    for j in range(len(ROLES)):
        end = cells[:, j]
        home = np.where(end == zones.NO_CELL, city, zones.nearest_city(end))
        frame = pd.DataFrame({"city": home, "t": t}).dropna().drop_duplicates()
        for name, part in frame.groupby("city"):
            found[str(name)].append(part["t"].to_numpy(dtype=np.int64))
    return {name: np.unique(np.concatenate(parts)) for name, parts in found.items()}


def _route(
    trips: pd.DataFrame,
    offset: int,
    cells: np.ndarray,
    ctx: _Context,
    n_riders: int,
    n_merchants: int,
    folder: Path | None = None,
) -> dict[str, Any]:
    """Split one partition of trips into its rider, merchant and zone groups (a trip may go to several);
    with H3-parent zone groups, also the distinct zone query times of each city (``"times"``). With a
    ``folder``, each kind is written there with one row group per group (:func:`_write_by`) and only
    the paths and row-group indices are returned; else the group pieces themselves."""
    trips = trips.reset_index(drop=True).assign(_row=np.arange(len(trips), dtype=np.int64) + offset)
    incidents = ctx.incidents
    linked = incidents[incidents["trip_id"].isin(trips["trip_id"])]
    position = pd.Index(trips["trip_id"]).get_indexer(linked["trip_id"])
    routes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind, column, n in (("rider", "rider_id", n_riders), ("merchant", "merchant_id", n_merchants)):
        own = _hash_group(trips[column], n)
        extra = linked[column].notna().to_numpy()  # an incident's trip goes where the incident counts
        rows = np.concatenate([np.arange(len(trips)), position[extra]])
        groups = np.concatenate([own, _hash_group(linked[column][extra], n)])
        routes[kind] = (rows, groups)
    city = trip_city(trips, ctx.merchants).to_numpy(dtype=object)
    routes["zone"] = _zone_routes(cells, city, ctx.zone_groups)
    out: dict[str, Any] = {}
    for kind, (rows, groups) in routes.items():
        pairs = pd.DataFrame({"row": rows, "group": groups}).drop_duplicates()
        if folder is not None:
            pairs = pairs.sort_values("row", kind="stable")
            keys = pairs["group"].to_numpy()
            out[kind] = _write_by(
                trips.iloc[pairs["row"].to_numpy()], keys, folder / f"{kind}-{offset}.parquet"
            )
            continue
        out[kind] = {
            group: trips.iloc[np.sort(part["row"].to_numpy())] for group, part in pairs.groupby("group")
        }
    if ctx.zone_groups is not None:
        t = to_ns(trips["requested_at"])
        out["times"] = _query_times(cells, t, city, zone_floor_ns(ctx.fs))
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


Answers = tuple[Path, dict[int, tuple[int, int]]]  # a group's answers file and its day -> (row group, rows)


def _write_by(frame: pd.DataFrame, keys: np.ndarray, path: Path) -> tuple[Path, dict[Any, tuple[int, int]]]:
    """Write ``frame`` to ``path`` with one Parquet row group per key (rows keep their order within a
    key); returns the path and key -> (row group, rows). A disk shuffle: whoever needs one key reads only
    its row group, and nothing waits in worker memory (or in Dask's spill) for its readers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    codes, uniques = pd.factorize(pd.Series(keys, dtype="object" if keys.dtype == object else keys.dtype))
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame.iloc[order].reset_index(drop=True), preserve_index=False)
    index: dict[Any, tuple[int, int]] = {}
    start = 0
    with pq.ParquetWriter(path, table.schema) as writer:
        for code, key in enumerate(uniques.tolist()):
            rows = int(counts[code])
            writer.write_table(table.slice(start, rows), row_group_size=max(rows, 1))
            index[key] = (code, rows)
            start += rows
    return path, index


def _answers(frame: pd.DataFrame, t: np.ndarray, path: Path) -> Answers:
    """Write one group's answers to ``path``, one Parquet row group per day (bounded: a group's answers
    never wait in memory for the assembly); returns the path and its day -> (row group, rows)."""
    path, index = _write_by(frame, t // DAY_NS, path)
    return path, {int(day): entry for day, entry in index.items()}


@dataclass(frozen=True)
class _GroupTrips:
    """Where one group's trips are: a row group in the routed file of each trips partition that has some."""

    parts: tuple[tuple[Path, int], ...]


def _load(trips: pd.DataFrame | _GroupTrips) -> pd.DataFrame:
    """A group's trips, read from the routed files (in input order), or as given."""
    import pyarrow.parquet as pq

    if isinstance(trips, pd.DataFrame):
        return trips
    frames = [pq.ParquetFile(path).read_row_group(rg).to_pandas() for path, rg in trips.parts]
    return _concat(*frames)


def _read_days(path: Path, index: dict[int, tuple[int, int]], days: list[int]) -> pd.DataFrame | None:
    """The rows of some days from one group's answers file (only their row groups are read)."""
    import pyarrow.parquet as pq

    groups = [index[d][0] for d in days if d in index]
    if not groups:
        return None
    return pq.ParquetFile(path).read_row_groups(groups).to_pandas()


def _rider_group(
    trips: pd.DataFrame, group: int, n_groups: int, ctx: _Context, label_min_severity: int, path: Path
) -> Answers:
    """Keys, label, rider and pair columns of the trips whose rider is in ``group``, written by day."""
    trips = _load(trips)
    fs = ctx.fs
    engine = ctx.engine(trips)
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
    return _answers(pd.DataFrame(out), t, path)


def _merchant_group(
    trips: pd.DataFrame,
    group: int,
    n_groups: int,
    ctx: _Context,
    ledger: pd.DataFrame | None,
    credit: pd.DataFrame | None,
    path: Path,
    snapshots: dict[str, Any] | None = None,
) -> Answers:
    """Merchant columns of the trips whose merchant is in ``group`` (with that group's ledger and credit
    events), written by day; with ``snapshots`` (merchant_credit), the group's merchants' month-end rows
    instead (:func:`_credit_rows`), by snapshot day."""
    trips = _load(trips)
    fs = ctx.fs
    engine = ctx.engine(trips, ledger, credit)
    if snapshots is not None:
        frame = _credit_rows(engine, group, n_groups, fs, **snapshots)
        return _answers(frame, pd.DatetimeIndex(frame["as_of"]).asi8, path)
    ev = engine.events
    own = np.flatnonzero(_hash_group(ev.trips["merchant_id"], n_groups) == group)
    t = ev.trips["t"].to_numpy()[own]
    need = _needed(fs, fs.for_task(INCIDENT_RISK))
    codes = ev.trips["merchant_code"].to_numpy()[own]
    merchant = engine.columns("merchant", None, t, names=need["merchant"], codes=codes)
    out = {"_row": trips["_row"].to_numpy()[own], **{f"merchant:{k}": v for k, v in merchant.items()}}
    return _answers(pd.DataFrame(out), t, path)


def _zone_defs(fs: FeatureSet) -> list:
    need = _needed(fs, fs.for_task(INCIDENT_RISK))["zone"]
    return [d for d in fs.entity_features("zone") if d.name in need]


def _zone_city_part(trips: pd.DataFrame, group: int, ctx: _Context, times: dict[str, Any]) -> dict:
    """The city-level counts of the zone features over the cells ``group`` owns, at every zone query time
    of each city (``times``): the group's share of each city's counts (summed by :func:`_city_counts`)."""
    trips = _load(trips)
    engine = ctx.engine(trips)
    ev, owner = engine.events, ctx.zone_groups.owner
    for frame in (ev.zone_trips, ev.zone_incidents):  # halo events are counted by the groups owning them
        mine = owner(frame["cell"].to_numpy()) == group
        frame["zone_city_code"] = np.where(mine, frame["zone_city_code"].to_numpy(), -1)
    city_index = engine.index["city"]
    present = np.concatenate([f["zone_city_code"].to_numpy() for f in (ev.zone_trips, ev.zone_incidents)])
    defs = _zone_defs(ctx.fs)
    out = {}
    for code in np.unique(present[present >= 0]).tolist():
        name = city_index[code]
        if name in times:
            grid = times[name]
            out[name] = engine.zone_city_counts(np.full(len(grid), code, dtype=np.int64), grid, defs)
    return out


def _city_counts(city: str, *parts: dict) -> dict[str, np.ndarray]:
    """One city's counts: the sum of every group's share (integers: exact in any order)."""
    total: dict[str, np.ndarray] = {}
    for part in parts:
        for key, values in part.get(city, {}).items():
            total[key] = total[key] + values if key in total else values.copy()
    return total


class _CityLookup:
    """The city counts of zone queries, read from the per-city tables (a city without events, or a row
    without a city, counts zero as on pandas)."""

    def __init__(self, city_index: pd.Index, times: dict[str, np.ndarray], counts: dict[str, dict]):
        self.city_index, self.times, self.counts = city_index, times, counts

    def __call__(self, city_codes: np.ndarray, t: np.ndarray, defs: list) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(t)))
        for code in np.unique(city_codes[city_codes >= 0]).tolist():
            name = self.city_index[code]
            rows = np.flatnonzero(city_codes == code)
            grid = self.times[name]
            pos = np.searchsorted(grid, t[rows])
            if (pos >= len(grid)).any() or (grid[np.minimum(pos, len(grid) - 1)] != t[rows]).any():
                raise AssertionError(f"a zone query time of {name} is missing from its city counts")
            for key, values in self.counts.get(name, {}).items():
                out[key][rows] = values[pos]
        return out


def _zone_group(
    trips: pd.DataFrame,
    group: Any,
    ctx: _Context,
    path: Path,
    cities: list[str],
    times: dict[str, np.ndarray],
    *counts: dict[str, np.ndarray],
) -> Answers:
    """Pickup and drop-off zone columns of the trip ends ``group`` owns (the no-cell group: the ends
    without a cell), with the cities' counts joined in, written by day. The group's other trip ends are
    halo: their events count, their ends are answered by their own group."""
    trips = _load(trips)
    engine = ctx.engine(trips)
    lookup = _CityLookup(engine.index["city"], times, dict(zip(cities, counts, strict=True)))
    ev = engine.events
    pieces = []
    for role in ROLES:
        cells = ev.trips[f"{role}_cell"].to_numpy()
        if group == NO_CELL_GROUP:
            own = np.flatnonzero(cells == zones.NO_CELL)
        else:
            own = np.flatnonzero(ctx.zone_groups.of(cells) == group)
        t = ev.trips["t"].to_numpy()[own]
        cols = engine.columns(
            "zone",
            cells[own],
            t,
            city=ev.trips["city"].iloc[own],
            names=_needed(ctx.fs, ctx.fs.for_task(INCIDENT_RISK))["zone"],
            city_counts=lookup,
        )
        frame = pd.DataFrame({"_row": trips["_row"].to_numpy()[own], "_role": role, "_t": t})
        pieces.append(frame.assign(**{f"zone:{k}": v for k, v in cols.items()}))
    frame = pd.concat(pieces, ignore_index=True)
    return _answers(frame.drop(columns="_t"), frame["_t"].to_numpy(), path)


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
    return frame


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


def _assemble_credit_days(days: list[int], out: Path, answers: list[Answers]) -> tuple[int, int]:
    """Some snapshot days of the merchant_credit frame from every group's answers file, sorted as the
    pandas engine sorts the frame (as_of, merchant_id), one Parquet part per day."""
    frame = pd.concat(_pieces(answers, days), ignore_index=True)
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


def _pieces(answers: list[Answers], days: list[int]) -> list[pd.DataFrame]:
    return [p for p in (_read_days(path, index, days) for path, index in answers) if p is not None]


def _assemble_days(
    days: list[int],
    out: Path,
    fs: FeatureSet,
    base: list[Answers],
    merchant: list[Answers],
    zone: list[Answers],
) -> tuple[int, int]:
    """Some consecutive days of the frame: the groups' answers (read from their files, only these days)
    joined on the trip, ordered as the pandas engine orders the whole frame (by request time, then input
    order), request features computed, each day written as its own Parquet part."""
    keys = pd.concat(_pieces(base, days), ignore_index=True)
    keys = keys.sort_values(["t", "_row"], kind="stable").reset_index(drop=True)
    rows = pd.Index(keys["_row"])
    zone_frames = _pieces(zone, days)

    def aligned(frames: list[pd.DataFrame], prefix: str, role: str | None = None) -> dict[str, np.ndarray]:
        """The answers of one entity (one trip end for zones) in the day's row order."""
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

    parts: dict[str, Any] = {
        "rider": strip(keys, "rider:"),
        "merchant": aligned(_pieces(merchant, days), "merchant:"),
    }
    pair = strip(keys, "pair:")
    if pair:
        parts["pair"] = pair
    for role in ROLES:
        parts[role] = aligned(zone_frames, "zone:", role)
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
    zone_groups: list  # zone group keys: cities, or H3-parent group numbers (and the no-cell group)
    routed: list  # each trips partition split by group: futures of the pieces, or (file mode) the indices
    by_merchant: dict[str, list]  # futures: ledger and credit events split by merchant group
    ctx: Any  # future of the _Context every group task shares
    cities: list[str]  # cities with zone queries (H3-parent zone groups only)
    times: Any = None  # future of city -> its zone query times (H3-parent zone groups only)
    on_disk: bool = False  # routed trips written to files (frame builds), else futures (materialize)

    def trips(self, kind: str, group: Any) -> Any:
        """One group's trips (its own and those routed to it for their events): where to read them, or
        a future of them."""
        if self.on_disk:
            parts = [(r[kind][0], r[kind][1][group][0]) for r in self.routed if group in r[kind][1]]
            return _GroupTrips(tuple(parts))
        pieces = [self.client.submit(_group_of, r, kind, group) for r in self.routed]
        return self.client.submit(_concat, *pieces)

    def merchant_rows(self, name: str, group: int) -> Any:
        pieces = [self.client.submit(_piece, split, group) for split in self.by_merchant[name]]
        return self.client.submit(_concat_rows, *pieces)

    def merchant_group(self, group: int, path: Path, snapshots: Any = None) -> Any:
        """A future of :func:`_merchant_group` on merchant group ``group`` (its trips, ledger and credit
        events)."""
        ledger, credit = (
            self.merchant_rows("merchant_ledger", group),
            self.merchant_rows("credit_events", group),
        )
        trips = self.trips("merchant", group)
        return self.client.submit(
            _merchant_group, trips, group, self.groups, self.ctx, ledger, credit, path, snapshots
        )

    def release(self) -> None:
        """Drop this client's hold on the split ledgers once every group task that reads them is
        submitted (the cluster frees each piece when its last reader is done)."""
        self.by_merchant.clear()

    def zone_answers(self, folder: Path) -> list:
        """Futures of every zone group's answers: each parent group's share of its cities' counts, the
        counts summed per city, then each group answered with them."""
        client = self.client
        parts = [
            client.submit(_zone_city_part, self.trips("zone", g), g, self.ctx, self.times)
            for g in self.zone_groups
            if g != NO_CELL_GROUP
        ]
        counts = [client.submit(_city_counts, c, *parts) for c in self.cities]
        return [
            client.submit(
                _zone_group,
                self.trips("zone", g),
                g,
                self.ctx,
                folder / f"zone-{g}.parquet".replace(" ", "_"),
                self.cities,
                self.times,
                *counts,
            )
            for g in self.zone_groups
        ]


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
    tables: DaskTables,
    client: Any,
    fs: FeatureSet,
    n_groups: int | None,
    group_trips: int,
    zone_trips: int | None = None,
    halo: bool = True,
    folder: Path | None = None,
) -> _Routing:
    """Broadcast riders, merchants and incidents; route every trips partition to its groups. With
    ``zone_trips``, zones are grouped by H3 parent (at most that many trip ends a group, and at least one
    group per worker); without, by city (``materialize``). With a ``folder`` (frame builds), the routed
    trips are written there (a disk shuffle: one row group per group), else kept as futures."""
    from safetyml.engine import EngineError, worker_count

    n_trips = tables.row_counts["trips"] - tables.quarantined.get("trips", 0)
    workers = worker_count(client)
    groups = n_groups or max(workers, -(-n_trips // group_trips))
    small = [_gathered(tables, name) for name in ("riders", "merchants", "incidents")]
    empty = {name: tables.get(name)._meta for name in ("merchant_ledger", "credit_events")}
    parts = tables.partitions["trips"]
    cells = client.map(_end_cells, parts)
    plan = None
    if zone_trips is not None:
        if not city_counts_additive(_zone_defs(fs)):
            raise EngineError(
                "features/zone.yaml: a zone feature's city prior sums a value (not a count), so its city "
                "quantities cannot be added up over H3-parent groups; the Dask engine needs counts there"
            )
        counts = pd.concat(client.gather(client.map(_cell_counts, cells))).groupby(level=0).sum()
        budget = max(1, min(zone_trips, -(-int(counts.sum()) // workers)))
        plan = plan_zone_groups(counts, budget, halo)
    ctx = _shared(client, _Context(*small, empty, fs, plan))
    lengths = client.gather(client.map(len, parts))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).tolist()
    routed = [
        client.submit(_route, part, offset, cell, ctx, groups, groups, folder)
        for part, offset, cell in zip(parts, offsets, cells, strict=True)
    ]
    by_merchant = {
        name: client.map(_split_by_key, tables.partitions[name], column="merchant_id", n=groups)
        for name in ("merchant_ledger", "credit_events")
    }
    if folder is None:
        found = client.gather(client.map(_groups_of, routed, kind="zone"))
        zone_groups = sorted({g for r in found for g in r}, key=str)
        return _Routing(client, groups, zone_groups, routed, by_merchant, ctx, [])
    routed = client.gather(routed)  # paths and row-group indices only: the trips are in the files
    zone_groups = sorted({g for r in routed for g in r["zone"][1]}, key=str)
    times: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in routed:
        for city, values in r.get("times", {}).items():
            times[city].append(values)
    cities = sorted(times)
    union = _shared(client, {c: np.unique(np.concatenate(times[c])) for c in cities})
    return _Routing(client, groups, zone_groups, routed, by_merchant, ctx, cities, union, on_disk=True)


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
    zone_trips: int | None = None,
    halo: bool = True,
) -> DaskFrameResult:
    """Build the ``task`` frame on the cluster of ``client`` into the dataset folder ``out``.

    ``n_groups`` fixes the number of rider and merchant groups (default: one per ``group_trips`` trips,
    at least one per worker); ``zone_trips`` bounds the trip ends of a zone group (default
    ``group_trips``; at least one group per worker). ``halo=False`` leaves out the ring neighbours'
    events (wrong rings at group edges: only to show what the halo is for). ``merchant_credit`` runs on
    the merchant groups only (its features are merchant features) and is written by snapshot day
    (``date=YYYY-MM-01``).
    """
    from safetyml.engine import EngineError

    if task not in (INCIDENT_RISK, MERCHANT_CREDIT):
        raise EngineError(f"unknown task {task!r}; tasks: {INCIDENT_RISK}, {MERCHANT_CREDIT}")
    started = time.perf_counter()
    fs = fs or load_feature_set()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; the Dask engine writes a dataset folder there")
    out.mkdir(parents=True, exist_ok=True)
    work = out / "_answers"  # the groups' answers, by day; removed once the days are assembled
    zone = zone_trips or group_trips if task == INCIDENT_RISK else None
    r = _routing(tables, client, fs, n_groups, group_trips, zone, halo, folder=out / "_routes")
    if task == MERCHANT_CREDIT:
        return _build_credit(r, tables, out, work, horizon_days, min_history_days, started)
    results: dict[str, list] = {"rider": [], "merchant": [], "zone": []}
    for g in range(r.groups):
        path = work / f"rider-{g}.parquet"
        results["rider"].append(
            client.submit(_rider_group, r.trips("rider", g), g, r.groups, r.ctx, label_min_severity, path)
        )
        results["merchant"].append(r.merchant_group(g, work / f"merchant-{g}.parquet"))
    results["zone"] = r.zone_answers(work)
    r.release()
    answers = {kind: client.gather(futures) for kind, futures in results.items()}
    counts_by_day = _rows_by_day(answers["rider"])
    written = [
        client.submit(
            _assemble_batch, batch, out, r.ctx, answers["rider"], answers["merchant"], answers["zone"]
        )
        for batch in _batches(counts_by_day, ROW_GROUP_ROWS)
    ]
    done = client.gather(written)
    _remove_work(out)
    groups = {"rider": r.groups, "merchant": r.groups, "zone": len(r.zone_groups)}
    return _written(task, out, done, len(counts_by_day), groups, started)


def _assemble_batch(days, out, ctx: _Context, base, merchant, zone) -> tuple[int, int]:
    return _assemble_days(days, out, ctx.fs, base, merchant, zone)


def _remove_work(out: Path) -> None:
    """Remove the build's working folders (routed trips, group answers) once the days are written."""
    for name in ("_routes", "_answers"):
        shutil.rmtree(out / name, ignore_errors=True)


def _rows_by_day(answers: list[Answers]) -> dict[int, int]:
    """Rows per day over the groups' answers files, from their day indices."""
    counts_by_day: dict[int, int] = defaultdict(int)
    for _, index in answers:
        for day, (_, rows) in index.items():
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
    r: _Routing,
    tables: DaskTables,
    out: Path,
    work: Path,
    horizon_days: int,
    min_history_days: int,
    started: float,
) -> DaskFrameResult:
    """merchant_credit on the merchant groups, then one assembly task per batch of snapshot days."""
    client = r.client
    settings = {"horizon_days": horizon_days, "min_history_days": min_history_days}
    snapshots = _shared(client, {**settings, **_credit_clock(tables, client)})
    results = [r.merchant_group(g, work / f"merchant-{g}.parquet", snapshots) for g in range(r.groups)]
    r.release()
    answers = client.gather(results)
    counts_by_day = _rows_by_day(answers)
    written = [
        client.submit(_assemble_credit_days, batch, out, answers)
        for batch in _batches(counts_by_day, ROW_GROUP_ROWS)
    ]
    done = client.gather(written)
    _remove_work(out)
    return _written(MERCHANT_CREDIT, out, done, len(counts_by_day), {"merchant": r.groups}, started)


# ---------------------------------------------------------------------------------------------- materialize


def _group_vectors(
    trips: pd.DataFrame,
    kind: str,
    group: Any,
    n_groups: int,
    cities: list[str],
    ctx: _Context,
    ledger: pd.DataFrame | None,
    credit: pd.DataFrame | None,
    as_of: pd.Timestamp,
    columns: dict[str, list[str]],
) -> dict[str, pd.DataFrame]:
    """The online-store vectors one group answers for, by the pandas engine's own
    :func:`~safetyml.features.online.entity_vectors` on the group's events (other entities' columns are
    left out, so they cost only their ids)."""
    trips = _load(trips)
    from safetyml.features.online import ENTITIES, entity_vectors

    mine = {"rider": ("rider", "pair"), "merchant": ("merchant",), "zone": ("zone", "city")}[kind]
    limited = {e: (columns[e] if e in mine else []) for e in ENTITIES}
    vectors = entity_vectors(ctx.engine(trips, ledger, credit), as_of, limited)
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
                r.zone_groups,
                r.ctx,
                ledger,
                credit,
                stamp,
                columns,
            )
        )
    for city in r.zone_groups:
        jobs.append(
            client.submit(
                _group_vectors,
                r.trips("zone", city),
                "zone",
                city,
                r.groups,
                r.zone_groups,
                r.ctx,
                None,
                None,
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
