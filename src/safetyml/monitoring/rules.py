"""Rules: run a rule's detector over each series of its indicator and decide which alerts fire now.

A rule is active for a series when the hysteresis of its detector's signal is on at the last point of
the series (the evaluation time). Every evaluated series yields a :class:`~.alerts.Firing`, active or
not, so the alert store can both open new alerts and resolve cleared ones.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from safetyml.monitoring import detectors
from safetyml.monitoring.alerts import Firing
from safetyml.monitoring.config import Indicator, Rule


def rule_signal(
    rule: Rule,
    times: pd.DatetimeIndex,
    values: np.ndarray,
    noise: np.ndarray,
    period: str,
    part: pd.DataFrame | None = None,
) -> np.ndarray:
    """The detector's signal, oriented so that larger means "more alarming".

    ``part`` (the series' rows, sorted by time) gives a ``count_cusum`` the incidents known so far
    (``known``), what they are compared with (``expected``, else ``trips``) and the nowcast's
    ``reported_share`` of each point.
    """
    d = rule.detector
    per_week = 168 if period == "hour" else 7
    if d.kind == "count_cusum":
        if part is None or "known" not in part:
            raise ValueError(f"rule {rule.id}: count_cusum needs an incident_rate/incident_ratio series")
        base = part["expected"] if "expected" in part else part["trips"]
        share = part.get("reported_share")
        return detectors.count_cusum(
            part["known"].to_numpy(dtype="float64"),
            base.to_numpy(dtype="float64"),
            baseline=d.baseline_weeks * per_week,
            shift=d.shift,
            arl0=d.arl0,
            reported_share=None if share is None else share.to_numpy(dtype="float64"),
            direction=d.direction,
            min_events=d.min_events,
            seed=zlib.crc32(f"{rule.id}|{part['series'].iloc[0] if 'series' in part else ''}".encode()),
        )
    if d.kind == "seasonal_z":
        z = detectors.seasonal_z(times, values, noise, period=period, weeks=d.baseline_weeks)
        return detectors.directed(z, d.direction)
    if d.kind == "cusum":
        return detectors.cusum(
            values, noise, baseline=d.baseline_weeks * per_week, k=d.k, direction=d.direction
        )
    sign = -1.0 if d.direction == "down" else 1.0
    return sign * np.asarray(values, dtype="float64") if d.direction != "both" else np.abs(values)


def _thresholds(rule: Rule) -> tuple[float, float]:
    d = rule.detector
    if d.kind == "threshold" and d.direction == "down":
        return -d.enter, -d.exit
    return d.enter, d.exit


def evaluate_rule(
    rule: Rule, indicator: Indicator, series: pd.DataFrame, market: str
) -> tuple[pd.DataFrame, list[Firing]]:
    """Signals (one row per series point) and one firing per series for ``rule``."""
    signals, firings = [], []
    enter, exit_ = _thresholds(rule)
    if series.empty:
        return pd.DataFrame(), []
    for name, part in series.groupby("series", sort=True):
        part = part.sort_values("time")
        times = pd.DatetimeIndex(pd.to_datetime(part["time"], utc=True))
        values = part["value"].to_numpy(dtype="float64")
        noise = part["noise_sd"].to_numpy(dtype="float64") if "noise_sd" in part else None
        signal = rule_signal(rule, times, values, noise, indicator.period, part)
        active = detectors.hysteresis(signal, enter, exit_, rule.detector.min_duration)
        runs = detectors.episodes(times, active)
        labels = dict(kv.split("=", 1) for kv in str(name).split(",")) if name != "all" else {}
        since = runs[-1][0] if runs and runs[-1][1] is None else None
        last_value, last_signal = float(values[-1]), float(signal[-1]) if np.isfinite(signal[-1]) else None
        message = (
            f"{rule.id} on {indicator.id} [{name}]: value {last_value:.4g}, "
            f"{rule.detector.kind} signal {last_signal if last_signal is None else round(last_signal, 2)} "
            f"(enter {rule.detector.enter}, exit {rule.detector.exit})"
        )
        firings.append(
            Firing(
                rule_id=rule.id,
                market=market,
                labels={"indicator": indicator.id, **labels},
                active=bool(active[-1]),
                severity=rule.severity,
                since=since,
                value=last_value,
                signal=last_signal,
                message=message,
            )
        )
        signals.append(
            pd.DataFrame(
                {
                    "market": market,
                    "rule": rule.id,
                    "indicator": indicator.id,
                    "series": name,
                    "time": times,
                    "value": values,
                    "signal": signal,
                    "active": active,
                }
            )
        )
    return pd.concat(signals, ignore_index=True), firings
