"""Temporal dynamics and drift injection: each effect is in the data, sized as declared, and in truth/."""

from __future__ import annotations

import json

import h3
import numpy as np
import pandas as pd
import pytest

from safetyml.simulate import PRESETS, Drift, Dynamics, parse_drifts, simulate_tables
from safetyml.simulate.dynamics import DRIFT, MERCHANT_FRONT, RIDER_SPELL, ZONE_WAVE, episode_rates
from safetyml.tables import load_tables

TZ = {
    "sao_paulo": "America/Sao_Paulo",
    "rio_de_janeiro": "America/Sao_Paulo",
    "belo_horizonte": "America/Sao_Paulo",
    "mexico_city": "America/Mexico_City",
}


@pytest.fixture(scope="module")
def data(small_data_dir):
    tables = load_tables(small_data_dir)
    truth = {
        n: pd.read_parquet(small_data_dir / "truth" / f"{n}.parquet")
        for n in ("trip_probability", "rider_spells", "merchant_fronts", "zone_waves")
    }
    trips = tables.trips.copy()
    tp = truth["trip_probability"]
    trips["incident"] = trips["trip_id"].isin(set(tables.incidents["trip_id"].dropna()))
    trips["episode"] = tp["episode"].to_numpy()
    trips["log_odds"] = tp["log_odds_dynamic"].to_numpy()
    trips["p"] = tp["p_incident"].to_numpy()
    hour = pd.Series(0, index=trips.index)
    for city, tz in TZ.items():
        rows = trips["city"] == city
        hour[rows] = trips.loc[rows, "requested_at"].dt.tz_convert(tz).dt.hour
    trips["night"] = hour.isin([22, 23, 0, 1, 2, 3])
    return tables, truth, trips


def _in_episode(trips: pd.DataFrame, episodes: pd.DataFrame, key: str) -> pd.Series:
    """Kind of the truth episode each trip falls in (by entity and time), '' if none."""
    j = trips[[key, "requested_at"]].merge(episodes[[key, "kind", "start", "end"]], on=key, how="left")
    inside = (j["requested_at"] >= j["start"]) & (j["requested_at"] < j["end"])
    return pd.Series(np.where(inside, j["kind"], ""), index=trips.index)


def test_truth_episode_flags_match_the_truth_tables(data):
    _, truth, trips = data
    spell = _in_episode(trips, truth["rider_spells"], "rider_id")
    front = _in_episode(trips, truth["merchant_fronts"], "merchant_id")
    assert ((spell != "") == ((trips["episode"] & RIDER_SPELL) > 0)).all()
    assert ((front != "") == ((trips["episode"] & MERCHANT_FRONT) > 0)).all()
    waves = truth["zone_waves"]
    cells = {}
    for row in waves.itertuples():
        cells.setdefault(row.h3, []).append((row.start, row.end))
    wave = np.zeros(len(trips), dtype=bool)
    for i, (lat, lng, dlat, dlng, t) in enumerate(
        trips[["pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng", "requested_at"]].itertuples(
            index=False
        )
    ):
        zs = [h3.latlng_to_cell(lat, lng, 8)] + ([h3.latlng_to_cell(dlat, dlng, 8)] if dlat == dlat else [])
        wave[i] = any(s <= t < e for z in zs for s, e in cells.get(z, ()))
    flagged = (trips["episode"] & ZONE_WAVE) > 0
    # a missing drop-off hides its zone from the check above: it may only under-count
    assert (wave <= flagged).all() and flagged.sum() - wave.sum() <= 0.03 * flagged.sum() + 2
    assert set(waves["ring"]) == {0, 1} and (waves.groupby("wave_id")["ring"].min() == 0).all()
    assert (trips["episode"] & DRIFT).sum() == 0  # no drift by default
    assert set(truth["rider_spells"]["kind"]) == {"takeover", "shared"}
    assert set(truth["merchant_fronts"]["kind"]) <= {"robbery_front", "fraud_front"}


def test_episode_trips_get_the_declared_log_odds(data):
    _, truth, trips = data
    spell = _in_episode(trips, truth["rider_spells"], "rider_id")
    params = {e.name: e for e in PRESETS["small"].dynamics.spells}
    only_spell = trips["episode"] == RIDER_SPELL
    sd = PRESETS["small"].dynamics.daily_sd
    for kind, ep in params.items():
        lo = trips.loc[only_spell & (spell == kind), "log_odds"]
        # the rider's daily variation rides on top (mean -sd^2/2, sd 0.3 over a few rider-days)
        assert abs(lo.mean() - (np.log(ep.odds) - sd**2 / 2)) < 0.15, (kind, lo.mean())


