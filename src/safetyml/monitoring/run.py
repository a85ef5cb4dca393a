"""One monitoring evaluation (``safetyml monitor run``): stability, performance, nowcast, rules, report.

Pure steps are in the sibling modules; this one loads the inputs, calls them per market with that
market's config, records the alerts and writes the outputs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from safetyml.monitoring import alerts as alert_store
from safetyml.monitoring.config import MonitoringConfig, for_market, load_configs
from safetyml.monitoring.indicators import MarketInputs, build_series
from safetyml.monitoring.nowcast import DelayModel, aggregate, fit_delays, incident_cities
from safetyml.monitoring.performance import performance_by_period
from safetyml.monitoring.rules import evaluate_rule
from safetyml.monitoring.stability import stability_table, top_movers
from safetyml.tasks import INCIDENT_RISK

log = logging.getLogger(__name__)


@dataclass
class MonitoringResult:
    """Every table of one evaluation, the alert changes it made and the files it wrote."""

    as_of: pd.Timestamp
    tables: dict[str, pd.DataFrame]
    changes: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        lines: list[Any] = [Text(f"monitoring as of {self.as_of:%Y-%m-%d %H:%M} UTC ({self.seconds:.1f} s)")]
        stab = self.tables.get("stability")
        if stab is not None and not stab.empty:
            drifted = stab[stab["drifted"]]
            lines.append(
                Text(
                    f"stability: {len(stab):,} (period, slice, feature) checks, {len(drifted):,} drifted "
                    f"(BH q < fdr and PSI ≥ min_psi); reference: {self.notes.get('reference', '?')}"
                )
            )
        perf = self.tables.get("performance")
        if perf is not None and not perf.empty:
            table = Table(title="performance by week")
            for col in ("period", "mature", "rows", "roc_auc", "est_roc_auc", "pr_auc", "ece"):
                table.add_column(col)
            for row in perf.itertuples():
                table.add_row(
                    f"{row.period:%Y-%m-%d}",
                    "yes" if row.mature else "no",
                    f"{int(row.rows):,}",
                    _fmt(getattr(row, "roc_auc", np.nan)),
                    _fmt(row.est_roc_auc),
                    _fmt(getattr(row, "pr_auc", np.nan)),
                    _fmt(getattr(row, "ece", np.nan)),
                )
            lines.append(table)
        active = self.tables.get("alerts")
        if active is not None:
            n_active = int(active["state"].isin(alert_store.ACTIVE_STATES).sum()) if not active.empty else 0
            lines.append(
                Text(
                    f"alerts: {len(self.changes.get('opened', []))} opened, "
                    f"{len(self.changes.get('updated', []))} still firing, "
                    f"{len(self.changes.get('resolved', []))} resolved; {n_active} active in the store"
                )
            )
        for name, path in self.outputs.items():
            lines.append(Text(f"{name}: {path}"))
        return Group(*lines)


def _fmt(value: Any) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3f}"


def period_start(times: pd.Series, period: str) -> pd.Series:
    """Start (UTC midnight) of the day, ISO week (Monday) or month of each time."""
    t = pd.to_datetime(times, utc=True).dt.normalize()
    if period == "week":
        return t - pd.to_timedelta(t.dt.dayofweek, unit="D")
    if period == "month":
        return t - pd.to_timedelta(t.dt.day - 1, unit="D")
    return t


def known_labels(
    frame: pd.DataFrame, incidents: pd.DataFrame, as_of: pd.Timestamp, min_severity: int
) -> np.ndarray:
    """1 when an incident of at least ``min_severity`` linked to the trip was reported by ``as_of``."""
    known = incidents[
        (incidents["reported_at"] <= as_of)
        & (incidents["severity"] >= min_severity)
        & incidents["trip_id"].notna()
    ]
    return frame["trip_id"].astype("str").isin(set(known["trip_id"].astype("str"))).to_numpy().astype("int64")


def delay_table(model: DelayModel) -> pd.DataFrame:
    """Quantiles of the fitted reporting delays per stratum (days)."""
    rows = []
    for key, n in sorted(model.incidents.items()):
        incident_type, market = key.split("|")
        rows.append(
            {
                "type": incident_type,
                "market": market,
                "incidents": n,
                **{f"delay_p{int(q * 100)}_days": model.quantile(key, q) for q in (0.5, 0.9, 0.99)},
                "reported_within_1d": float(model.reported_share(key, np.array([86_400e9]))[0]),
            }
        )
    return pd.DataFrame(rows)


def score_frame(frame: pd.DataFrame, model: Any, policies: Any) -> pd.DataFrame:
    """Probability, tier and action of each trip (the market's policy bands)."""
    from safetyml.scoring.policies import market_of_city

    p = model.predict_proba(frame)
    out = pd.DataFrame(
        {
            "trip_id": frame["trip_id"].astype("str").to_numpy(),
            "as_of": pd.to_datetime(frame["as_of"], utc=True).to_numpy(),
            "city": frame["city"].astype("str").to_numpy(),
            "probability": p,
        }
    )
    out["market"] = [market_of_city(c) or "default" for c in out["city"]]
    out["tier"] = ""
    out["action"] = ""
    for market, idx in out.groupby("market").groups.items():
        tiers, actions = policies.for_market(None if market == "default" else market).decide(
            INCIDENT_RISK, out.loc[idx, "probability"].to_numpy()
        )
        out.loc[idx, "tier"] = tiers
        out.loc[idx, "action"] = actions
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    return out


def monitor(
    tables: Any,
    frame: pd.DataFrame,
    model: Any,
    as_of: pd.Timestamp,
    configs: dict[str, MonitoringConfig],
    model_ref: Any = None,
    decisions: pd.DataFrame | None = None,
    store_as_of: pd.Timestamp | None = None,
    zones: pd.DataFrame | None = None,
    record_alerts: bool = True,
    alerts_path: Path | None = None,
    progress: bool = False,
    appeals: pd.DataFrame | None = None,
) -> MonitoringResult:
    """Evaluate everything on in-memory inputs; ``frame`` is the incident_risk frame of the trips."""
    from safetyml.monitoring import reference
    from safetyml.scoring.policies import load_policies

    started = time.perf_counter()
    base = for_market(configs, None)
    history_start = as_of - pd.Timedelta(days=base.history_days)
    scored_all = score_frame(frame, model, load_policies())
    name = getattr(model_ref, "name", None) or "adhoc"
    version = getattr(model_ref, "version", None) or "0"
    profile, source = reference.get_or_build(
        model,
        frame,
        scored_all["probability"].to_numpy(),
        model_name=name,
        version=str(version),
        run_id=getattr(model_ref, "run_id", None) or None,
        bins=base.stability.bins,
    )
    window = (scored_all["as_of"] >= history_start) & (scored_all["as_of"] < as_of)
    scored = scored_all.loc[window.to_numpy()].reset_index(drop=True)
    monitored = frame.loc[window.to_numpy()].reset_index(drop=True)
    notes: dict[str, Any] = {
        "reference": f"{source}; {profile.window.get('source', '')} {profile.window.get('start', '')[:10]} "
        f"to {profile.window.get('end', '')[:10]}, {profile.rows:,} rows",
        "model": f"{name} v{version}",
        "rows_monitored": len(scored),
    }

    # ---- stability (one table, per market config)
    stab_parts = []
    for market, idx in scored.groupby("market").groups.items():
        cfg = for_market(configs, market).stability
        part = monitored.loc[idx].assign(period=period_start(scored.loc[idx, "as_of"], cfg.period).to_numpy())
        part["market"] = market
        keys = ["period", "market", *[s for s in cfg.slices if s in part.columns and s != "market"]]
        stab_parts.append(
            stability_table(
                part,
                profile,
                keys,
                score=scored.loc[idx, "probability"].to_numpy(),
                fdr=cfg.fdr,
                min_psi=cfg.min_psi,
                bands=cfg.bands,
                min_rows=cfg.min_rows,
                progress=progress,
                exclude=cfg.exclude,
            )
        )
    stability = pd.concat(stab_parts, ignore_index=True) if stab_parts else pd.DataFrame()
    movers = (
        top_movers(stability, ["period", "market", "city"], base.stability.top_movers)
        if len(stability)
        else stability
    )

    # ---- performance (labels known at as_of; mature = older than the horizon)
    perf_cfg = base.performance
    scored["label"] = known_labels(scored, tables.incidents, as_of, perf_cfg.min_severity)
    scored["period"] = period_start(scored["as_of"], "week")
    horizon = as_of - pd.Timedelta(days=perf_cfg.maturity_days)
    period_end = scored["period"] + pd.Timedelta(days=7)
    mature = (period_end <= horizon).to_numpy()
    performance, bands = performance_by_period(
        scored, mature, perf_cfg.bootstrap, perf_cfg.confidence, perf_cfg.ece_bins, perf_cfg.seed
    )

    # ---- nowcast
    nc = base.nowcast
    incidents = tables.incidents.copy()
    incidents["city"] = incident_cities(incidents, tables.trips, tables.riders, tables.merchants).to_numpy()
    from safetyml.scoring.policies import market_of_city

    incidents["market"] = [market_of_city(c) or "default" if c else "default" for c in incidents["city"]]
    delays = fit_delays(
        incidents,
        incidents["market"],
        as_of,
        nc.lookback_days,
        nc.max_delay_days,
        nc.resolution_hours,
        nc.min_incidents,
    )
    trips = tables.trips[["trip_id", "requested_at", "city"]]

    # ---- indicators and rules, per market
    signals, firings, series_parts, cells_parts = [], [], [], []
    markets = sorted(set(scored["market"]) | {market_of_city(c) or "default" for c in trips["city"].unique()})
    for market in markets:
        cfg = for_market(configs, market)
        in_market = trips["city"].map(lambda c, m=market: (market_of_city(c) or "default") == m)
        inputs = MarketInputs(
            market=market,
            as_of=as_of,
            trips=trips.loc[in_market.to_numpy()],
            incidents=incidents[incidents["market"] == market],
            delays=delays,
            scored=scored[scored["market"] == market],
            decisions=None
            if decisions is None or decisions.empty
            else decisions[decisions["market"] == market],
            store_as_of=store_as_of,
            zones=None
            if zones is None
            else zones[zones["city"].map(lambda c, m=market: (market_of_city(c) or "default") == m)],
            history_days=cfg.history_days,
            level=cfg.nowcast.level,
            appeals=None if appeals is None else appeals[appeals["market"].fillna("default") == market],
        )
        for indicator in cfg.indicators:
            series = build_series(indicator, inputs)
            if series.empty:
                continue
            series_parts.append(series.assign(market=market))
            for rule in (r for r in cfg.rules if r.indicator == indicator.id):
                sig, fired = evaluate_rule(rule, indicator, series, market)
                signals.append(sig)
                firings.extend(fired)
        cells = inputs.cells(cfg.performance.min_severity)
        cells_parts.append(cells.assign(market=market))
    cells = pd.concat(cells_parts, ignore_index=True) if cells_parts else pd.DataFrame()
    recent = (
        cells[cells["day"] >= (as_of - pd.Timedelta(days=nc.recent_days)).floor("D")] if len(cells) else cells
    )
    nowcast_city = aggregate(recent, ["day", "city"], nc.level) if len(recent) else pd.DataFrame()

    changes: dict[str, list[int]] = {}
    if record_alerts:
        changes = alert_store.apply_firings(firings, now=as_of, path=alerts_path)
    current = alert_store.list_alerts(path=alerts_path) if record_alerts else pd.DataFrame()
    tables_out = {
        "stability": stability,
        "top_movers": movers,
        "performance": performance,
        "band_rates": bands,
        "nowcast": nowcast_city,
        "nowcast_cells": recent,
        "delays": delay_table(delays),
        "series": pd.concat(series_parts, ignore_index=True) if series_parts else pd.DataFrame(),
        "signals": pd.concat(signals, ignore_index=True) if signals else pd.DataFrame(),
        "firings": pd.DataFrame(
            [{**f.__dict__, "labels": dict(f.labels), "fingerprint": f.fingerprint} for f in firings]
        ),
        "alerts": current,
    }
    return MonitoringResult(as_of, tables_out, changes, notes=notes, seconds=time.perf_counter() - started)


def run_monitoring(
    data: Path,
    out: Path | None = None,
    as_of: pd.Timestamp | str | None = None,
    config_dir: Path | None = None,
    features: Path | None = None,
    model: Any = None,
    model_ref: Any = None,
    zones: Path | None = None,
    record_alerts: bool = True,
    progress: bool = True,
) -> MonitoringResult:
    """``safetyml monitor run``: load the data folder and the champion, evaluate, write the outputs."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables

    started = time.perf_counter()
    configs = load_configs(config_dir)
    tables = load_tables(Path(data))
    as_of_ts = _resolve_as_of(as_of, tables.trips)
    if model is None:
        from safetyml import tracking

        model, model_ref = tracking.load_model(INCIDENT_RISK, "champion")
    fs = load_feature_set()
    frame = _frame(tables, fs, features)
    frame = frame[pd.to_datetime(frame["as_of"], utc=True) < as_of_ts].reset_index(drop=True)
    since = as_of_ts - pd.Timedelta(days=for_market(configs, None).history_days)
    decisions = _decisions(since)
    store_as_of = _store_as_of()
    zone_table = pd.read_parquet(zones) if zones is not None and Path(zones).exists() else None
    result = monitor(
        tables,
        frame,
        model,
        as_of_ts,
        configs,
        model_ref=model_ref,
        decisions=decisions,
        store_as_of=store_as_of,
        zones=zone_table,
        record_alerts=record_alerts,
        progress=progress,
        appeals=_appeals(since),
    )
    if out is not None:
        from safetyml.monitoring.report import write_outputs

        result.outputs = write_outputs(result, Path(out))
    result.seconds = time.perf_counter() - started
    return result


def _frame(tables: Any, fs: Any, features: Path | None) -> pd.DataFrame:
    if features is not None:
        return pd.read_parquet(features)
    from safetyml.features.frames import build_frame

    return build_frame(INCIDENT_RISK, tables, fs)


def _decisions(since: pd.Timestamp) -> pd.DataFrame | None:
    from safetyml.scoring import audit

    path = audit.default_path()
    if not path.exists():
        return None
    frame = audit.read_decisions(since.to_pydatetime(), path)
    return frame[frame["task"] == INCIDENT_RISK] if len(frame) else None


def _appeals(since: pd.Timestamp) -> pd.DataFrame | None:
    """The outcome that stands for each decision appealed since ``since`` (recorded_at as UTC times), from
    the audit store (SQLite or PostgreSQL); None when there is no store."""
    from safetyml import envvars
    from safetyml.scoring import audit
    from safetyml.scoring.appeals import read_appeals

    if not (os.environ.get(envvars.AUDIT_URL) or audit.default_path().exists()):
        return None
    frame = read_appeals()
    frame["recorded_at"] = pd.to_datetime(frame["recorded_at"], utc=True, format="ISO8601")
    return frame[frame["recorded_at"] >= since].reset_index(drop=True)


def _store_as_of() -> pd.Timestamp | None:
    """The as_of of the online store the service reads: ``SAFETYML_ONLINE_STORE_URL`` (Redis) if set, else
    the SQLite file in ``SAFETYML_HOME`` (None when there is none yet)."""
    from safetyml import envvars, paths
    from safetyml.features.online import STORE_FILE, OnlineStore

    if not os.environ.get(envvars.ONLINE_STORE_URL) and not (paths.home() / STORE_FILE).exists():
        return None
    store = OnlineStore.open()
    try:
        stamp = store.metadata().get("as_of")
    finally:
        store.close()
    return pd.Timestamp(stamp).tz_convert("UTC") if stamp else None


def _resolve_as_of(as_of: pd.Timestamp | str | None, trips: pd.DataFrame) -> pd.Timestamp:
    if as_of is None:
        return pd.Timestamp(trips["requested_at"].max()) + pd.Timedelta(seconds=1)
    ts = pd.Timestamp(as_of)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
