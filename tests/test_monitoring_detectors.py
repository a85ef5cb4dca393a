"""Detectors and alert behaviour: CUSUM on a step, seasonal z, hysteresis, minimum duration, rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.monitoring import detectors
from safetyml.monitoring.config import Detector, Indicator, Rule
from safetyml.monitoring.rules import evaluate_rule


def test_cusum_detects_a_step_soon_after_it_and_not_before():
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 1.0, 120)
    x[80:] += 1.5  # a 1.5 sd step at t = 80
    s = detectors.cusum(x, np.ones_like(x), baseline=42, k=0.5)
    assert np.isnan(s[:42]).all()
    first = int(np.argmax(s >= 5.0))
    assert 80 <= first <= 90
    assert (s[42:80] < 5.0).all()
    down = detectors.cusum(-x, np.ones_like(x), baseline=42, k=0.5, direction="down")
    np.testing.assert_allclose(down[42:], s[42:])


def test_cusum_in_control_false_alarm_rate_is_within_its_nominal_arl():
    rng = np.random.default_rng(1)
    alarms = 0
    periods = 0
    for _ in range(200):
        x = rng.normal(0.0, 1.0, 142)
        active = detectors.hysteresis(detectors.cusum(x, np.ones_like(x), baseline=42, k=0.5), 5.0, 2.0)
        alarms += len(detectors.episodes(pd.date_range("2026-01-01", periods=142, freq="D"), active))
        periods += 100
    nominal = detectors.nominal_rate("cusum", 5.0, k=0.5)
    assert 400 < detectors.cusum_arl0(0.5, 5.0) < 1000  # ~ 930 for h = 5, k = 0.5
    assert alarms / periods <= 2 * nominal  # estimated baseline mean: a little above the known-mean ARL


def test_seasonal_z_compares_a_point_with_the_same_hour_of_week():
    times = pd.date_range("2026-01-05", periods=24 * 7 * 5, freq="h", tz="UTC")
    rng = np.random.default_rng(2)
    base = np.where(times.hour >= 20, 30.0, 10.0)  # nights are always higher: not an anomaly
    x = base + rng.normal(0, 1.0, len(times))
    spike = len(times) - 5
    x[spike] += 8.0  # a day-time value 8 sd above its usual level
    z = detectors.seasonal_z(times, x, np.ones(len(times)), period="hour", weeks=4)
    assert np.isnan(z[: 24 * 7]).all()  # no history for the first week
    assert z[spike] > 5
    others = np.arange(len(times)) >= 24 * 7 * 3
    others[spike] = False
    assert np.nanmax(np.abs(z[others])) < 5  # night/day levels are absorbed by the hour-of-week baseline


def test_hysteresis_enters_after_min_duration_and_exits_below_exit():
    s = np.array([0, 3.5, 3.2, 0.5, 4, 4, 4, 2.5, 1.9, 4, np.nan, 1])
    np.testing.assert_array_equal(
        detectors.hysteresis(s, enter=3.0, exit=2.0, min_duration=1),
        [0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 0],
    )
    np.testing.assert_array_equal(
        detectors.hysteresis(s, enter=3.0, exit=2.0, min_duration=3),
        [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0],
    )
    times = pd.date_range("2026-01-01", periods=len(s), freq="D")
    runs = detectors.episodes(times, detectors.hysteresis(s, 3.0, 2.0))
    assert [(a.day, None if b is None else b.day) for a, b in runs] == [(2, 4), (5, 9), (10, 12)]


def _series(values: np.ndarray, city: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "indicator": "rate",
            "series": f"city={city}",
            "city": city,
            "time": pd.date_range("2026-06-01", periods=len(values), freq="D", tz="UTC"),
            "value": values,
            "noise_sd": 1.0,
            "n": 100,
        }
    )


def test_rule_fires_only_for_the_series_that_moved_and_says_since_when():
    rng = np.random.default_rng(4)
    calm = rng.normal(20, 1, 70)
    moved = rng.normal(20, 1, 70)
    moved[60:] += 3
    series = pd.concat([_series(calm, "a"), _series(moved, "b")], ignore_index=True)
    indicator = Indicator(id="rate", kind="incident_rate", by=["city"])
    rule = Rule(
        id="shift", indicator="rate", detector=Detector(kind="cusum", enter=5, exit=2, baseline_weeks=6)
    )
    signals, firings = evaluate_rule(rule, indicator, series, "BR")
    by_city = {f.labels["city"]: f for f in firings}
    assert not by_city["a"].active and by_city["b"].active
    assert pd.Timestamp("2026-07-31", tz="UTC") <= by_city["b"].since <= pd.Timestamp("2026-08-05", tz="UTC")
    assert by_city["b"].fingerprint != by_city["a"].fingerprint
    assert set(signals["series"]) == {"city=a", "city=b"} and signals["active"].sum() >= 1
    threshold = Rule(
        id="low", indicator="rate", detector=Detector(kind="threshold", direction="down", enter=10, exit=12)
    )
    low = _series(np.r_[np.full(10, 20.0), [9.0, 11.0, 13.0]], "c")
    sig, fired = evaluate_rule(threshold, indicator, low, "BR")
    assert sig["active"].tolist()[-3:] == [True, True, False] and not fired[0].active


def test_detector_config_rejects_exit_above_enter():
    with pytest.raises(ValueError, match="exit"):
        Detector(kind="seasonal_z", enter=2.0, exit=3.0)


def _openings(signal: np.ndarray, enter: float, exit_: float) -> int:
    active = detectors.hysteresis(signal, enter, exit_)
    return int((active[1:] & ~active[:-1]).sum() + active[0])


def test_count_cusum_holds_its_nominal_rate_on_small_overdispersed_counts_where_normal_cusum_does_not():
    """0.5 expected incidents a day, negative-binomial (variance 1.5× Poisson), a 6-week baseline: the
    count CUSUM's calibrated h keeps alarms near 1/arl0; the normal-theory CUSUM alarms far more."""
    rng = np.random.default_rng(7)
    arl0, baseline, days, series = 100, 42, 84, 150
    expected = np.full(days, 0.5)
    count_alarms = normal_alarms = 0
    for i in range(series):
        lam = rng.gamma(0.5 / 0.5, 0.5, days)  # NB with variance 0.5 + 0.5·0.5 = 1.5 × mean
        y = rng.poisson(lam).astype(float)
        s = detectors.count_cusum(y, expected, baseline, shift=0.5, arl0=arl0, min_events=0, seed=i)
        assert np.isnan(s[:baseline]).all() and np.isfinite(s[baseline:]).all()
        count_alarms += _openings(s[baseline:], 1.0, 0.5)
        ratio = y / expected
        z = detectors.cusum(ratio, np.sqrt(expected) / expected, baseline=baseline, k=0.5)
        h = 2.7  # Siegmund ARL0 ≈ 100 for k = 0.5
        assert 80 < detectors.cusum_arl0(0.5, h) < 130
        normal_alarms += _openings(z[baseline:], h, 1.0)
    nominal = series * (days - baseline) / arl0  # 63 alarms expected at the nominal rate
    assert count_alarms <= 1.3 * nominal
    assert normal_alarms > 1.5 * nominal
    assert detectors.nominal_rate("count_cusum", 1.0, arl0=arl0) == pytest.approx(1 / arl0)


