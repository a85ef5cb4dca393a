"""Training frames per task, and the same trip model input assembled online from the store.

``incident_risk``: one row per trip, every feature as of its ``requested_at``; label = an incident linked to
the trip with severity >= the threshold (whenever reported: it is the label, not a feature).
``merchant_credit``: one row per merchant per month-end snapshot (as_of = first instant of the next month),
label = a credit event in (as_of, as_of + horizon]. Merchants whose first credit event is at or before
as_of are not scored from then on (they are no longer a credit decision); merchants with too little
history are flagged (``insufficient_history``), not dropped; ``label_mature`` says whether the data reach
as_of + horizon (training must drop immature rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from safetyml.features import zones
from safetyml.features.definitions import FeatureDefinition, FeatureSet, load_feature_set, pair_id
from safetyml.features.engine import DAY_NS, FeatureEngine, Stream
from safetyml.features.request import trip_request_features
from safetyml.tables import Tables
from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT

TASK_KEYS: dict[str, list[str]] = {
    INCIDENT_RISK: ["trip_id", "rider_id", "merchant_id", "city", "pickup_h3", "dropoff_h3", "as_of"],
    MERCHANT_CREDIT: ["merchant_id", "city", "as_of"],
}
TASK_FLAGS: dict[str, list[str]] = {
    INCIDENT_RISK: [],
    MERCHANT_CREDIT: ["label_mature", "insufficient_history"],
}
ROLES = ("pickup", "dropoff")


def frame_columns(task: str, fs: FeatureSet | None = None) -> dict[str, Any]:
    """The frame's key columns, label column, flags and feature columns (in model order)."""
    fs = fs or load_feature_set()
    if task not in TASK_KEYS:
        raise KeyError(f"unknown task {task!r}; tasks: {', '.join(TASK_KEYS)}")
    return {
        "keys": list(TASK_KEYS[task]),
        "label": "label",
        "flags": list(TASK_FLAGS[task]),
        "features": [d.name for d in fs.for_task(task)],
    }


def _needed(fs: FeatureSet, defs: list[FeatureDefinition]) -> dict[str, list[str]]:
    """Entity-level columns to compute for these model columns (incl. what request features refer to)."""
    need: dict[str, list[str]] = {"rider": [], "merchant": [], "pair": [], "zone": []}
    for d in defs:
        if d.entity in need and d.base not in need[d.entity]:
            need[d.entity].append(d.base)
        for reference in d.spec.references if d.entity == "trip" else []:
            target = fs.get(reference)
            if target.name not in need[target.entity]:
                need[target.entity].append(target.name)
    return need