def test_spells_raise_incidents_and_move_order_values_hours_and_velocity(data):
    _, truth, trips = data
    spell = _in_episode(trips, truth["rider_spells"], "rider_id")
    rest = trips[trips["episode"] == 0]
    take = trips[spell == "takeover"]
    assert len(take) > 150
    assert take["incident"].mean() > 2.5 * rest["incident"].mean()
    ratio = take["order_value"].median() / rest["order_value"].median()
    declared = truth["rider_spells"].query("kind == 'takeover'")["value_multiplier"].iloc[0]
    assert abs(np.log(ratio / declared)) < 0.3, (ratio, declared)
    assert take["night"].mean() > rest["night"].mean() + 0.25  # half moved to 22-04
    # riders have regular merchants; a taken-over account goes to merchants new to it
    first = ~trips.duplicated(["rider_id", "merchant_id"])
    assert first[take.index].mean() > first[rest.index].mean() + 0.1
    assert first[rest.index].mean() < 0.6
    # velocity: a spell rider's trips per day against the same rider's own rate outside the spell
    spells = truth["rider_spells"]
    for kind in ("takeover", "shared"):
        s = spells[spells["kind"] == kind].set_index("rider_id")
        mine = trips[trips["rider_id"].isin(s.index)]
        inside = (spell[mine.index] == kind).groupby(mine["rider_id"]).sum()
        total = mine.groupby("rider_id").size()
        first = mine.groupby("rider_id")["requested_at"].min()
        days_in = (s["end"] - s["start"]).dt.days.reindex(total.index)
        span = ((trips["requested_at"].max() - first).dt.days + 1).reindex(total.index)
        rate_out = (total - inside) / (span - days_in).clip(lower=1)
        observed = inside.sum() / (rate_out * days_in).sum()
        declared = s["velocity_multiplier"].iloc[0]
        assert abs(observed / declared - 1) < 0.3, (kind, observed, declared)


def test_fronts_raise_incidents_and_change_their_own_orders(data):
    _, truth, trips = data
    front = _in_episode(trips, truth["merchant_fronts"], "merchant_id")
    rest = trips[trips["episode"] == 0]
    inside = trips[front != ""]
    assert len(inside) > 200
    assert inside["incident"].mean() > 2 * rest["incident"].mean()
    for kind, declared in (("fraud_front", 2.5), ("robbery_front", 1.0)):
        mine = trips["merchant_id"].isin(truth["merchant_fronts"].query("kind == @kind")["merchant_id"])
        during, before = trips[mine & (front == kind)], trips[mine & (front == "")]
        if len(during) < 50:
            continue
        ratio = during["order_value"].median() / before["order_value"].median()
        assert abs(np.log(ratio / declared)) < 0.3, (kind, ratio)
        if kind == "robbery_front":
            assert (during["payment_method"] == "cash").mean() > (
                before["payment_method"] == "cash"
            ).mean() + 0.2


def test_waves_and_daily_rider_risk_are_sized_as_declared(data):
    _, _, trips = data
    dyn = PRESETS["small"].dynamics
    rest = trips[trips["episode"] == 0]
    wave = trips[trips["episode"] == ZONE_WAVE]
    assert len(wave) > 100 and wave["incident"].mean() > 1.5 * rest["incident"].mean()
    assert wave["log_odds"].mean() > np.log(dyn.waves.ring_odds) - 0.1
    # outside every episode the dynamic log-odds is the rider's day: constant within a rider-day
    day = rest["requested_at"].dt.floor("D")
    per_day = rest.groupby(["rider_id", day])["log_odds"]
    assert (per_day.nunique() <= 2).mean() > 0.95  # local days straddle UTC days
    values = per_day.first()
    assert abs(values.std() - dyn.daily_sd) < 0.04
    # centred at -sd^2/2 over all rider-days; days with trips lean riskier (busier, see below)
    assert -(dyn.daily_sd**2) / 2 < values.mean() < 0.05
    s = values.reset_index()
    s["next"] = s.groupby("rider_id")["log_odds"].shift(-1)
    gap = s.groupby("rider_id")["requested_at"].shift(-1) - s["requested_at"]
    consecutive = s[gap == pd.Timedelta(days=1)]
    corr = np.corrcoef(consecutive["log_odds"], consecutive["next"])[0, 1]
    assert abs(corr - dyn.daily_phi) < 0.15, corr
    # riskier days are busier days (x e^(v x log-odds) trips): the trip-weighted mean log-odds is the
    # declared one, not the plain N(-sd^2/2, sd) mean (-0.045) it would be without that velocity
    x = np.linspace(-6, 6, 4001) * dyn.daily_sd - dyn.daily_sd**2 / 2
    w = np.exp(-0.5 * ((x + dyn.daily_sd**2 / 2) / dyn.daily_sd) ** 2)
    w *= 1 + np.where(x > 0, np.expm1(dyn.daily_velocity * x), 0)
    expected = (x * w).sum() / w.sum()
    assert abs(rest["log_odds"].mean() - expected) < 0.025, (rest["log_odds"].mean(), expected)
    assert expected > -(dyn.daily_sd**2) / 2 + 0.03


def test_oracle_is_calibrated_inside_the_episodes(data):
    tables, truth, trips = data
    rates = episode_rates(trips, tables.incidents, truth["trip_probability"])
    assert rates.loc[rates["trips"] == "all trips", "n"].item() == len(trips)
    for mask in (trips["episode"] > 0, trips["episode"] == 0):
        p = trips.loc[mask, "p"]
        se = np.sqrt((p * (1 - p)).sum())
        assert abs(trips.loc[mask, "incident"].sum() - p.sum()) < 4 * se, (mask.sum(), p.sum())


