"""Indicator series (the KPIs a rule watches), built from the monitored inputs of one market.

Every series is a long table: ``indicator``, ``series`` (its labels as ``key=value`` text), the label
columns, ``time``, ``value``, ``noise_sd`` (the sampling noise of the point when known: Poisson for
rates, binomial for shares, plus the nowcast's own uncertainty for recent incident counts) and ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from safetyml.monitoring.config import Indicator
from safetyml.monitoring.nowcast import DelayModel, aggregate, nowcast_cells

SERIES_COLUMNS = ("indicator", "series", "time", "value", "noise_sd", "n")


@dataclass
class MarketInputs:
    """What one market's indicators are computed from (all optional except trips)."""

    market: str
    as_of: pd.Timestamp
    trips: pd.DataFrame  # requested_at, city
    incidents: pd.DataFrame  # occurred_at, reported_at, type, severity, city
    delays: DelayModel | None = None
    scored: pd.DataFrame | None = None  # as_of, city, probability, tier, action
    decisions: pd.DataFrame | None = None  # audit log: decided_at, market, cold_start
    store_as_of: pd.Timestamp | None = None
    zones: pd.DataFrame | None = None  # zone table with city, band, flagged
    appeals: pd.DataFrame | None = None  # latest outcome per appealed decision (scoring.appeals.read_appeals)
    history_days: int = 84
    level: float = 0.9
    _cells: dict[int, pd.DataFrame] = field(default_factory=dict)

    def cells(self, min_severity: int) -> pd.DataFrame:
        """Nowcast cells (day, city, type) over the monitored history, cached per severity threshold."""
        if min_severity not in self._cells:
            if self.delays is None:
                raise ValueError("incident_rate indicators need the nowcast's delay model")
            self._cells[min_severity] = nowcast_cells(
                self.trips, self.incidents, self.as_of, self.delays, self.history_days, min_severity
            )
        return self._cells[min_severity]


def _labelled(frame: pd.DataFrame, by: list[str], indicator: str) -> pd.DataFrame:
    frame = frame.copy()
    frame["indicator"] = indicator
    if by:
        frame["series"] = (
            frame[by].astype(str).apply(lambda r: ",".join(f"{k}={v}" for k, v in r.items()), axis=1)
        )
    else:
        frame["series"] = "all"
    return frame


def _bucket(times: pd.Series, period: str) -> pd.Series:
    t = pd.to_datetime(times, utc=True)
    return t.dt.floor("h" if period == "hour" else "D")


def incident_rate(spec: Indicator, inputs: MarketInputs) -> pd.DataFrame:
    """Delay-corrected incidents per 10k trips per day (and ``by``: city and/or type)."""
    cells = inputs.cells(spec.min_severity)
    if spec.types:
        cells = cells[cells["type"].isin(spec.types)]
    by = [b for b in spec.by if b in ("city", "type")]
    agg = aggregate(cells, ["day", *by], inputs.level)
    trips = np.maximum(agg["trips"].to_numpy(dtype="float64"), 1.0)
    agg["time"] = agg["day"]
    agg["value"] = agg["corrected_per_10k"]
    # Poisson noise of the eventual count plus the nowcast's own uncertainty about the still-to-come part
    agg["noise_sd"] = np.sqrt(agg["corrected"].clip(lower=0.5) + agg["corrected_var"]) / trips * 1e4
    agg["n"] = agg["trips"]
    return _labelled(agg, by, spec.id)


def incident_ratio(spec: Indicator, inputs: MarketInputs) -> pd.DataFrame:
    """Delay-corrected incidents ÷ the model's expected incidents, per day (and city, type).

    The champion's calibrated probabilities already account for what changes the risk of the trips
    (rain, night, riders, zones), so this ratio stays near 1 when those change and moves when the
    incident rate itself does; a flat rate per trip swings with the weather. The model predicts any
    incident, so for a subset (``types``, ``min_severity``, or ``by: [type]``) the expected count is the
    sum of probabilities times the subset's share of the city's incidents in the mature history.
    """
    by = [b for b in spec.by if b in ("city", "type")]
    scored = inputs.scored
    days = _bucket(scored["as_of"], "day").rename("day")
    expected = scored.groupby([days, scored["city"]], sort=True)["probability"].sum().rename("model_expected")
    base = inputs.cells(1).groupby(["day", "city"], sort=True)["weight"].sum().rename("base_weight")
    cells = inputs.cells(spec.min_severity)
    if spec.types:
        cells = cells[cells["type"].isin(spec.types)]
    cells = cells.join(expected, on=["day", "city"], how="inner").join(base, on=["day", "city"])
    cells["expected"] = cells["model_expected"] * cells["weight"] / cells["base_weight"].clip(lower=1e-12)
    agg = aggregate(cells, ["day", *by], inputs.level)
    agg = agg.join(cells.groupby(["day", *by], sort=True)["expected"].sum(), on=["day", *by])
    agg = agg[agg["expected"] > 0].copy()
    agg["time"] = agg["day"]
    agg["value"] = agg["corrected"] / agg["expected"]
    # Poisson noise of the count under "as expected", plus the nowcast's uncertainty
    agg["noise_sd"] = np.sqrt(agg["expected"] + agg["corrected_var"]) / agg["expected"]
    agg["n"] = agg["trips"]
    return _labelled(agg, by, spec.id)


