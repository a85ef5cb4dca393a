"""Zone risk maps: expected and observed incident risk per H3 zone and time band, hotspots, drivers.

A **zone** is the H3 cell (resolution 8) of a trip's pickup *or* drop-off: a trip counts in each distinct
cell it touches (once when both ends share a cell). Incidents happen at both ends, and an operations team
restricts a place whatever the direction of the trip.

For each city, time band (``day``, ``night`` in the city's local time, and ``all``) and zone:

- over the **window** (``--window``, default 7 days before ``as_of``): trips, expected incidents (sum of
  the incident model's calibrated probabilities), observed incidents (of those trips, reported by as_of);
- over the **evidence** period (``evidence``, default 56 days before ``as_of``, never shorter than the
  window): the zone's **risk multiplier** ``risk_ratio`` — how many times the city-band incident rate
  trips touching the zone have, with each incident attributed jointly to both ends of its trip
  (:func:`~safetyml.batch.hotspots.two_way_multipliers`) — a Getis-Ord Gi* z-score of the multiplier
  over the H3 neighbour graph, a one-sided Poisson test of the zone's own incidents against its
  expectation, each with a Benjamini-Hochberg correction per (city, band), and a tier from the
  multiplier;
- the main drivers of flagged zones: the SHAP of their window trips, summed by feature group, minus the
  city-band average (what makes this place riskier than the city), as reason codes.

A zone is **flagged** (a hotspot) when its own incidents exceed their expectation significantly after
FDR (``flag_test="own"``, the default), *and* its tier is in ``flag_tiers`` *and* it has at least
``min_trips`` evidence trips. ``hot_cluster`` marks zones whose Gi* neighbourhood is significant. Gi*
can be made part of the flag (``flag_test="gi"`` or ``"own_or_gi"``); on the simulated medium preset it
added more ordinary neighbours of hot cells than hot cells (benchmarks/bench_hotspots.py prints all
three), because planted hot zones are clusters of only 2-3 cells. A week of incidents is too thin to
test a cell (about one incident per zone), hence the longer evidence period. Thresholds live in
:class:`ZoneConfig` (YAML-loadable), not in code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safetyml import cities
from safetyml.batch.drivers import zone_drivers
from safetyml.batch.hotspots import fdr_bh, getis_ord_star, two_way_multipliers
from safetyml.batch.recovery import recovery
from safetyml.batch.zone_config import ZoneConfig
from safetyml.features.definitions import window_ns
from safetyml.features.request import local_hour_weekday
from safetyml.monitoring.nowcast import NowcastError, corrected_counts, trip_reported_share
from safetyml.tasks import INCIDENT_RISK
from safetyml.values import utc_timestamp

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet
    from safetyml.model import RiskModel
    from safetyml.tables import Tables

log = logging.getLogger(__name__)

TASK = INCIDENT_RISK
ZONE_COLUMNS = (
    "city",
    "band",
    "h3",
    "trips",
    "expected_incidents",
    "expected_rate",
    "observed_incidents",
    "observed_rate",
    "observed_corrected",
    "observed_corrected_low",
    "observed_corrected_high",
    "evidence_trips",
    "evidence_incidents",
    "evidence_expected",
    "city_rate",
    "risk_ratio",
    "gi_z",
    "gi_p",
    "gi_q",
    "own_p",
    "own_q",
    "tier",
    "flagged",
    "drivers",
)


# ---------------------------------------------------------------------------------------------- pure steps


def time_band(requested_at: pd.Series, city: pd.Series, config: ZoneConfig) -> np.ndarray:
    """``"night"`` or ``"day"`` per trip, from the local hour in each trip's city time zone."""
    hour, _ = local_hour_weekday(requested_at, city)  # the features' own local-time conversion
    start, end = config.night_start_hour, config.night_end_hour
    night = (hour >= start) | (hour < end) if start > end else (hour >= start) & (hour < end)
    return np.where(night, "night", "day").astype(object)