def _select(defs: list[FeatureDefinition], parts: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Model columns in order from the per-entity parts (zone parts keyed by role)."""
    out: dict[str, Any] = {}
    for d in defs:
        part = parts[d.role] if d.entity == "zone" else parts[d.entity]
        values = part[d.base]
        if d.kind == "categorical":
            out[d.name] = pd.Categorical(
                pd.Series(values, dtype="object").to_numpy(), categories=d.categories
            )
        elif isinstance(values, np.ndarray) and values.dtype == np.float64:
            out[d.name] = values
        else:
            out[d.name] = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
    return out


def build_frame(
    task: str,
    tables: Tables,
    fs: FeatureSet | None = None,
    *,
    label_min_severity: int = 1,
    horizon_days: int = 90,
    min_history_days: int = 60,
    engine: FeatureEngine | None = None,
) -> pd.DataFrame:
    """The training frame of ``task``: keys, as_of, label (and flags), then fs.for_task(task) columns."""
    fs = fs or load_feature_set()
    engine = engine or FeatureEngine(tables, fs)
    if task == INCIDENT_RISK:
        return _incident_risk(engine, fs, label_min_severity)
    if task == MERCHANT_CREDIT:
        return _merchant_credit(engine, fs, horizon_days, min_history_days)
    raise KeyError(f"unknown task {task!r}; tasks: {', '.join(TASK_KEYS)}")


def _incident_risk(engine: FeatureEngine, fs: FeatureSet, label_min_severity: int) -> pd.DataFrame:
    ev = engine.events
    trips = ev.trips.iloc[np.argsort(ev.trips["t"].to_numpy(), kind="stable")].reset_index(drop=True)
    t = trips["t"].to_numpy()
    defs = fs.for_task(INCIDENT_RISK)
    need = _needed(fs, defs)
    # dicts of arrays, not DataFrames: the frame below is the one copy of each column
    rider = engine.columns("rider", None, t, names=need["rider"], codes=trips["rider_code"].to_numpy())
    merchant = engine.columns(
        "merchant", None, t, names=need["merchant"], codes=trips["merchant_code"].to_numpy()
    )
    parts: dict[str, Any] = {"rider": rider, "merchant": merchant}
    if need["pair"]:
        parts["pair"] = engine.columns(
            "pair", None, t, names=need["pair"], codes=trips["pair_code"].to_numpy()
        )
    for role in ROLES:
        parts[role] = engine.columns(
            "zone", trips[f"{role}_cell"].to_numpy(), t, city=trips["city"], names=need["zone"]
        )
    inc = ev.incidents
    positive = inc.loc[inc["severity"].to_numpy() >= label_min_severity, "trip_id"].dropna().astype("str")
    label = trips["trip_id"].isin(positive.unique()).to_numpy().astype("int64")
    return incident_risk_rows(trips, label, parts, fs)


def incident_risk_rows(
    trips: pd.DataFrame, label: np.ndarray, parts: dict[str, Any], fs: FeatureSet
) -> pd.DataFrame:
    """incident_risk frame rows for ``trips`` (the engine's trip columns, in frame order) from their entity
    columns ``parts`` (rider, merchant, pair, pickup, dropoff) and labels: keys, as_of, label, then the model
    columns, the request-time trip features computed here. Shared by the pandas and the Dask engine."""
    as_of = pd.DatetimeIndex(pd.to_datetime(trips["t"].to_numpy(), utc=True)).as_unit("ns")
    requests = pd.DataFrame(
        {
            "requested_at": as_of,
            "city": trips["city"],
            "distance_km": trips["distance_km"].to_numpy(),
            "order_value": trips["order_value"].to_numpy(),
            "payment_method": trips["payment_method"],
            "rain": trips["rain"].to_numpy(),
        }
    )
    usual = {name for d in fs.entity_features("trip") for name in d.spec.references}
    rider, merchant = parts["rider"], parts["merchant"]
    parts = {
        **parts,
        "trip": trip_request_features(
            requests,
            pd.DataFrame({k: v for k, v in rider.items() if k in usual}, index=requests.index),
            pd.DataFrame({k: v for k, v in merchant.items() if k in usual}, index=requests.index),
            fs,
        ),
    }
    keys = {
        "trip_id": trips["trip_id"],
        "rider_id": trips["rider_id"],
        "merchant_id": trips["merchant_id"],
        "city": trips["city"].astype("str"),
        "pickup_h3": zones.to_str(trips["pickup_cell"].to_numpy()),
        "dropoff_h3": zones.to_str(trips["dropoff_cell"].to_numpy()),
        "as_of": as_of,
        "label": label,
    }
    return pd.DataFrame({**keys, **_select(fs.for_task(INCIDENT_RISK), parts)})


def month_snapshots(engine: FeatureEngine) -> pd.DatetimeIndex:
    """as_of of each month-end snapshot: the first instant of each month after a month with data."""
    ev = engine.events
    times = ev.merchant_ledger["t"] if len(ev.merchant_ledger) else ev.trips["t"]
    return months_between(int(times.min()), ev.max_time)


def months_between(first_ns: int, last_ns: int) -> pd.DatetimeIndex:
    """The first instant of each month after ``first_ns``'s month, through the month after ``last_ns``."""
    first = pd.Timestamp(first_ns, tz="UTC")
    last = pd.Timestamp(last_ns, tz="UTC")
    start = (first.tz_localize(None).to_period("M") + 1).to_timestamp().tz_localize("UTC")
    end = (last.tz_localize(None).to_period("M") + 1).to_timestamp().tz_localize("UTC")
    return pd.date_range(start, end, freq="MS").as_unit("ns")


def _credit_data_end(engine: FeatureEngine) -> int:
    """The last time the credit data speak for: the latest ledger movement, credit event or trip.

    Late incident reports are left out: they extend the data's last timestamp without saying anything about
    whether a merchant defaulted.
    """
    ev = engine.events
    times = [ev.merchant_ledger["t"], ev.credit_events["t"], ev.trips["t"]]
    return max((int(t.max()) for t in times if len(t)), default=ev.max_time)


def _merchant_credit(
    engine: FeatureEngine,
    fs: FeatureSet,
    horizon_days: int,
    min_history_days: int,
    *,
    snapshots: np.ndarray | None = None,
    data_end: int | None = None,
    own: np.ndarray | None = None,
) -> pd.DataFrame:
    """Month-end snapshots of every merchant. The Dask engine runs it per merchant group: ``own`` (a mask
    over the engine's merchants) limits the rows to the group's merchants, and ``snapshots``/``data_end``
    (ns) come from the whole data set instead of the group's events."""
    ev = engine.events
    merchants = ev.merchants
    snapshots = month_snapshots(engine).asi8 if snapshots is None else snapshots
    onboarded = pd.DatetimeIndex(merchants["onboarded_at"]).as_unit("ns").asi8
    m_idx, s_idx = np.meshgrid(np.arange(len(merchants)), np.arange(len(snapshots)), indexing="ij")
    m_idx, s_idx = m_idx.ravel(), s_idx.ravel()
    as_of = snapshots[s_idx]
    keep = onboarded[m_idx] < as_of
    if own is not None:
        keep &= own[m_idx]
    credit = Stream(
        ev.credit_events[["t"]],
        ev.credit_events["merchant_code"].to_numpy(),
        ev.credit_events["t"].to_numpy(),
        inclusive=True,
    )
    horizon = horizon_days * DAY_NS
    before = credit.positions(m_idx, as_of) - credit.starts(m_idx)
    keep &= before == 0  # a merchant whose credit event already happened is no longer scored
    m_idx, as_of = m_idx[keep], as_of[keep]
    label = (credit.positions(m_idx, as_of + horizon) - credit.positions(m_idx, as_of)) > 0
    ids = merchants["merchant_id"].to_numpy()[m_idx]
    defs = fs.for_task(MERCHANT_CREDIT)
    need = _needed(fs, defs)
    parts = {"merchant": engine.columns("merchant", None, as_of, names=need["merchant"], codes=m_idx)}
    keys = {
        "merchant_id": ids,
        "city": merchants["city"].to_numpy()[m_idx],
        "as_of": pd.DatetimeIndex(pd.to_datetime(as_of, utc=True)).as_unit("ns"),
        "label": label.astype("int64"),
        "label_mature": as_of + horizon <= (_credit_data_end(engine) if data_end is None else data_end),
        "insufficient_history": (as_of - onboarded[m_idx]) < min_history_days * DAY_NS,
    }
    frame = pd.DataFrame({**keys, **_select(defs, parts)})
    return frame.sort_values(["as_of", "merchant_id"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- online


def city_prior(d: FeatureDefinition) -> bool:
    """Whether an unseen zone takes the city's value for this column (its rate is shrunk to the city's)."""
    return d.agg == "eb_rate" or (d.agg == "rate" and d.variant is None and bool(d.spec.prior_trips))


def cold_start_vector(fs: FeatureSet, entity: str, city_row: pd.Series | None = None) -> dict[str, Any]:
    """Values for an entity the store does not know: what the engine gives an entity with no history.

    Counts, distinct counts, sums and nets are 0; empirical-Bayes zone rates (and shrunk zone ``rate``s) are
    the city's rate (the prior); tenure, attributes, means, maxima, deviations, raw rates, ratios and
    time-since-last are missing (NaN, which LightGBM routes on its own).
    """
    out: dict[str, Any] = {}
    for d in fs.entity_features(entity):
        if d.agg in ("count", "sum", "net", "distinct"):
            out[d.name] = 0.0
        elif city_prior(d) and city_row is not None and d.name in city_row.index:
            out[d.name] = city_row[d.name]
        else:
            out[d.name] = None if d.kind == "categorical" else np.nan
    return out


def _lookup(source: Any, entity: str, ids: Any, with_city: bool = False) -> pd.DataFrame:
    if hasattr(source, "get") and not isinstance(source, dict):
        return source.get(entity, ids, with_city=with_city)
    frame = source.get(entity)
    if frame is None:
        return pd.DataFrame()
    frame = frame.copy()
    frame.index = frame.index.astype("str")
    wanted = pd.Index(pd.Series(ids, dtype="object").dropna().astype("str").unique())
    frame = frame[frame.index.isin(wanted)]
    return frame if with_city or "city" not in frame.columns else frame.drop(columns="city")


def _vectors(
    fs: FeatureSet,
    source: Any,
    entity: str,
    ids: pd.Series,
    city_rows: pd.DataFrame | None = None,
    city: pd.Series | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Entity vectors aligned to ``ids`` (cold-start values where unknown) and the known mask."""
    defs = fs.entity_features(entity)
    ids_obj = pd.Series(ids, dtype="object").reset_index(drop=True)
    found = _lookup(source, entity, ids_obj)
    position = pd.Index(found.index).get_indexer(pd.Index(ids_obj.astype("str").to_numpy()))
    position[ids_obj.isna().to_numpy()] = -1
    known = position >= 0
    take = np.maximum(position, 0)
    cold = cold_start_vector(fs, entity)
    city_values = pd.Series(city, dtype="object").reset_index(drop=True) if city is not None else None
    out: dict[str, Any] = {}
    for d in defs:
        if d.name in found.columns and len(found):
            values = found[d.name].to_numpy()[take]
        else:
            values = np.full(len(ids_obj), None, dtype=object)
        if d.kind == "categorical":
            values = np.where(known, values, None)
        else:
            values = np.where(
                known, pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float), np.nan
            )
            default = cold[d.name]
            if city_prior(d) and city_values is not None and city_rows is not None and d.name in city_rows:
                default = city_values.map(city_rows[d.name]).to_numpy(dtype="float64", na_value=np.nan)
            values = np.where(known, values, default).astype("float64")
        out[d.name] = values
    return pd.DataFrame(out, index=pd.RangeIndex(len(ids_obj))), known


def assemble_trip_features(
    requests: pd.DataFrame, store_or_vectors: Any, fs: FeatureSet | None = None
) -> pd.DataFrame:
    """The incident model's input for trip requests, from the online store (or vectors) plus the request.

    ``store_or_vectors`` is an :class:`~safetyml.features.online.OnlineStore` or a dict of DataFrames indexed
    by id (``rider``, ``merchant`` (with ``city``), ``zone``, ``city``). A request without ``city`` takes its
    merchant's. Unknown riders/merchants/zones get :func:`cold_start_vector` values and ``cold_start`` True;
    a trip end without coordinates takes its city's zone values (the city rate).
    """
    fs = fs or load_feature_set()
    req = requests.reset_index(drop=True)
    n = len(req)
    rider, rider_known = _vectors(fs, store_or_vectors, "rider", req["rider_id"])
    merchant, merchant_known = _vectors(fs, store_or_vectors, "merchant", req["merchant_id"])
    merchant_city = _lookup(store_or_vectors, "merchant", req["merchant_id"], with_city=True)
    from_merchant = (
        req["merchant_id"]
        .astype("str")
        .map(merchant_city["city"] if "city" in merchant_city.columns else pd.Series(dtype="object"))
    )
    if "city" in req.columns:
        city = pd.Series(req["city"], dtype="object")
        city = city.where(city.notna(), from_merchant.astype("object"))
    else:
        city = from_merchant.astype("object")
    req = req.assign(city=city.to_numpy())
    parts: dict[str, pd.DataFrame] = {"rider": rider, "merchant": merchant}
    if fs.entity_features("pair"):  # an unknown pair is a first trip together: cold-start values are exact
        pair_ids = [pair_id(r, m) for r, m in zip(req["rider_id"], req["merchant_id"], strict=True)]
        parts["pair"], _ = _vectors(fs, store_or_vectors, "pair", pd.Series(pair_ids, dtype="object"))
    cold = ~(rider_known & merchant_known)
    if "zone" in fs.files:
        city_rows = _lookup(store_or_vectors, "city", city.dropna().unique())
        for role in ROLES:
            cells = zones.cells_of(req[f"{role}_lat"], req[f"{role}_lng"])
            zone, zone_known = _vectors(fs, store_or_vectors, "zone", cells, city_rows, city)
            no_cell = cells.isna().to_numpy()
            if no_cell.any():  # no coordinates: the city's zone values (NaN when the city is unknown too)
                by_city = city_rows.reindex(columns=zone.columns).reindex(city.to_numpy())
                zone.loc[no_cell] = by_city.to_numpy()[no_cell]
            parts[role] = zone
            cold |= ~zone_known
    parts["trip"] = trip_request_features(req, rider, merchant, fs)
    out = pd.DataFrame(_select(fs.for_task(INCIDENT_RISK), parts), index=range(n))
    out["cold_start"] = cold
    out.index = requests.index
    return out


def assemble_merchant_features(
    merchant_ids: Any, store_or_vectors: Any, fs: FeatureSet | None = None
) -> pd.DataFrame:
    """The merchant-credit model's input for merchants by id, from the online store (or vectors).

    ``store_or_vectors`` is as in :func:`assemble_trip_features`. Rows follow ``merchant_ids`` (indexed
    0..n-1): the model's columns in order, then ``cold_start`` (True for an id the store does not know,
    which gets :func:`cold_start_vector` values).
    """
    fs = fs or load_feature_set()
    ids = pd.Series(list(merchant_ids), dtype="object")
    vectors, known = _vectors(fs, store_or_vectors, "merchant", ids)
    out = pd.DataFrame(_select(fs.for_task(MERCHANT_CREDIT), {"merchant": vectors}), index=range(len(ids)))
    out["cold_start"] = ~np.asarray(known, dtype=bool)
    return out
