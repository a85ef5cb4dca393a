"""Nowcast: the truncated delay estimator and the corrected counts on a synthetic delay distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.monitoring.nowcast import (
    DAY_NS,
    HOUR_NS,
    NowcastError,
    aggregate,
    fit_delays,
    nowcast_cells,
    truncated_delay_cdf,
)

AS_OF = pd.Timestamp("2026-06-01", tz="UTC")


def _world(seed: int, days: int = 60, trips_per_day: int = 400, rate: float = 0.05, median_days: float = 2.0):
    """Trips uniform in time, incidents on a share of them, lognormal delays (all, even after as_of)."""
    rng = np.random.default_rng(seed)
    start = AS_OF - pd.Timedelta(days=days)
    n = days * trips_per_day
    t = start.value + np.sort(rng.uniform(0, days * DAY_NS, n)).astype(np.int64)
    trips = pd.DataFrame({"requested_at": pd.to_datetime(t, utc=True), "city": "sao_paulo"})
    hit = rng.random(n) < rate
    occurred = t[hit] + rng.uniform(0, 3_600e9, hit.sum()).astype(np.int64)
    delay = (rng.lognormal(np.log(median_days), 1.0, hit.sum()) * DAY_NS).astype(np.int64)
    incidents = pd.DataFrame(
        {
            "occurred_at": pd.to_datetime(occurred, utc=True),
            "reported_at": pd.to_datetime(occurred + delay, utc=True),
            "type": rng.choice(["accident", "theft"], hit.sum()),
            "severity": 1,
            "city": "sao_paulo",
        }
    )
    return trips, incidents


def test_truncated_estimator_recovers_the_delay_cdf_where_the_naive_one_is_biased():
    rng = np.random.default_rng(0)
    n = 100_000
    occurred = rng.uniform(0, 30, n) * DAY_NS
    delay = rng.exponential(3.0, n) * DAY_NS
    seen = occurred + delay <= 30 * DAY_NS
    cdf = truncated_delay_cdf(delay[seen], (30 * DAY_NS - occurred)[seen], 6 * HOUR_NS, 4 * 60)
    for d in (1, 3, 7):
        truth = 1 - np.exp(-d / 3.0)
        naive = (delay[seen] <= d * DAY_NS).mean()
        conditional = truth / (1 - np.exp(-60 / 3.0))  # the estimate is conditional on delay < 60 d
        assert cdf[d * 4 - 1] == pytest.approx(conditional, abs=0.01)
        assert naive - truth > 0.02  # ignoring truncation overstates early reporting


def test_nowcast_corrects_recent_days_and_its_intervals_cover_the_eventual_counts():
    covered, total, ratios = 0, 0, []
    for seed in range(6):
        trips, incidents = _world(seed)
        model = fit_delays(
            incidents, pd.Series("BR", index=incidents.index), AS_OF, lookback_days=60, min_incidents=50
        )
        cells = nowcast_cells(trips, incidents, AS_OF, model, days=14)
        daily = aggregate(cells, ["day", "city"], level=0.9)
        eventual = incidents.assign(day=incidents["occurred_at"].dt.floor("D")).groupby("day").size()
        daily["eventual"] = daily["day"].map(eventual).fillna(0).to_numpy()
        recent = daily[daily["reported_share"] < 0.95]
        covered += int(
            ((recent["eventual"] >= recent["lower"]) & (recent["eventual"] <= recent["upper"])).sum()
        )
        total += len(recent)
        ratios.append(recent["corrected"].sum() / recent["eventual"].sum())
        last = daily.iloc[-1]
        assert last["known"] < 0.5 * last["eventual"] and last["reported_share"] < 0.5
    assert total >= 30
    assert 0.8 <= covered / total <= 0.99  # nominal 0.9
    assert 0.9 <= np.mean(ratios) <= 1.1  # known counts alone would be far below 1
    # pooled and per-type strata were fitted; a delay quantile is about the synthetic median of 2 days
    assert {"*|*", "accident|*", "theft|BR"} <= set(model.cdf)
    assert 1.5 <= model.quantile("*|*", 0.5) <= 2.5


def test_fit_delays_names_what_is_missing():
    trips, incidents = _world(1)
    with pytest.raises(NowcastError, match="no column 'type'"):
        fit_delays(incidents.drop(columns="type"), pd.Series("BR", index=incidents.index), AS_OF)
    with pytest.raises(NowcastError, match="at least 10"):
        fit_delays(incidents.iloc[:3], pd.Series("BR", index=incidents.index[:3]), AS_OF)


def test_trip_shares_and_corrected_counts_for_counts_over_scored_trips():
    """The zone map's correction: shares fall for recent trips; known / weighted share, NB interval."""
    from safetyml.monitoring.nowcast import corrected_counts, trip_reported_share

    trips, incidents = _world(2)
    recent = trips["requested_at"].iloc[[-1, -500, -5000, -15000]]
    share = trip_reported_share(recent, incidents, AS_OF, trips)
    assert share[0] < 0.05 and np.all(np.diff(share) > 0) and share[-1] > 0.9
    corrected, lo, hi = corrected_counts(
        np.array([10, 0, 5]), np.array([20.0, 4.0, 5.0]), np.array([10.0, 2.0, 5.0])
    )
    np.testing.assert_allclose(corrected, [20.0, 0.0, 5.0])  # half reported → twice the known count
    assert lo[0] >= 10 and hi[0] > 20 and hi[1] > 0 and lo[2] == hi[2] == 5  # fully reported: no interval
