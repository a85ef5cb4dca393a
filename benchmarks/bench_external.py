"""Default features against a hand-made baseline on data safetyml's simulator did not write.

    SAFETYML_HOME=/tmp/ext_home .venv/bin/python benchmarks/bench_external.py --data /tmp/ext \
        [--customers 5000] [--terminals 10000] [--days 150] [--seed 1] [--trials N]

The data comes from an independent re-implementation of the payment-fraud transaction generator of the
*Reproducible Machine Learning for Credit Card Fraud Detection* handbook (Le Borgne et al., chapter 3),
mapped onto the data contract as the issue describes: customers → riders, terminals → merchants,
transactions → trips (amount → order value), frauds → incidents reported 7 days after they happen. Its
mechanics are not safetyml's: fraud is (1) any amount above 220, (2) every transaction of a terminal
compromised for 28 days, (3) a third of a compromised customer's transactions for 14 days, at five times
the usual amount. Nothing in safetyml is configured for it: the pipeline runs with its defaults, as a new
user would run it (validate, then train).

The baseline is the handbook's own hand-made features, computed directly with pandas (customer counts
and mean amounts over 1, 7 and 30 days; terminal counts and fraud rates over 1, 7 and 30 days ending at
the 7-day feedback delay; amount, weekend, night), fitted with LightGBM on the same training rows and
judged on the same test rows as safetyml's model. The script prints PR AUC and ROC AUC of both and the
verdict (the goal is to beat the baseline, not to get close).

This is a stand-in for the external check kept aside by the issue's authors (their data is not ours to
see); the generator was written from the handbook's description, with its own random draws.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2026-03-01", tz="UTC")
GRID_DEGREES = 0.3  # the 100 × 100 grid spans 0.3° (~33 km) around central São Paulo
ORIGIN = (-23.70, -46.80)
REPORT_DELAY = pd.Timedelta(days=7)


def generate(out: Path, customers: int, terminals: int, days: int, seed: int) -> dict[str, int]:
    """Write riders, merchants, trips and incidents (contract tables) for the handbook's three scenarios."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    cxy = rng.uniform(0, 100, size=(customers, 2))
    mean_amount = rng.uniform(5, 100, customers)
    std_amount = mean_amount / 2
    tx_per_day = rng.uniform(0, 4, customers)
    txy = rng.uniform(0, 100, size=(terminals, 2))
    near = cKDTree(txy).query_ball_point(cxy, r=5)

    # transactions: Poisson per customer-day, time of day ~ N(noon, 20,000 s), amount ~ N(mean, mean/2)
    n_per = rng.poisson(np.repeat(tx_per_day[None, :], days, axis=0))  # days × customers
    day_idx, cust_idx = np.nonzero(n_per)
    reps = n_per[day_idx, cust_idx]
    day = np.repeat(day_idx, reps)
    cust = np.repeat(cust_idx, reps)
    secs = rng.normal(43_200, 20_000, len(day))
    keep = (secs > 0) & (secs < 86_400)
    has_terminal = np.array([len(n) > 0 for n in near])
    keep &= has_terminal[cust]
    day, cust, secs = day[keep], cust[keep], secs[keep]
    amount = rng.normal(mean_amount[cust], std_amount[cust])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[cust[negative]])
    sizes = np.array([len(n) for n in near])
    pick = (rng.random(len(cust)) * sizes[cust]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = np.concatenate([np.asarray(n, dtype=np.int64) for n in near])
    term = flat[offsets[cust] + pick]
    order = np.lexsort((secs, day))
    day, cust, secs, amount, term = day[order], cust[order], secs[order], amount[order], term[order]
    at = START + pd.to_timedelta(day, unit="D") + pd.to_timedelta(np.floor(secs), unit="s")
    amount = np.round(amount, 2)

    fraud = amount > 220  # scenario 1
    for d in range(days):  # scenario 2: two terminals a day, compromised for 28 days
        bad = rng.choice(terminals, size=2, replace=False)
        fraud |= np.isin(term, bad) & (day >= d) & (day < d + 28)
    for d in range(days):  # scenario 3: three customers a day; a third of 14 days' transactions × 5
        for c in rng.choice(customers, size=3, replace=False):
            idx = np.flatnonzero((cust == c) & (day >= d) & (day < d + 14))
            if len(idx) == 0:
                continue
            hit = rng.choice(idx, size=len(idx) // 3, replace=False)
            amount[hit] = np.round(amount[hit] * 5, 2)
            fraud[hit] = True

    out.mkdir(parents=True, exist_ok=True)
    lat = lambda xy: ORIGIN[0] + xy[:, 1] * GRID_DEGREES / 100  # noqa: E731
    lng = lambda xy: ORIGIN[1] + xy[:, 0] * GRID_DEGREES / 100  # noqa: E731
    rider_ids = np.array([f"c{i}" for i in range(customers)])
    merchant_ids = np.array([f"t{i}" for i in range(terminals)])
    pd.DataFrame(
        {
            "rider_id": rider_ids,
            "city": "sao_paulo",
            "signup_at": START - pd.to_timedelta(rng.integers(30, 1000, customers), unit="D"),
            "vehicle_type": "motorcycle",
        }
    ).to_parquet(out / "riders.parquet", index=False)
    pd.DataFrame(
        {
            "merchant_id": merchant_ids,
            "city": "sao_paulo",
            "category": "restaurant",
            "onboarded_at": START - pd.to_timedelta(rng.integers(30, 1000, terminals), unit="D"),
            "lat": lat(txy),
            "lng": lng(txy),
        }
    ).to_parquet(out / "merchants.parquet", index=False)
    trip_ids = np.array([f"x{i}" for i in range(len(day))])
    distance = np.linalg.norm(cxy[cust] - txy[term], axis=1) * GRID_DEGREES / 100 * 111
    trips = pd.DataFrame(
        {
            "trip_id": trip_ids,
            "rider_id": rider_ids[cust],
            "merchant_id": merchant_ids[term],
            "requested_at": at,
            "pickup_lat": lat(txy[term]),
            "pickup_lng": lng(txy[term]),
            "dropoff_lat": lat(cxy[cust]),
            "dropoff_lng": lng(cxy[cust]),
            "distance_km": np.round(distance, 3),
            "order_value": amount,
            "payment_method": "card",
        }
    )
    trips.to_parquet(out / "trips.parquet", index=False)
    f = np.flatnonzero(fraud)
    pd.DataFrame(
        {
            "incident_id": [f"f{i}" for i in range(len(f))],
            "trip_id": trip_ids[f],
            "rider_id": rider_ids[cust[f]],
            "merchant_id": merchant_ids[term[f]],
            "occurred_at": at[f],
            "reported_at": at[f] + REPORT_DELAY,
            "type": "theft",
            "severity": 2,
            "lat": lat(txy[term[f]]),
            "lng": lng(txy[term[f]]),
        }
    ).to_parquet(out / "incidents.parquet", index=False)
    return {"trips": len(trips), "frauds": len(f), "customers": customers, "terminals": terminals}


def handmade_features(data: Path) -> pd.DataFrame:
    """The handbook's features, one row per trip (pandas rolling windows; labels only after the delay)."""
    trips = pd.read_parquet(data / "trips.parquet")
    incidents = pd.read_parquet(data / "incidents.parquet")
    trips["fraud"] = trips["trip_id"].isin(incidents["trip_id"]).astype(float)
    trips = trips.sort_values("requested_at", kind="stable").reset_index(drop=True)
    out = pd.DataFrame({"trip_id": trips["trip_id"], "amount": trips["order_value"]})
    out["weekend"] = (trips["requested_at"].dt.day_of_week >= 5).astype(int)
    out["night"] = (trips["requested_at"].dt.hour <= 6).astype(int)
    trips["one"] = 1.0
    for key, prefix in (("rider_id", "customer"), ("merchant_id", "terminal")):
        g = trips.sort_values([key, "requested_at"], kind="stable")
        idx = g.index
        t = g.set_index("requested_at")
        for days in (1, 7, 30):
            if prefix == "customer":
                roll = t.groupby(key, sort=False)
                count = roll["one"].rolling(f"{days}D").sum().to_numpy()
                total = roll["order_value"].rolling(f"{days}D").sum().to_numpy()
                out.loc[idx, f"customer_nb_tx_{days}d"] = count
                out.loc[idx, f"customer_avg_amount_{days}d"] = total / count
            else:
                roll = t.groupby(key, sort=False)
                d = 7
                n_delay = roll["one"].rolling(f"{d}D").sum().to_numpy()
                f_delay = roll["fraud"].rolling(f"{d}D").sum().to_numpy()
                n_all = roll["one"].rolling(f"{d + days}D").sum().to_numpy()
                f_all = roll["fraud"].rolling(f"{d + days}D").sum().to_numpy()
                n_window = n_all - n_delay
                out.loc[idx, f"terminal_nb_tx_{days}d"] = n_window
                out.loc[idx, f"terminal_risk_{days}d"] = np.where(
                    n_window > 0, (f_all - f_delay) / np.maximum(n_window, 1), 0.0
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials (default: the config's)")
    args = parser.parse_args()

    import lightgbm as lgb
    from sklearn.metrics import average_precision_score, roc_auc_score

    from safetyml.tables import load_tables
    from safetyml.training.pipeline import train

    if not (args.data / "trips.parquet").exists():
        started = time.perf_counter()
        info = generate(args.data, args.customers, args.terminals, args.days, args.seed)
        print(f"generated {info} in {time.perf_counter() - started:.0f} s", flush=True)
    from safetyml.features.definitions import load_feature_set
    from safetyml.training.config import load_training_config
    from safetyml.training.data import build_task_frame, usable_rows

    tables = load_tables(args.data)
    started = time.perf_counter()
    full = build_task_frame(tables, load_feature_set(), load_training_config("incident_risk"))
    print(f"safetyml frame: {time.perf_counter() - started:.0f} s, {full.shape}", flush=True)
    result = train(
        "incident_risk",
        args.data,
        trials=args.trials,
        seed=args.seed,
        tables=tables,
        frame=full,
        progress=False,
    )
    print(f"safetyml train (defaults): {time.perf_counter() - started:.0f} s", flush=True)
    test = result.test_frame
    y_test = test["label"].to_numpy()
    p_safetyml = result.model.predict_proba(test)

    # the baseline on the same rows: train/valid/test from the same split boundaries
    started = time.perf_counter()
    hand = handmade_features(args.data)
    names = [c for c in hand.columns if c != "trip_id"]
    frame, _ = usable_rows(full, result.config)
    split = result.split
    t = pd.to_datetime(frame["as_of"], utc=True)
    train_rows = frame[t < pd.Timestamp(split["train_end"])]
    valid_rows = frame[(t >= pd.Timestamp(split["valid_start"])) & (t < pd.Timestamp(split["valid_end"]))]
    by_id = hand.set_index("trip_id")
    x_train, x_valid = by_id.loc[train_rows["trip_id"], names], by_id.loc[valid_rows["trip_id"], names]
    x_test = by_id.loc[test["trip_id"], names]
    booster = lgb.train(
        {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "verbosity": -1, "seed": args.seed},
        lgb.Dataset(x_train, train_rows["label"].to_numpy()),
        num_boost_round=1000,
        valid_sets=[lgb.Dataset(x_valid, valid_rows["label"].to_numpy())],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    p_hand = booster.predict(x_test, num_iteration=booster.best_iteration)
    print(f"hand-made baseline: {time.perf_counter() - started:.0f} s", flush=True)

    rows = {
        "safetyml defaults": p_safetyml,
        "hand-made features (LightGBM)": p_hand,
    }
    print(
        f"\n## external-style check ({len(test):,} test rows, {int(y_test.sum()):,} incidents; "
        f"safetyml kept {len(result.model.features)} of {result.selection.total} features)\n"
        "| model | PR AUC | ROC AUC |\n| --- | --- | --- |"
    )
    for label, p in rows.items():
        print(f"| {label} | {average_precision_score(y_test, p):.4f} | {roc_auc_score(y_test, p):.4f} |")
    gap = average_precision_score(y_test, p_safetyml) - average_precision_score(y_test, p_hand)
    verdict = "beats" if gap > 0 else "does NOT beat"
    print(f"\nPR AUC safetyml − hand-made: {gap:+.4f} ({verdict} the baseline)")


if __name__ == "__main__":
    main()