def zone_memberships(trips: pd.DataFrame, zone_by: str = "both") -> pd.DataFrame:
    """One row per (trip position ``row``, zone ``h3``): the cells a trip counts in."""
    parts = []
    if zone_by in ("both", "pickup"):
        parts.append(pd.DataFrame({"row": np.arange(len(trips)), "h3": trips["pickup_h3"].to_numpy()}))
    if zone_by in ("both", "dropoff"):
        parts.append(pd.DataFrame({"row": np.arange(len(trips)), "h3": trips["dropoff_h3"].to_numpy()}))
    long = pd.concat(parts, ignore_index=True)
    long = long[long["h3"].notna()]
    long["h3"] = long["h3"].astype("str")
    return (
        long.drop_duplicates(["row", "h3"]).sort_values(["row", "h3"], kind="stable").reset_index(drop=True)
    )


def band_memberships(trips: pd.DataFrame, config: ZoneConfig) -> pd.DataFrame:
    """Memberships with ``city`` and ``band``; trips also count in the ``all`` band when configured."""
    long = zone_memberships(trips, config.zone_by)
    long["city"] = trips["city"].astype("str").to_numpy()[long["row"].to_numpy()]
    long["band"] = np.asarray(trips["band"].to_numpy(), dtype=object)[long["row"].to_numpy()]
    if config.include_all_band:
        long = pd.concat([long, long.assign(band="all")], ignore_index=True)
    return long


