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