def share(spec: Indicator, frame: pd.DataFrame, time_col: str, hit: np.ndarray) -> pd.DataFrame:
    """Share of rows that ``hit`` per period bucket and ``by``, with its binomial noise."""
    by = [b for b in spec.by if b in frame.columns]
    data = frame[by].copy() if by else pd.DataFrame(index=frame.index)
    data["time"] = _bucket(frame[time_col], spec.period).to_numpy()
    data["hit"] = np.asarray(hit, dtype="float64")
    agg = data.groupby(["time", *by], sort=True)["hit"].agg(["mean", "size"]).reset_index()
    agg = agg.rename(columns={"mean": "value", "size": "n"})
    v = agg["value"].clip(lower=0.5 / agg["n"], upper=1 - 0.5 / agg["n"])
    agg["noise_sd"] = np.sqrt(v * (1 - v) / agg["n"])
    return _labelled(agg, by, spec.id)


def build_series(spec: Indicator, inputs: MarketInputs) -> pd.DataFrame:
    """The series of one indicator for one market (empty when its source is not available)."""
    empty = pd.DataFrame(columns=list(SERIES_COLUMNS))
    if spec.kind == "incident_rate":
        return incident_rate(spec, inputs) if inputs.delays is not None else empty
    if spec.kind == "incident_ratio":
        if inputs.delays is None or inputs.scored is None or inputs.scored.empty:
            return empty
        return incident_ratio(spec, inputs)
    if spec.kind in ("top_tier_share", "action_rate"):
        if inputs.scored is None or inputs.scored.empty:
            return empty
        scored = inputs.scored
        hit = (
            scored["tier"].isin(spec.tiers).to_numpy()
            if spec.kind == "top_tier_share"
            else (scored["action"] == spec.action).to_numpy()
        )
        return share(spec, scored, "as_of", hit)
    if spec.kind == "cold_start_share":
        if inputs.decisions is None or inputs.decisions.empty:
            return empty
        return share(
            spec, inputs.decisions, "decided_at", inputs.decisions["cold_start"].to_numpy(dtype=bool)
        )
    if spec.kind == "overturn_rate":  # by: task, action, policy_version, model_version (columns of appeals)
        if inputs.appeals is None or inputs.appeals.empty:
            return empty
        appeals = inputs.appeals
        return share(spec, appeals, "recorded_at", (appeals["outcome"] == "overturned").to_numpy())
    if spec.kind == "hot_zones":
        if inputs.zones is None or inputs.zones.empty:
            return empty
        zones = inputs.zones[inputs.zones["band"] == "all"] if "band" in inputs.zones else inputs.zones
        by = [b for b in spec.by if b in zones.columns]
        counts = (
            zones.groupby(by, sort=True)["flagged"].sum().reset_index()
            if by
            else pd.DataFrame({"flagged": [zones["flagged"].sum()]})
        )
        counts = counts.rename(columns={"flagged": "value"}).assign(
            time=inputs.as_of, noise_sd=np.nan, n=len(zones)
        )
        return _labelled(counts, by, spec.id)
    if spec.kind == "store_staleness_hours":
        if inputs.store_as_of is None:
            return empty
        hours = (inputs.as_of - inputs.store_as_of) / pd.Timedelta(hours=1)
        frame = pd.DataFrame({"time": [inputs.as_of], "value": [hours], "noise_sd": [np.nan], "n": [1]})
        return _labelled(frame, [], spec.id)
    raise ValueError(f"unknown indicator kind {spec.kind!r}")