def aggregate_zones(trips: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """Trips, expected and observed incidents per (city, band, h3) of the window."""
    rows = members["row"].to_numpy()
    frame = members.assign(
        probability=trips["probability"].to_numpy(dtype="float64")[rows],
        observed=trips["observed"].to_numpy(dtype="float64")[rows],
    )
    if "reported" in trips:  # probability × share of the trip's incidents reported by as_of
        frame["reported"] = trips["reported"].to_numpy(dtype="float64")[rows]
    zones = (
        frame.groupby(["city", "band", "h3"], sort=True)
        .agg(
            trips=("row", "size"),
            expected_incidents=("probability", "sum"),
            observed_incidents=("observed", "sum"),
        )
        .reset_index()
    )
    zones["trips"] = zones["trips"].astype("int64")
    zones["observed_incidents"] = zones["observed_incidents"].astype("int64")
    zones["expected_rate"] = zones["expected_incidents"] / zones["trips"]
    zones["observed_rate"] = zones["observed_incidents"] / zones["trips"]
    # observed counts corrected for incidents not reported yet (monitoring's nowcast); raw counts kept
    expected = zones["expected_incidents"].to_numpy()
    reported = (
        frame.groupby(["city", "band", "h3"], sort=True)["reported"].sum().to_numpy()
        if "reported" in frame
        else expected
    )
    corrected, low, high = corrected_counts(zones["observed_incidents"].to_numpy(), expected, reported)
    zones["observed_corrected"] = corrected
    zones["observed_corrected_low"] = low
    zones["observed_corrected_high"] = high
    return zones


def zone_evidence(trips: pd.DataFrame, config: ZoneConfig) -> pd.DataFrame:
    """Risk multipliers and own-incident tests per (city, band, h3) from evidence trips.

    ``trips`` has city, band, pickup_h3, dropoff_h3 and observed (incidents known by as_of). Each trip's
    base expectation is its city-band incident rate; ends follow ``config.zone_by``.
    """
    from scipy import stats

    bands = [("day",), ("night",)] + ([("day", "night")] if config.include_all_band else [])
    out = []
    city = trips["city"].astype("str").to_numpy()
    band = np.asarray(trips["band"].to_numpy(), dtype=object)
    pick = trips["pickup_h3"].astype("object").to_numpy()
    drop = trips["dropoff_h3"].astype("object").to_numpy()
    if config.zone_by == "pickup":
        drop = np.full(len(trips), None, dtype=object)
    elif config.zone_by == "dropoff":
        pick = np.full(len(trips), None, dtype=object)
    y = trips["observed"].to_numpy(dtype="float64")
    for name in pd.unique(city):
        in_city = city == name
        for members in bands:
            rows = np.flatnonzero(in_city & np.isin(band, members))
            if len(rows) == 0:
                continue
            ends = pd.Series(np.concatenate([pick[rows], drop[rows]]), dtype="object")
            codes, cells = pd.factorize(ends, use_na_sentinel=True)
            ca, cb = codes[: len(rows)], codes[len(rows) :]
            rate = y[rows].mean()
            base = np.full(len(rows), rate)
            theta, observed_at, expected_at = two_way_multipliers(
                ca, cb, y[rows], base, len(cells), prior=config.prior_incidents
            )
            touching = np.bincount(ca[ca >= 0], minlength=len(cells)) + np.bincount(
                cb[cb >= 0], minlength=len(cells)
            )
            same = (ca == cb) & (ca >= 0)
            touching -= np.bincount(ca[same], minlength=len(cells))
            part = pd.DataFrame(
                {
                    "city": name,
                    "band": "all" if len(members) == 2 else members[0],
                    "h3": cells.astype("str"),
                    "evidence_trips": touching.astype("int64"),
                    "evidence_incidents": observed_at.astype("int64"),
                    "evidence_expected": expected_at,
                    "city_rate": rate,
                    "risk_ratio": theta,
                }
            )
            gi = getis_ord_star(part["risk_ratio"].to_numpy(), part["h3"].tolist(), k=config.neighbour_k)
            part["gi_z"] = gi["gi_z"].to_numpy()
            part["gi_p"] = gi["gi_p"].to_numpy()
            part["gi_q"] = fdr_bh(part["gi_p"].to_numpy())
            part["own_p"] = stats.poisson.sf(
                part["evidence_incidents"].to_numpy() - 1, part["evidence_expected"].to_numpy()
            )
            part["own_q"] = fdr_bh(part["own_p"].to_numpy())
            out.append(part)
    ev = pd.concat(out, ignore_index=True)
    ev["tier"] = config.tier_of(ev["risk_ratio"].to_numpy())
    own, gi = ev["own_q"] < config.fdr_alpha, ev["gi_q"] < config.fdr_alpha
    significant = {"own": own, "gi": gi, "own_or_gi": own | gi}[config.flag_test]
    ev["hot_cluster"] = gi
    ev["flagged"] = (
        significant & ev["tier"].isin(config.flag_tiers) & (ev["evidence_trips"] >= config.min_trips)
    )
    return ev.sort_values(["city", "band", "h3"], kind="stable").reset_index(drop=True)


def add_hotspots(window_zones: pd.DataFrame, evidence: pd.DataFrame) -> pd.DataFrame:
    """Join the window's figures with the evidence's multipliers and flags (zones of either; missing → 0)."""
    keys = ["city", "band", "h3"]
    zones = evidence.merge(window_zones, on=keys, how="outer", sort=True)
    for col in ("trips", "observed_incidents", "evidence_trips", "evidence_incidents"):
        zones[col] = zones[col].fillna(0).astype("int64")
    for col in (
        "expected_incidents",
        "expected_rate",
        "observed_rate",
        "evidence_expected",
        "observed_corrected",
        "observed_corrected_low",
        "observed_corrected_high",
    ):
        zones[col] = zones[col].fillna(0.0).astype("float64")
    zones["risk_ratio"] = zones["risk_ratio"].fillna(1.0)
    zones["gi_z"] = zones["gi_z"].fillna(0.0)
    for col in ("gi_p", "gi_q", "own_p", "own_q"):
        zones[col] = zones[col].fillna(1.0)
    zones["city_rate"] = zones.groupby(["city", "band"])["city_rate"].transform("max").fillna(0.0)
    zones["tier"] = zones["tier"].fillna("normal")
    zones["flagged"] = zones["flagged"].fillna(False).astype(bool)
    zones["hot_cluster"] = zones["hot_cluster"].fillna(False).astype(bool)
    return zones.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- the job


@dataclass
class ZoneResult:
    """The zone table and what it was computed from; printable as a short summary."""

    zones: pd.DataFrame
    as_of: pd.Timestamp
    window_start: pd.Timestamp
    trips: int
    evidence_start: pd.Timestamp | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    recovery: dict[str, float] | None = None
    run_id: str | None = None

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(
            title=f"zones {self.window_start:%Y-%m-%d %H:%M} → {self.as_of:%Y-%m-%d %H:%M} UTC "
            f"({self.trips:,} trips)"
        )
        for col in ("city", "band", "zones", "hotspots", "expected", "observed"):
            table.add_column(col)
        summary = self.zones.groupby(["city", "band"], sort=True).agg(
            zones=("h3", "size"),
            hotspots=("flagged", "sum"),
            expected=("expected_incidents", "sum"),
            observed=("observed_incidents", "sum"),
        )
        for (city, band), row in summary.iterrows():
            table.add_row(
                str(city),
                str(band),
                f"{int(row.zones):,}",
                f"{int(row.hotspots):,}",
                f"{row.expected:,.1f}",
                f"{int(row.observed):,}",
            )
        from rich.console import Group
        from rich.text import Text

        lines = [table]
        for name, path in self.outputs.items():
            lines.append(Text(f"{name}: {path}"))
        if self.recovery:
            r = self.recovery
            lines.append(
                Text(
                    f"planted hot zones: recall {r['recall']:.2f}, precision {r['precision']:.2f} "
                    f"(emerging recall {r['emerging_recall']:.2f})"
                )
            )
        if self.run_id:
            lines.append(Text(f"MLflow run: {self.run_id}"))
        return Group(*lines)


def parse_window(window: str) -> pd.Timedelta:
    """``"7d"``/``"36h"`` → Timedelta, with a clear error."""
    try:
        delta = pd.Timedelta(window_ns(window), unit="ns")  # the feature definitions' window syntax
    except (TypeError, ValueError):
        delta = None
    if delta is None or delta <= pd.Timedelta(0):
        raise ValueError(f"--window {window!r}: expected a positive duration such as 7d or 36h")
    return delta


def window_frame(
    tables: Tables | None,
    fs: FeatureSet,
    as_of: pd.Timestamp,
    start: pd.Timestamp,
    city: str | None,
    features: Path | None = None,
) -> pd.DataFrame:
    """The incident model's point-in-time frame for trips requested in [start, as_of) (in one city).

    Features are as of each trip's request time, so a trip's risk uses only what was known at dispatch.
    """
    if features is not None:
        import pyarrow.dataset as ds

        expr = (ds.field("as_of") >= start) & (ds.field("as_of") < as_of)
        if city:
            expr &= ds.field("city") == city
        frame = ds.dataset(str(features), format="parquet").to_table(filter=expr).to_pandas()
        return frame.sort_values(["as_of", "trip_id"], kind="stable").reset_index(drop=True)
    from safetyml.features.frames import build_frame

    frame = build_frame(TASK, tables, fs)
    mask = (frame["as_of"] >= start) & (frame["as_of"] < as_of)
    if city:
        mask &= frame["city"] == city
    return frame[mask.to_numpy()].reset_index(drop=True)


def observed_counts(frame: pd.DataFrame, incidents: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Incidents linked to each frame trip and reported by ``as_of`` (known facts only)."""
    known = incidents[(incidents["reported_at"] <= as_of) & incidents["trip_id"].notna()]
    counts = known["trip_id"].astype("str").value_counts()
    return frame["trip_id"].astype("str").map(counts).fillna(0).to_numpy(dtype="int64")


def evidence_trips(
    trips: pd.DataFrame,
    incidents: pd.DataFrame,
    as_of: pd.Timestamp,
    start: pd.Timestamp,
    city: str | None = None,
) -> pd.DataFrame:
    """Trips requested in [start, as_of) with their cells and incidents reported by as_of."""
    from safetyml.features.zones import cells_of

    mask = (trips["requested_at"] >= start) & (trips["requested_at"] < as_of)
    if city:
        mask &= trips["city"] == city
    part = trips.loc[mask.to_numpy()]
    out = pd.DataFrame(
        {
            "trip_id": part["trip_id"].to_numpy(),
            "city": part["city"].astype("str").to_numpy(),
            "as_of": part["requested_at"].to_numpy(),
            "pickup_h3": cells_of(part["pickup_lat"], part["pickup_lng"]).to_numpy(),
            "dropoff_h3": cells_of(part["dropoff_lat"], part["dropoff_lng"]).to_numpy(),
        }
    )
    out["observed"] = observed_counts(out, incidents, as_of)
    return out


def zone_table(
    frame: pd.DataFrame,
    model: RiskModel,
    evidence: pd.DataFrame,
    as_of: pd.Timestamp,
    fs: FeatureSet | None = None,
    config: ZoneConfig | None = None,
    incidents: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The zone table: ``frame`` holds the window's trips (keys + features) scored with ``model``;
    ``evidence`` the evidence trips (:func:`evidence_trips`); ``incidents`` gives the window's observed
    counts (default: taken from ``evidence`` by trip id).
    """
    config = config or ZoneConfig()
    if len(frame) == 0:
        raise ValueError("zone_table: no trips in the window; check --as-of, --window and --city")
    if incidents is not None:
        observed = observed_counts(frame, incidents, as_of)
    else:
        known = evidence.set_index(evidence["trip_id"].astype("str"))["observed"]
        observed = frame["trip_id"].astype("str").map(known).fillna(0).to_numpy(dtype="int64")
    trips = pd.DataFrame(
        {
            "city": frame["city"].astype("str").to_numpy(),
            "pickup_h3": frame["pickup_h3"].to_numpy(),
            "dropoff_h3": frame["dropoff_h3"].to_numpy(),
            "probability": model.predict_proba(frame),
            "observed": observed,
        }
    )
    if incidents is not None:
        trips["reported"] = trips["probability"] * _reported_share(frame, incidents, as_of)
    trips["band"] = time_band(frame["as_of"], frame["city"], config)
    members = band_memberships(trips, config)
    ev = evidence.assign(band=time_band(evidence["as_of"], evidence["city"], config))
    zones = add_hotspots(aggregate_zones(trips, members), zone_evidence(ev, config))
    zones["drivers"] = zone_drivers(zones, members, model, frame, fs, config)
    return zones.loc[:, list(ZONE_COLUMNS)]


def _reported_share(frame: pd.DataFrame, incidents: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Expected share of each window trip's incidents reported by as_of (1 when delays cannot be learnt)."""
    try:
        return trip_reported_share(frame["as_of"], incidents, as_of)
    except NowcastError as exc:
        log.warning("observed counts not delay-corrected: %s", exc)
        return np.ones(len(frame))


def write_outputs(zones: pd.DataFrame, out: Path, title: str, subtitle: str) -> dict[str, Path]:
    """The zone table as Parquet, GeoJSON and the HTML map, in ``out``."""
    from safetyml.batch.geo import write_geojson
    from safetyml.batch.zone_map import write_zone_map

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "zones.parquet"
    zones.to_parquet(table, index=False)
    return {
        "table": table,
        "geojson": write_geojson(zones, out / "zones.geojson"),
        "map": write_zone_map(zones, out / "zone_map.html", title=title, subtitle=subtitle),
    }


def score_zones(
    data: Path,
    as_of: pd.Timestamp | str | None = None,
    window: str = "7d",
    out: Path | None = None,
    city: str | None = None,
    config: ZoneConfig | None = None,
    model: RiskModel | None = None,
    log_mlflow: bool = True,
    features: Path | None = None,
    client: Any = None,
) -> ZoneResult:
    """The zone job: load tables, score the window's trips with the champion, write and log the outputs.

    ``as_of`` defaults to just after the last trip's request time (so the window is the latest one).
    ``features`` reuses an incident_risk frame already built by ``safetyml features build`` (faster).
    ``client`` (a Dask client, ``--engine dask``) validates the tables and builds the frame on the cluster
    (:func:`window_inputs_dask`); the window's trips are then scored and mapped here, as on pandas.
    """
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables

    config = config or ZoneConfig()
    if city is not None:
        cities.get(city)  # unknown city: a clear error
    fs = load_feature_set()
    if client is None:
        tables = load_tables(Path(data))
        as_of_ts = _resolve_as_of(as_of, tables.trips)
    else:
        from safetyml.tables import load_tables_dask

        tables = load_tables_dask(Path(data), client)
        latest = tables.get("trips")["requested_at"].max().compute()
        as_of_ts = _resolve_as_of(as_of, pd.DataFrame({"requested_at": [latest]}))
    start = as_of_ts - parse_window(window)
    evidence_start = as_of_ts - max(parse_window(config.evidence), parse_window(window))
    if model is None:
        from safetyml import tracking

        model, _ = tracking.load_model(TASK, "champion")
    if client is None:
        frame = window_frame(tables, fs, as_of_ts, start, city, features)
        evidence = evidence_trips(tables.trips, tables.incidents, as_of_ts, evidence_start, city)
        incidents = tables.incidents
    else:
        frame, evidence, incidents = window_inputs_dask(
            tables, client, fs, as_of_ts, start, evidence_start, city, features, out
        )
    zones = zone_table(frame, model, evidence, as_of_ts, fs, config, incidents=incidents)
    result = ZoneResult(
        zones=zones, as_of=as_of_ts, window_start=start, trips=len(frame), evidence_start=evidence_start
    )
    truth_path = Path(data) / "truth" / "hot_zones.parquet"
    if truth_path.exists():
        result.recovery = recovery(zones, pd.read_parquet(truth_path), start, as_of_ts)
    if out is not None:
        subtitle = (
            f"Trips requested {start:%Y-%m-%d %H:%M} to {as_of_ts:%Y-%m-%d %H:%M} UTC; "
            f"{len(frame):,} trips; incidents known by as_of."
        )
        result.outputs = write_outputs(zones, Path(out), "Zone risk map", subtitle)
        if log_mlflow:
            result.run_id = _log_run(result, window, city, config)
    return result


def window_inputs_dask(
    tables: Any,
    client: Any,
    fs: FeatureSet,
    as_of: pd.Timestamp,
    start: pd.Timestamp,
    evidence_start: pd.Timestamp,
    city: str | None,
    features: Path | None,
    out: Path | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The zone job's inputs on Dask: (window frame, evidence trips, incidents).

    The incident_risk frame needs every trip's history, so it is built on the cluster (the Dask engine's
    ``features build``, into a dataset folder under ``out`` that is removed afterwards; give ``features``
    to reuse one); only the window's rows are read back. The evidence window's trips are filtered on the
    cluster; incidents (small next to trips) are gathered.
    """
    import shutil
    import tempfile

    if features is None:
        from safetyml.features.distributed import build_frame_dask

        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".frame-", dir=out))
        try:
            build_frame_dask(TASK, tables, client, work / "frame", fs)
            frame = window_frame(None, fs, as_of, start, city, work / "frame")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    else:
        frame = window_frame(None, fs, as_of, start, city, features)
    trips = tables.get("trips")
    trips = trips[(trips["requested_at"] >= evidence_start) & (trips["requested_at"] < as_of)].compute()
    incidents = tables.get("incidents").compute().reset_index(drop=True)
    evidence = evidence_trips(trips.reset_index(drop=True), incidents, as_of, evidence_start, city)
    return frame, evidence, incidents


def _resolve_as_of(as_of: pd.Timestamp | str | None, trips: pd.DataFrame) -> pd.Timestamp:
    if as_of is None:
        return pd.Timestamp(trips["requested_at"].max()) + pd.Timedelta(seconds=1)
    return utc_timestamp(as_of)


def _log_run(result: ZoneResult, window: str, city: str | None, config: ZoneConfig) -> str:
    from safetyml import tracking

    zones = result.zones
    with tracking.start_job_run("zone-risk", f"zones-{result.as_of:%Y%m%dT%H%M}") as run:
        run.log_params(
            {
                "as_of": result.as_of.isoformat(),
                "window": window,
                "city": city or "all",
                "config": config.model_dump(),
            }
        )
        metrics = {
            "trips": float(result.trips),
            "zones": float(len(zones)),
            "hotspots": float(zones["flagged"].sum()),
            "expected_incidents": float(zones.loc[zones["band"] == "all", "expected_incidents"].sum()),
            "observed_incidents": float(zones.loc[zones["band"] == "all", "observed_incidents"].sum()),
        }
        if result.recovery:
            metrics.update({f"recovery_{k}": v for k, v in result.recovery.items()})
        run.log_metrics(metrics)
        run.log_artifacts(list(result.outputs.values()), "zones")
        return run.run_id