def test_count_cusum_detects_a_30_percent_rise_and_reads_the_nowcast_shares():
    rng = np.random.default_rng(3)
    expected = np.full(84, 40.0)
    y = rng.poisson(expected).astype(float)
    y[60:] = rng.poisson(expected[60:] * 1.3)
    s = detectors.count_cusum(y, expected, 42, shift=0.3, arl0=1000, seed=1)
    assert (s[42:60] < 1).all()
    assert 60 <= 42 + int(np.argmax(s[42:] >= 1)) <= 66  # ~1 incident-day of evidence a day at 40/day
    # the last days are compared with what is expected to be *reported* by now: a day 20% reported with
    # 20% of its incidents in is in control, and the same known counts read as complete would alarm
    share = np.r_[np.ones(79), [0.9, 0.8, 0.6, 0.4, 0.2]]
    known = rng.binomial(rng.poisson(expected).astype(np.int64), share).astype(float)
    assert np.nanmax(detectors.count_cusum(known, expected, 42, arl0=1000, reported_share=share, seed=1)) < 1
    down = detectors.count_cusum(known, expected, 42, arl0=1000, direction="down", seed=1)
    assert down[-1] >= 1
    # a baseline with a handful of incidents is not evaluated (no level to compare with)
    sparse = np.r_[np.zeros(40), [1.0, 2.0], np.full(42, 5.0)]
    assert np.isnan(detectors.count_cusum(sparse, np.full(84, 0.1), 42, min_events=10)).all()


def test_count_cusum_rule_needs_a_count_indicator():
    from safetyml.monitoring.config import MonitoringConfig

    with pytest.raises(ValueError, match="count_cusum"):
        MonitoringConfig(
            market="BR",
            indicators=[Indicator(id="tier", kind="top_tier_share")],
            rules=[Rule(id="r", indicator="tier", detector=Detector(kind="count_cusum", enter=1, exit=0.5))],
        )
