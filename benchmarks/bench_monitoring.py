"""Monitoring benchmark: prints every figure of issue 15's bars.

    .venv/bin/python benchmarks/bench_monitoring.py            # all parts (~15 min on 2 busy cores)
    .venv/bin/python benchmarks/bench_monitoring.py --part speed --part nowcast

Parts:
- ``speed``: stability (PSI/CSI + p-values + BH) of 10M scored rows × 60 features, 16 slices.
- ``stability``: false alarms of the stability flag under no drift, for slices of 100 to 1M rows —
  reference (100k rows) and slice drawn afresh each repetition from the medium simulation's trip frame
  (so both come from one distribution) — and detection of the simulator's ``feature_shift`` drift.
- ``kpi``: false alarms of the incident-rate rules (monitoring/default.yaml) on no-drift simulations,
  evaluated day after day as a cron would (nowcast-corrected series), on slices thinned to 1%, 10%
  and 100% of the trips; and detection power and delay of ``city_incident_rate:CITY:+30%:DAY``.
- ``nowcast``: coverage of the eventual incident counts by the nowcast's 90% intervals.
- ``performance``: CBPE-estimated ROC AUC at as_of vs the realised AUC once every label is in.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from safetyml.monitoring import detectors
from safetyml.monitoring.config import load_configs
from safetyml.monitoring.indicators import MarketInputs, build_series
from safetyml.monitoring.nowcast import aggregate, fit_delays, incident_cities, nowcast_cells
from safetyml.monitoring.rules import evaluate_rule
from safetyml.monitoring.stability import build_profile, stability_table

REPO = Path(__file__).resolve().parents[1]
PRESET_START = pd.Timestamp("2026-06-03", tz="UTC")  # medium: 120 days ending 2026-10-01
END = pd.Timestamp("2026-10-01", tz="UTC")
DRIFT_DAY = 100  # drift from the 101st day (2026-09-11), leaving a clean 12-week history before it


def load_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def header(title: str) -> None:
    print(f"\n=== {title} ===  [{load_load()}]", flush=True)


# ---------------------------------------------------------------------------------------------- data


def simulate(folder: Path, seed: int, drift: tuple[str, ...] = (), dynamics: bool = True) -> Path:
    """A medium simulation in ``folder`` (reused when already there)."""
    from safetyml.simulate import simulate as run
    from safetyml.simulate.presets import Dynamics

    if not (folder / "trips.parquet").exists():
        run(
            folder,
            "medium",
            seed=seed,
            progress=False,
            drift=drift,
            dynamics=None if dynamics else Dynamics.off(),
        )
    return folder


def read(folder: Path) -> dict[str, pd.DataFrame]:
    """Trips and incidents (with each incident's city and market), straight from Parquet, and ``scored``.

    ``scored`` stands in for a calibrated champion trained before any drift: the simulator's oracle
    probability with an injected drift's factor divided back out (a model cannot know about the drift).
    """
    import json

    from safetyml.scoring.policies import market_of_city
    from safetyml.simulate.dynamics import DRIFT

    t = {n: pd.read_parquet(folder / f"{n}.parquet") for n in ("trips", "incidents", "riders", "merchants")}
    inc = t["incidents"]
    inc["city"] = incident_cities(inc, t["trips"], t["riders"], t["merchants"]).to_numpy()
    inc["market"] = [market_of_city(c) or "default" for c in inc["city"]]
    truth = pd.read_parquet(
        folder / "truth" / "trip_probability.parquet", columns=["trip_id", "p_incident", "episode"]
    )
    p = truth["p_incident"].to_numpy()
    drift_file = folder / "truth" / "drift.json"
    drifts = json.loads(drift_file.read_text()) if drift_file.exists() else {"drifts": []}
    rate_factor = next((d["factor"] for d in drifts["drifts"] if d["kind"] == "city_incident_rate"), 1.0)
    drifted = (truth["episode"].to_numpy().astype(np.int64) & DRIFT) > 0
    p = np.where(drifted, p / rate_factor, p)
    scored = t["trips"][["trip_id", "requested_at", "city"]].merge(
        pd.DataFrame({"trip_id": truth["trip_id"], "probability": p}), on="trip_id"
    )
    t["scored"] = scored.rename(columns={"requested_at": "as_of"})
    return t


def thin(tables: dict[str, pd.DataFrame], share: float, seed: int) -> dict[str, pd.DataFrame]:
    """Keep a random ``share`` of trips and the incidents linked to them (smaller slices)."""
    if share >= 1:
        return tables
    rng = np.random.default_rng(seed)
    trips = tables["trips"][rng.random(len(tables["trips"])) < share]
    kept = set(trips["trip_id"])
    inc = tables["incidents"]
    inc = inc[inc["trip_id"].isin(kept)]
    scored = tables["scored"][tables["scored"]["trip_id"].isin(kept)]
    return {**tables, "trips": trips, "incidents": inc, "scored": scored}


# ---------------------------------------------------------------------------------------------- speed


def part_speed(rows: int = 10_000_000, features: int = 60) -> None:
    header(f"speed: stability over {rows:,} rows × {features} features")
    rng = np.random.default_rng(0)
    cols = {}
    for j in range(features):
        kind = j % 4
        if kind == 0:
            cols[f"f{j}"] = rng.standard_normal(rows, dtype=np.float32)
        elif kind == 1:
            cols[f"f{j}"] = rng.exponential(size=rows).astype(np.float32)
        elif kind == 2:
            x = rng.poisson(2.0, rows).astype(np.float32)
            x[rng.random(rows) < 0.05] = np.nan
            cols[f"f{j}"] = x
        else:
            cols[f"f{j}"] = pd.Categorical.from_codes(rng.integers(0, 6, rows), list("abcdef"))
    frame = pd.DataFrame(cols)
    frame["period"] = np.repeat(np.arange(4), rows // 4 + 1)[:rows]
    frame["city"] = pd.Categorical.from_codes(rng.integers(0, 4, rows), ["sp", "rj", "bh", "mx"])
    score = rng.beta(1, 50, rows)
    names = [f"f{j}" for j in range(features)]
    ref = frame.iloc[:1_000_000]
    started = time.perf_counter()
    profile = build_profile(ref, names, score=score[:1_000_000], bins=10)
    built = time.perf_counter() - started
    times = []
    for _ in range(3):
        started = time.perf_counter()
        table = stability_table(frame, profile, ["period", "city"], score=score)
        times.append(time.perf_counter() - started)
    print(f"reference profile of 1M rows × {features + 1} columns: {built:.1f} s (once per model)")
    print(
        f"stability_table: {rows:,} rows × {features} features + score, 16 slices, {len(table):,} PSI tests: "
        f"median {statistics.median(times):.1f} s over 3 runs ({', '.join(f'{t:.1f}' for t in times)}) "
        f"— bar ≤ 60 s: {'PASS' if statistics.median(times) <= 60 else 'FAIL'}"
    )


# ---------------------------------------------------------------------------------------------- stability


def _frame_features(frame: pd.DataFrame) -> list[str]:
    skip = {"trip_id", "rider_id", "merchant_id", "city", "pickup_h3", "dropoff_h3", "as_of", "label"}
    return [c for c in frame.columns if c not in skip]


def part_stability(frame_path: Path, reps: dict[int, int] | None = None) -> None:
    header("stability: false alarms under no drift (reference and slice from one distribution)")
    frame = pd.read_parquet(frame_path)
    feats = _frame_features(frame)
    cfg = load_configs(REPO / "monitoring")["default"].stability
    reps = reps or {100: 200, 1_000: 200, 10_000: 100, 100_000: 40, 1_000_000: 10}
    rng = np.random.default_rng(1)
    feats = sorted(rng.choice(feats, size=min(40, len(feats)), replace=False).tolist())
    frame = frame[feats]  # sampling rows of only these columns is what costs
    m = 100_000
    print(f"{len(feats)} features (seeded pick) of the medium incident_risk frame ({len(frame):,} trips);")
    print(
        f"reference {m:,} rows; flag = BH q < {cfg.fdr} across the slice's features and PSI ≥ {cfg.min_psi};"
    )
    print(f"nominal rate of flagged slices ≤ {cfg.fdr} (BH controls the family-wise rate under no drift)")
    for n, r in reps.items():
        slice_alarms, test_alarms, raw05, tests, psi_band = 0, 0, 0, 0, 0
        for _ in range(r):
            ref = frame.iloc[rng.integers(0, len(frame), m)]
            cur = frame.iloc[rng.integers(0, len(frame), n)]
            profile = build_profile(ref, feats, bins=cfg.bins)
            table = stability_table(cur, profile, [], fdr=cfg.fdr, min_psi=cfg.min_psi, min_rows=cfg.min_rows)
            slice_alarms += bool(table["drifted"].any())
            test_alarms += int(table["drifted"].sum())
            raw05 += int((table["p_value"] < 0.05).sum())
            psi_band += int((table["psi"] >= 0.1).sum())
            tests += len(table)
        print(
            f"  slice {n:>9,} rows: slices flagged {slice_alarms / r:.4f} (nominal ≤ {cfg.fdr}, {r} draws); "
            f"features flagged {test_alarms / tests:.5f}; raw p < 0.05: {raw05 / tests:.3f} "
            f"(calibration, ~0.05); PSI ≥ 0.1 alone: {psi_band / tests:.3f}"
        )
    header("stability: detection of feature_shift:order_value:sao_paulo:+X% (daily slices per city)")
    for factor in ("+10%", "+20%"):
        folder = simulate(
            Path(tempfile.gettempdir()) / f"bench_mon_fs{factor[1:-1]}",
            7,
            (f"feature_shift:order_value:sao_paulo:{factor}:{DRIFT_DAY}",),
        )
        trips = pd.read_parquet(folder / "trips.parquet")
        day0 = PRESET_START + pd.Timedelta(days=DRIFT_DAY)
        ref = trips[(trips["requested_at"] >= day0 - pd.Timedelta(days=28)) & (trips["requested_at"] < day0)]
        cols = ["order_value", "distance_km", "payment_method"]
        profile = build_profile(ref, cols, bins=cfg.bins)
        cur = trips[
            (trips["requested_at"] >= day0 - pd.Timedelta(days=7))
            & (trips["requested_at"] < day0 + pd.Timedelta(days=7))
        ]
        cur = cur.assign(day=cur["requested_at"].dt.floor("D"))
        table = stability_table(
            cur, profile, ["day", "city"], fdr=cfg.fdr, min_psi=cfg.min_psi, min_rows=cfg.min_rows
        )
        sp = table[(table["city"] == "sao_paulo") & (table["feature"] == "order_value")]
        after = sp[sp["day"] >= day0]
        before_any = table[(table["day"] < day0) & table["drifted"]]
        others = table[(table["day"] >= day0) & (table["city"] != "sao_paulo") & table["drifted"]]
        first = after.loc[after["drifted"], "day"].min()
        delay = (first - day0).days if pd.notna(first) else None
        flagged = int(after["drifted"].sum())
        print(
            f"  order_value {factor} in sao_paulo from {day0:%Y-%m-%d}: flagged {flagged}/{len(after)} days "
            f"after (first: day {delay}; median PSI {after['psi'].median():.3f}); false flags: "
            f"{len(before_any)} (day, city, feature) before, {len(others)} in other cities after"
        )


# ---------------------------------------------------------------------------------------------- KPI rules


def incident_rules() -> tuple[list, dict]:
    cfg = load_configs(REPO / "monitoring")["default"]
    indicators = {i.id: i for i in cfg.indicators if i.kind in ("incident_rate", "incident_ratio")}
    rules = [r for r in cfg.rules if r.indicator in indicators]
    return rules, indicators


def rolling_states(
    tables: dict[str, pd.DataFrame], as_ofs: list[pd.Timestamp], history_days: int = 84
) -> pd.DataFrame:
    """Active flag of every (rule, series) at each daily evaluation, as `monitor run` computes it."""
    rules, indicators = incident_rules()
    trips, inc = tables["trips"], tables["incidents"]
    out = []
    for as_of in as_ofs:
        delays = fit_delays(inc, inc["market"], as_of, 120, 60.0, 1.0, 150)
        scored = tables["scored"]
        scored = scored[
            (scored["as_of"] < as_of) & (scored["as_of"] >= as_of - pd.Timedelta(days=history_days))
        ]
        inputs = MarketInputs(
            "all", as_of, trips, inc, delays=delays, scored=scored, history_days=history_days
        )
        for spec in indicators.values():
            series = build_series(spec, inputs)
            for rule in (r for r in rules if r.indicator == spec.id):
                _, firings = evaluate_rule(rule, spec, series, "all")
                out += [
                    (as_of, rule.id, f.fingerprint, dict(f.labels).get("city"), f.active) for f in firings
                ]
    return pd.DataFrame(out, columns=["as_of", "rule", "series", "city", "active"])


def openings(states: pd.DataFrame) -> pd.DataFrame:
    """Per rule: series-days evaluated and alert openings (off at the previous evaluation, on now)."""
    states = states.sort_values(["rule", "series", "as_of"])
    prev = states.groupby(["rule", "series"])["active"].shift(1, fill_value=False)
    states = states.assign(opened=states["active"] & ~prev)
    return states.groupby("rule").agg(series_days=("active", "size"), opened=("opened", "sum")).reset_index()


def nominal(rule) -> float:
    d = rule.detector
    return detectors.nominal_rate(d.kind, d.enter, d.min_duration, d.k, d.direction, d.arl0)


def _verdict(alarms: int, series_days: int, rate: float) -> str:
    """The observed alarm rate against the nominal one: exact Poisson tail P(X ≥ alarms)."""
    from scipy import stats

    if alarms == 0:
        return "≤ nominal"
    p = float(stats.poisson.sf(alarms - 1, rate * series_days))
    if alarms / series_days <= rate:
        return "≤ nominal"
    return f"{'consistent with' if p >= 0.05 else 'ABOVE'} nominal (P(≥{alarms} | nominal) = {p:.2f})"


def kpi_false_alarms(seeds: tuple[int, ...], days: int) -> None:
    header("KPI rules: false alarms on no-drift simulations (daily cron evaluation, nowcast-corrected)")
    rules, _ = incident_rules()
    as_ofs = [END - pd.Timedelta(days=days - 1 - i) for i in range(days)]
    plan = [(False, share, seeds) for share in (0.01, 0.1, 1.0)] + [(True, 1.0, seeds[:1])]
    for dynamics, share, run_seeds in plan:
        counts = []
        started = time.perf_counter()
        for seed in run_seeds:
            folder = simulate(
                Path(tempfile.gettempdir()) / f"bench_mon_null{seed}_{int(dynamics)}", seed, dynamics=dynamics
            )
            counts.append(openings(rolling_states(thin(read(folder), share, seed), as_ofs)))
        total = pd.concat(counts).groupby("rule").sum()
        per_day = int(1_000_000 / 120 * share / 4)
        label = "with dynamics (waves, spells: real changes)" if dynamics else "stationary (--no-dynamics)"
        print(
            f"  {label}, trips thinned to {share:.0%} (~{per_day:,} trips per city-day, ~{per_day * 84:,} "
            f"per series history), {len(run_seeds)} seed(s) × {days} days "
            f"[{time.perf_counter() - started:.0f} s]:"
        )
        for rule in rules:
            alarms, n = int(total.loc[rule.id, "opened"]), int(total.loc[rule.id, "series_days"])
            print(
                f"    {rule.id:<27} {alarms:>2} alarms / {n:>5} series-days = {alarms / n:.4f} "
                f"(nominal {nominal(rule):.1e}): {_verdict(alarms, n, nominal(rule))}"
            )


def kpi_detection(seeds: tuple[int, ...]) -> None:
    header(
        "KPI rules: detection of city_incident_rate:CITY:+30%:DAY (days from the drift to the first alert)"
    )
    day0 = PRESET_START + pd.Timedelta(days=DRIFT_DAY)
    as_ofs = [day0 + pd.Timedelta(days=k) for k in range(0, 15)]
    watched = ["incident_rate_shift", "incident_rate_spike"]
    delays = []
    runs = [(seeds[0], c) for c in ("sao_paulo", "mexico_city", "rio_de_janeiro", "belo_horizonte")]
    for seed, city in runs + [(seed, "sao_paulo") for seed in seeds[1:]]:
        drift = f"city_incident_rate:{city}:+30%:{DRIFT_DAY}"
        folder = simulate(Path(tempfile.gettempdir()) / f"bench_mon_d{seed}_{city}", seed, (drift,))
        states = rolling_states(read(folder), as_ofs)
        mine = states[(states["city"] == city) & states["rule"].isin(watched)]
        before = bool(mine.loc[mine["as_of"] == day0, "active"].any())
        first = mine.loc[mine["active"] & (mine["as_of"] > day0), "as_of"].min()
        delay = (first - day0).days if pd.notna(first) else None
        others = states[(states["city"] != city) & states["active"] & states["rule"].isin(watched)]
        delays.append((city, delay))
        print(
            f"  seed {seed} {city:<15} +30% from {day0:%Y-%m-%d}: first alert after "
            f"{'not within 14' if delay is None else delay} day(s)"
            f"{' (already active before!)' if before else ''}; "
            f"alerts in the other cities: {others['city'].nunique()}"
        )
    within = [d is not None and d <= 7 for _, d in delays]
    found = [d for _, d in delays if d is not None]
    sao_paulo = all(d is not None and d <= 7 for c, d in delays if c == "sao_paulo")
    print(
        f"  detected within 7 days: {sum(within)}/{len(within)}; median delay "
        f"{statistics.median(found) if found else 'n/a'} days; São Paulo within 7 days: {sao_paulo}"
    )


def kpi_power(seed: int = 7, runs: int = 200) -> None:
    """Power and delay of ``incident_rate_shift`` per city size, and the best any test could do.

    Synthetic daily counts shaped like the medium simulation (each city's expected incidents per day and
    the nowcast's reported shares of the last 8 days, read from simulation ``seed`` at END), +30% from a
    day on, evaluated day after day with the rule's detector as ``monitor run`` would. The oracle is an
    exact one-sided Poisson test that knows the change day and the in-control mean, applied once at day 7
    to the incidents reported by then (all that any detector can have seen by day 7), at α = 7/ARL0: a
    detector with at most 1/ARL0 false alarms a day alarms in a 7-day window with probability ≤ 7/ARL0,
    so by Neyman-Pearson no detector at that rate is flagged within 7 days more often than this test.
    """
    from scipy import stats

    rules, indicators = incident_rules()
    rule = next(r for r in rules if r.id == "incident_rate_shift")
    d = rule.detector
    header(
        f"KPI rules: power and delay of {rule.id} (count_cusum, shift {d.shift:+.0%}, ARL0 {d.arl0:.0f}) "
        "per city size, synthetic counts"
    )
    t = read(simulate(Path(tempfile.gettempdir()) / f"bench_mon_null{seed}_1", seed))
    inc = t["incidents"]
    delays_model = fit_delays(inc, inc["market"], END, 120, 60.0, 1.0, 150)
    scored = t["scored"][t["scored"]["as_of"] >= END - pd.Timedelta(days=84)]
    inputs = MarketInputs("all", END, t["trips"], inc, delays=delays_model, scored=scored, history_days=84)
    series = build_series(indicators[rule.indicator], inputs)
    hist, base, alpha = 84, d.baseline_weeks * 7, 1.0 / d.arl0
    for city, g in series.groupby("city"):
        g = g.sort_values("time")
        rate = float(g["expected"].iloc[:-8].mean())
        shares = g["reported_share"].to_numpy()[-8:]
        rng = np.random.default_rng(0)
        found = []
        for r in range(runs):
            y = rng.poisson(rate * np.r_[np.ones(hist), np.full(14, 1 + d.shift)]).astype(float)
            first = None
            for k in range(1, 15):  # as_of = drift day + k: the window's last k days are drifted
                share = np.r_[np.ones(hist - 8), shares]
                known = rng.binomial(y[k : hist + k].astype(np.int64), share)
                s = detectors.count_cusum(
                    known, np.full(hist, rate), base, d.shift, d.arl0, share, seed=r * 100 + k
                )
                if s[-1] >= d.enter:
                    first = k
                    break
            found.append(99 if first is None else first)
        found = np.array(found)
        mu0 = rate * shares[-7:].sum()  # in-control incidents of the 7 drifted days reported by day 7
        mu1 = (1 + d.shift) * mu0
        window = 7 * alpha  # a detector at 1/ARL0 false alarms a day alarms in a 7-day window w.p. ≤ 7/ARL0

        def power(level: float, m0: float = mu0, m1: float = mu1) -> float:  # exact one-sided test
            return float(stats.poisson.sf(stats.poisson.isf(level, m0), m1))

        levels = np.geomspace(1e-4, 0.5, 400)
        needed = next((lv for lv in levels if power(lv) >= 0.9), float("nan"))
        everything = power(window, 7 * rate, 7 * rate * (1 + d.shift))
        median = float(np.median(found))
        print(
            f"  {city:<15} {rate:5.1f} expected incidents a day: flagged within 7 days in "
            f"{np.mean(found <= 7):.0%} of {runs} runs, within 14 in {np.mean(found <= 14):.0%}, median "
            f"{'> 14' if median > 14 else f'{median:.0f}'} days | 7 days = {7 * rate:.0f} incidents, "
            f"{mu0:.0f} reported by day 7; bound (Neyman-Pearson: exact Poisson test knowing the change day "
            f"and the rate, on what is reported by day 7, at α = 7/ARL0 = {window:.3f}): power "
            f"{power(window):.2f} (all reported at once: {everything:.2f}); "
            f"power 0.9 needs α {needed:.3f}, i.e. ARL0 ≈ {7 / needed:.0f} days; a 7-day window test run "
            f"daily at α = 1/ARL0: power {power(alpha):.2f}",
            flush=True,
        )


def part_kpi(seeds: tuple[int, ...] = (7, 8), days: int = 30) -> None:
    kpi_power(seeds[0])
    kpi_false_alarms(seeds, days)
    kpi_detection(seeds)


# ---------------------------------------------------------------------------------------------- nowcast


def part_nowcast(seeds: tuple[int, ...] = (7, 8), days: int = 28, level: float = 0.9) -> None:
    header(f"nowcast: coverage of eventual counts by the {level:.0%} intervals (day × city)")
    rows = []
    for seed in seeds:
        folder = simulate(Path(tempfile.gettempdir()) / f"bench_mon_null{seed}_1", seed)
        t = read(folder)
        inc = t["incidents"]
        for k in range(days):
            as_of = END - pd.Timedelta(days=k) - pd.Timedelta(hours=(7 * k) % 24)  # vary the hour too
            # truth: every incident that occurred before as_of, whenever it is reported
            happened = inc[inc["occurred_at"] < as_of]
            eventual = happened.groupby([happened["occurred_at"].dt.floor("D"), "city"]).size()
            eventual = eventual.rename_axis(["day", "city"]).rename("eventual")
            delays = fit_delays(inc, inc["market"], as_of, 120, 60.0, 1.0, 150)
            cells = nowcast_cells(t["trips"], inc, as_of, delays, days=14)
            agg = aggregate(cells, ["day", "city"], level).join(eventual, on=["day", "city"])
            agg["eventual"] = agg["eventual"].fillna(0)
            agg["lag"] = ((as_of - agg["day"]) / pd.Timedelta(days=1)).astype(int)
            rows.append(agg.assign(seed=seed))
    allrows = pd.concat(rows, ignore_index=True)
    pending = allrows[allrows["reported_share"] < 0.99]
    cover = (pending["eventual"] >= pending["lower"]) & (pending["eventual"] <= pending["upper"])
    naive = pending["known"].sum() / pending["eventual"].sum()
    corrected = pending["corrected"].sum() / pending["eventual"].sum()
    rate = cover.mean()
    print(
        f"  {len(pending):,} (as_of, day, city) nowcasts with < 99% reported, "
        f"{len(seeds)} seeds × {days} as_of: coverage {rate:.3f} (nominal {level:.2f}, "
        f"bar ±0.05: {'PASS' if abs(rate - level) <= 0.05 else 'FAIL'}); "
        f"known/eventual {naive:.3f}, corrected/eventual {corrected:.3f}"
    )
    low = pending["reported_share"] < 0.9
    ratio = pending.loc[low, "corrected"].sum() / pending.loc[low, "eventual"].sum()
    known = pending.loc[low, "known"].sum() / pending.loc[low, "eventual"].sum()
    print(
        f"  of which {int(low.sum()):,} with < 90% reported (the days the correction matters): "
        f"coverage {cover[low].mean():.3f}; corrected/eventual {ratio:.3f}, known/eventual {known:.3f}"
    )
    by_lag = pending.assign(cover=cover.to_numpy()).groupby("lag")
    by_lag = by_lag.agg(n=("cover", "size"), coverage=("cover", "mean"), share=("reported_share", "mean"))
    for lag, r in by_lag.head(8).iterrows():
        print(
            f"    day as_of−{lag}: coverage {r['coverage']:.3f} over {int(r['n'])}, "
            f"mean reported share {r['share']:.2f}"
        )


# ---------------------------------------------------------------------------------------------- performance


def part_performance(frame_path: Path, data: Path) -> None:
    header("performance: CBPE-estimated ROC AUC at as_of vs the realised AUC once every label is in")
    from sklearn.metrics import roc_auc_score

    from safetyml.envvars import environment
    from safetyml.monitoring.performance import estimated_metrics

    home = Path(tempfile.mkdtemp(prefix="bench_mon_home"))
    with environment({"SAFETYML_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        from safetyml.training.pipeline import train

        overrides = {"num_boost_round": 150, "early_stopping_rounds": 20, "tuning": {"sample_rows": 100_000}}
        result = train("incident_risk", data, trials=2, seed=7, config_overrides=overrides, progress=False)
    model = result.model
    frame = pd.read_parquet(frame_path)
    if not set(model.features) <= set(frame.columns):  # the feature set changed since the frame was built
        from safetyml.features.frames import build_frame
        from safetyml.tables import load_tables

        frame = build_frame("incident_risk", load_tables(data))
    as_of = pd.to_datetime(frame["as_of"], utc=True)
    frame["week"] = (as_of.dt.normalize() - pd.to_timedelta(as_of.dt.dayofweek, unit="D")).to_numpy()
    recent = frame[as_of >= END - pd.Timedelta(days=35)].reset_index(drop=True)
    p = model.predict_proba(recent)
    split = model.metadata.get("split", {})
    print(f"  model trained with test window {split.get('test_start', '?')} – {split.get('test_end', '?')}")
    gaps = []
    for week, idx in recent.groupby("week").groups.items():
        y = recent.loc[idx, "label"].to_numpy()  # every incident of the trip, whenever reported (eventual)
        est = estimated_metrics(p[idx])
        realised = roc_auc_score(y, p[idx])
        gaps.append(abs(est["est_roc_auc"] - realised))
        print(
            f"    week {pd.Timestamp(week):%Y-%m-%d} ({len(idx):,} trips, {int(y.sum())} incidents): "
            f"estimated {est['est_roc_auc']:.4f} [{est['est_roc_auc_lo']:.4f}, {est['est_roc_auc_hi']:.4f}], "
            f"realised {realised:.4f}, "
            f"|gap| {gaps[-1]:.4f}"
        )
    city_gaps = []
    for _, idx in recent.groupby(["week", "city"]).groups.items():
        y = recent.loc[idx, "label"].to_numpy()
        if 0 < y.sum() < len(y):
            city_gaps.append(abs(estimated_metrics(p[idx])["est_roc_auc"] - roc_auc_score(y, p[idx])))
    print(
        f"  weekly |estimated − realised|: median {statistics.median(gaps):.4f}, max {max(gaps):.4f} "
        f"(bar ≤ 0.02: {'PASS' if max(gaps) <= 0.02 else 'FAIL'}); "
        f"per city-week median {statistics.median(city_gaps):.4f}, "
        f"max {max(city_gaps):.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part", action="append", choices=["speed", "stability", "kpi", "nowcast", "performance"]
    )
    parser.add_argument("--data", type=Path, help="medium simulation (seed 7) to reuse")
    parser.add_argument("--frame", type=Path, help="its incident_risk frame (features build) to reuse")
    parser.add_argument(
        "--reps", help="stability null draws per slice size, e.g. 100:200,1000000:10 (default: all sizes)"
    )
    args = parser.parse_args()
    parts = args.part or ["speed", "stability", "kpi", "nowcast", "performance"]
    data = args.data or simulate(Path(tempfile.gettempdir()) / "bench_mon_null7_1", 7)
    frame = args.frame
    if frame is None and {"stability", "performance"} & set(parts):
        from safetyml.features.frames import build_frame
        from safetyml.tables import load_tables

        frame = Path(tempfile.gettempdir()) / "bench_mon_frame7.parquet"
        if not frame.exists():
            build_frame("incident_risk", load_tables(data)).to_parquet(frame, index=False)
    started = time.perf_counter()
    for part in parts:
        if part == "speed":
            part_speed()
        elif part == "stability":
            reps = (
                {int(k): int(v) for k, v in (p.split(":") for p in args.reps.split(","))}
                if args.reps
                else None
            )
            part_stability(frame, reps)
        elif part == "kpi":
            part_kpi()
        elif part == "nowcast":
            part_nowcast()
        elif part == "performance":
            part_performance(frame, data)
    print(f"\nbench_monitoring finished in {time.perf_counter() - started:.0f} s [{load_load()}]")


if __name__ == "__main__":
    main()