@pytest.fixture(scope="module")
def drift_pair():
    """Same seed with and without drift: same trips; the drift only scales probabilities and values."""
    day = 45
    date = (PRESETS["small"].start + pd.Timedelta(days=day)).date()
    drifts = [
        f"city_incident_rate:sao_paulo:+30%:{day}",
        f"feature_shift:order_value:mexico_city:+20%:{date}",
    ]
    return day, simulate_tables("small", seed=5), simulate_tables("small", seed=5, drift=drifts)


def test_drift_raises_the_city_rate_by_the_declared_factor(drift_pair):
    day, (base, base_truth), (drifted, truth) = drift_pair
    trips = base["trips"]
    assert trips["trip_id"].equals(drifted["trips"]["trip_id"])
    local_day = np.empty(len(trips), dtype=np.int64)
    for city, tz in TZ.items():
        rows = (trips["city"] == city).to_numpy()
        local = trips.loc[rows, "requested_at"].dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()
        local_day[rows] = (local - PRESETS["small"].start.tz_localize(None).normalize()).dt.days
    after = ((trips["city"] == "sao_paulo") & (local_day >= day)).to_numpy()
    p0 = base_truth["trip_probability"]["p_incident"].to_numpy()
    p1 = truth["trip_probability"]["p_incident"].to_numpy()
    np.testing.assert_allclose(p1[after], np.minimum(1.3 * p0[after], 1.0))
    np.testing.assert_allclose(p1[~after], p0[~after])
    assert ((truth["trip_probability"]["episode"].to_numpy() & DRIFT) > 0)[after].all()

    def hits(tables):
        return trips["trip_id"].isin(set(tables["incidents"]["trip_id"].dropna())).to_numpy()

    n0, n1 = hits(base)[after].sum(), hits(drifted)[after].sum()
    # the same uniforms draw both labels, so the extra incidents are ~Poisson(0.3 x n0)
    assert abs(n1 / n0 - 1.3) < 4 * np.sqrt(0.3 * n0) / n0, (n0, n1)
    assert hits(drifted)[~after].sum() == hits(base)[~after].sum()
    record = truth["drift"]["drifts"]
    assert [d["kind"] for d in record] == ["city_incident_rate", "feature_shift"]
    assert record[0]["factor"] == pytest.approx(1.3) and record[0]["day"] == day
    assert record[0]["start_utc"]["sao_paulo"].startswith(
        str((PRESETS["small"].start + pd.Timedelta(days=day)).date())
    )
    json.dumps(truth["drift"])


def test_drift_shifts_the_feature_distribution(drift_pair):
    day, (base, _), (drifted, _) = drift_pair
    trips = base["trips"]
    local = trips["requested_at"].dt.tz_convert("America/Mexico_City").dt.tz_localize(None).dt.normalize()
    day_no = (local - PRESETS["small"].start.tz_localize(None).normalize()).dt.days
    city = trips["city"] == "mexico_city"
    ratio = drifted["trips"]["order_value"] / trips["order_value"]
    assert np.allclose(ratio[city & (day_no >= day)], 1.2, atol=0.01 / trips["order_value"].min() + 1e-9)
    assert (ratio[~(city & (day_no >= day))] == 1).all()


def test_dynamics_off_gives_a_stationary_platform():
    tiny = PRESETS["small"].__class__("tiny", trips=8_000, days=40, riders=200, merchants=100, block_days=20)
    tables, truth = simulate_tables(tiny, seed=1, dynamics=Dynamics.off())
    assert (truth["trip_probability"]["log_odds_dynamic"] == 0).all()
    assert (truth["trip_probability"]["episode"] == 0).all()
    assert len(truth["rider_spells"]) == len(truth["merchant_fronts"]) == len(truth["zone_waves"]) == 0
    _, on = simulate_tables(tiny, seed=1)
    assert len(on["rider_spells"]) > 0 and (on["trip_probability"]["episode"] > 0).any()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("city_incident_rate:lima:+30%:3", "unknown city 'lima'"),
        ("city_incident_rate:sao_paulo:30:3", "factor '30' is not like"),
        ("city_incident_rate:sao_paulo:+30%:2030-01-01", "outside the simulated"),
        ("feature_shift:hour:all:+30%:3", "feature must be one of"),
        ("rate:sao_paulo", "expected city_incident_rate"),
    ],
)
def test_bad_drift_specs_are_refused_with_the_part_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_drifts(PRESETS["small"], [text])


def test_drift_specs_parse_dates_day_numbers_and_factors():
    start = PRESETS["small"].start
    got = parse_drifts(
        PRESETS["small"],
        [
            "city_incident_rate:all:-20%:10",
            f"feature_shift:distance_km:rio_de_janeiro:x1.5:{(start + pd.Timedelta(days=3)).date()}",
        ],
    )
    assert got == (
        Drift("city_incident_rate", "all", 0.8, 10),
        Drift("feature_shift", "rio_de_janeiro", 1.5, 3, "distance_km"),
    )
