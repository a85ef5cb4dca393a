"""Model quality against the simulator's oracle on several seeds, and a feature-family ablation.

    SAFETYML_HOME=/tmp/bq_home .venv/bin/python benchmarks/bench_quality.py --data-root /tmp/bq \
        [--preset medium] [--seeds 7 11 3] [--ablation-seed 7] [--ablation-trials 6]

For each seed: simulate the preset into ``DATA_ROOT/<preset>-seed<N>`` (reused when it is already there),
train both tasks with the DEFAULT config and trial budget (registered into SAFETYML_HOME), and print the
share of the oracle's lift (bars: incident risk ≥ 0.92, merchant credit ≥ 0.93), ROC AUC, PR AUC,
precision at the review capacity, selected/total features, the structure validation chose and the
training time. The ablation (one seed) trains each task once per feature family left out, through the
experiments mechanism (``safetyml.training.experiments.run_experiment``: not registered, the champion
scored on the same test rows), with a reduced trial budget, next to a full model with the same budget.
Every table is printed as Markdown for experiments/README.md and docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

BARS = {"incident_risk": 0.92, "merchant_credit": 0.93}
TASKS = ("incident_risk", "merchant_credit")


AGG_KINDS = {
    "trend": "trends against the longer history",
    "ratio": "ratios and volatility",
    "daily_cv": "ratios and volatility",
    "time_since_last": "recency",
    "tenure": "profile",
    "attribute": "profile",
}


def ablation_families(features: Sequence[Any]) -> dict[str, list[str]]:
    """Feature families to leave out one at a time, from the definitions (not from names).

    YAML families (windows × aggregations) are one family each; delay-aligned ``rate`` features of every
    entity are one; request deviations (z-scores, ratios to the usual, hour affinity) are one; the rest go
    by entity (trip request, rider, merchant, pair, zone), or, when a task has one entity only (merchant
    credit), by kind of aggregation (trends, ratios, levels, recency, profile).
    """
    one_entity = len({f.entity for f in features}) == 1
    out: dict[str, list[str]] = {}
    for f in features:
        spec = f.spec
        if f.family:
            key = f"family {f.family}"
        elif spec.agg == "rate":
            key = "delay-aligned rates (all entities)"
        elif f.entity == "trip" and spec.compute in ("zscore", "relative", "hour_affinity"):
            key = "request deviations"
        elif f.entity == "trip":
            key = "trip request (hour, value, distance, payment)"
        elif one_entity:
            key = f"{f.entity}: {AGG_KINDS.get(spec.agg, 'levels (counts, sums, exposure)')}"
        else:
            key = f"other {f.entity} features"
        out.setdefault(key, []).append(f.name)
    return out


def _data(root: Path, preset: str, seed: int) -> Path:
    from safetyml.simulate import simulate

    folder = root / f"{preset}-seed{seed}"
    if not (folder / "truth").is_dir():
        started = time.perf_counter()
        simulate(folder, preset=preset, seed=seed, progress=False)
        print(
            f"simulated {preset} seed {seed} into {folder} in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return folder


def _row(seed: int, task: str, r: Any) -> str:
    m, sel, st = r.metrics, r.selection, r.structure
    share = r.oracle_share
    verdict = "—" if share is None else ("**pass**" if share >= BARS[task] else "miss")
    return (
        f"| {seed} | {task} | {share:.3f} | {verdict} | {m['roc_auc']:.4f} | {m['pr_auc']:.4f} | "
        f"{m['precision_at_k']:.4f} | {r.oracle_metrics['precision_at_k']:.4f} | "
        f"{len(sel.selected)}/{sel.total} | {'on' if st.get('monotone') else 'off'}, {st.get('max_depth')} | "
        f"{st.get('explain_p50_ms', float('nan')):.2f} | "
        f"{r.tuning.trials_complete} ({r.tuning.trials_pruned}) | {r.seconds:.0f} | "
        f"{r.split['rows_test']:,} ({r.split['positives_test']:,}) |"
    )


HEADER = (
    "| seed | task | oracle share | bar | ROC AUC | PR AUC | precision @ k | oracle precision @ k | "
    "features (selected/total) | monotone, max depth | explain p50 ms | trials (pruned) | train s | "
    "test rows (positive) |\n|" + " --- |" * 14
)


def quality(root: Path, preset: str, seeds: Sequence[int], tasks: Sequence[str]) -> dict[int, dict[str, Any]]:
    from safetyml.tables import load_tables
    from safetyml.training.pipeline import train

    lines, results = [HEADER], {}
    for seed in seeds:
        data = _data(root, preset, seed)
        tables = load_tables(data)
        results[seed] = {}
        for task in tasks:
            r = train(task, data, seed=seed, tables=tables, progress=False)
            results[seed][task] = r
            lines.append(_row(seed, task, r))
            print(lines[-1], flush=True)
    print("\n## quality (default config and trials)\n" + "\n".join(lines), flush=True)
    for task in tasks:
        shares = [results[s][task].oracle_share for s in seeds]
        met = "met on every seed" if min(shares) >= BARS[task] else "NOT met on every seed"
        print(
            f"{task}: oracle share per seed {', '.join(f'{x:.3f}' for x in shares)}; "
            f"min {min(shares):.3f}; bar {BARS[task]} {met}"
        )
    return results


def ablation(
    root: Path, preset: str, seed: int, trials: int, tasks: Sequence[str], baselines: Sequence[str] = TASKS
) -> None:
    """Leave each family out (selection off, so only the family changes), next to the full model with
    selection off and on; the frame is built once per task and every run is scored on the same test rows."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables
    from safetyml.training.config import load_training_config
    from safetyml.training.data import build_task_frame, select_features
    from safetyml.training.experiments import run_experiment

    data = _data(root, preset, seed)
    tables = load_tables(data)
    fs = load_feature_set()
    lines = [
        "| task | left out | features left out | features used | ROC AUC | Δ ROC AUC | PR AUC | Δ PR AUC | "
        "precision @ k | oracle share | Δ oracle share |\n|" + " --- |" * 11
    ]
    off = {"selection": {"enabled": False}}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for task in tasks:
            config = load_training_config(task)
            features = select_features(fs, config)
            frame = build_task_frame(tables, fs, config)
            runs = {
                "(nothing; selection off)": ([], off),
                "(nothing; selection on, the default)": ([], {}),
                **{label: (names, off) for label, names in ablation_families(features).items()},
            }
            if task not in baselines:  # already measured: deltas are then left to the reader
                runs = {k: v for k, v in runs.items() if not k.startswith("(")}
            base = None
            for label, (names, overrides) in runs.items():
                if len(names) == len(features):
                    continue
                slug = "".join(ch if ch.isalnum() else "_" for ch in label.lower()).strip("_")[:40]
                path = Path(tmp) / f"ablation_{task}_{slug}.yaml"
                spec = {
                    "name": f"ablation_{task}_{slug}",
                    "task": task,
                    "description": f"{task} without {label}",
                    "overrides": {**overrides, **({"features": {"exclude": names}} if names else {})},
                }
                path.write_text(yaml.safe_dump(spec))
                r = run_experiment(
                    path, data, trials=trials, seed=seed, progress=False, tables=tables, frame=frame
                ).result
                m = r.metrics
                if task in baselines:
                    base = base or r
                    d_roc = f"{m['roc_auc'] - base.metrics['roc_auc']:+.4f}"
                    d_pr = f"{m['pr_auc'] - base.metrics['pr_auc']:+.4f}"
                    d_share = f"{(r.oracle_share or 0) - (base.oracle_share or 0):+.3f}"
                else:
                    d_roc = d_pr = d_share = "(vs the baseline run)"
                lines.append(
                    f"| {task} | {label} | {len(names)} | {len(r.model.features)} | {m['roc_auc']:.4f} | "
                    f"{d_roc} | {m['pr_auc']:.4f} | {d_pr} | {m['precision_at_k']:.4f} | "
                    f"{r.oracle_share:.3f} | {d_share} |"
                )
                print(lines[-1], f"({r.seconds:.0f} s)", flush=True)
    print(
        f"\n## ablation ({preset}, seed {seed}, {trials} trials each, same test rows; deltas against the "
        "full model with selection off)\n" + "\n".join(lines),
        flush=True,
    )


def ceilings(root: Path, preset: str, seeds: Sequence[int]) -> None:
    """What the simulator lets any model reach, on the default split's test rows of each seed.

    Merchant credit: the simulator's latent draws are replayed (same seeds and streams as ``simulate``)
    and the 90-day default probability is recomputed for observers who know the exact current stress
    and its ramp (not a future onset), with or without the fraud propensity, but never the latent credit
    quality. Incident risk: the true probability without its dynamic terms (``log_odds_dynamic``: spells,
    fronts, waves, day-to-day rider risk), i.e. a perfect model of standing risk only.
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from safetyml.simulate import _rng, build_cities, build_merchants, build_riders, build_zones
    from safetyml.simulate.ledger import BASE_HAZARD, FUTURE, HORIZON, RAMP_DAYS, _sigmoid
    from safetyml.simulate.presets import DAY_NS, END, LEDGER_DAYS, get_preset
    from safetyml.tables import load_tables
    from safetyml.training.config import load_training_config
    from safetyml.training.data import build_task_frame, usable_rows
    from safetyml.training.split import time_split
    from safetyml.training.truth import oracle_probabilities

    def share(y, score, oracle):
        best = roc_auc_score(y, oracle)
        return (roc_auc_score(y, score) - 0.5) / (best - 0.5)

    print("\n## ceilings (share of the oracle's lift on the default test rows)")
    print(
        "| seed | credit: stress + fraud known | credit: stress known | incident: static oracle | "
        "incident: static, rider propensity unknown | incident: static, propensity inferred from history |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for seed in seeds:
        data = _data(root, preset, seed)
        tables = load_tables(data)
        cells = []
        # merchant credit: replay the latent draws of simulate_credit
        config = load_training_config("merchant_credit")
        frame, _ = usable_rows(build_task_frame(tables, None, config), config)
        y = frame["label"].to_numpy()
        test = time_split(frame["as_of"], y, config.split).mask("test")
        oracle = oracle_probabilities(data, frame, config)
        cities = build_cities()
        zones = build_zones(cities, _rng(seed, "zones"), get_preset(preset).start)
        m = build_merchants(get_preset(preset), cities, zones, _rng(seed, "merchants"))
        rng = _rng(seed, "credit")
        n, days = len(m.id), LEDGER_DAYS + FUTURE
        day0 = END.value - LEDGER_DAYS * DAY_NS
        first = np.maximum(np.floor((m.onboarded_ns - day0) / DAY_NS).astype(np.int64) + 1, 0)
        day = np.arange(days)[None, :]
        alive = day >= first[:, None]
        deteriorates = rng.random(n) < _sigmoid(-1.3 - 0.9 * m.quality + 0.4 * m.fraud)
        onset = first + (rng.random(n) * (days - first)).astype(np.int64)
        stress = np.where(deteriorates[:, None], np.clip((day - onset[:, None]) / RAMP_DAYS, 0.0, 1.5), 0.0)
        rows = pd.Index(m.id).get_indexer(frame["merchant_id"].astype("str"))[test]
        at = ((frame["as_of"].astype("int64").to_numpy() - day0) // DAY_NS).astype(int)[test]
        for fraud_known in (True, False):
            p = np.empty(len(rows))
            for i, (j, a) in enumerate(zip(rows, at, strict=True)):
                path = stress[j, a : a + HORIZON] if onset[j] <= a else np.zeros(HORIZON)
                fraud = 0.35 * m.fraud[j] if fraud_known else 0.0
                hazard = BASE_HAZARD * np.exp(fraud + 3.0 * path) * alive[j, a : a + HORIZON]
                p[i] = 1 - np.exp(-hazard.sum())
            cells.append(f"{share(y[test], p, oracle[test]):.3f}")
        # incident risk: the true probability without its dynamic terms, then without the rider's latent
        # propensity, then with the propensity inferred from the rider's own history
        config = load_training_config("incident_risk")
        frame, _ = usable_rows(build_task_frame(tables, None, config), config)
        y = frame["label"].to_numpy()
        split = time_split(frame["as_of"], y, config.split)
        riders = build_riders(get_preset(preset), cities, _rng(seed, "riders"))
        cells += [f"{x:.3f}" for x in incident_observers(tables, frame, split, data, riders)]
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)


def incident_observers(tables: Any, frame: Any, split: Any, data: Path, riders: Any) -> list[float]:
    """Shares of the oracle's lift, on the test rows, of three observers of the true static log-odds:

    1. the static oracle (every standing effect known exactly, no dynamic term);
    2. the same without the rider's latent propensity (a model that learns nothing from a rider's past);
    3. the same with the propensity inferred as a Bayes observer would from the rider's history: the
       posterior mean of exp(propensity) (prior: the simulator's own propensity distribution) given the
       rider's incidents reported before the test window and the expected count of its trips that had
       matured by then (Poisson likelihood, the odds as a rate).
    A model of the frame's features cannot know more than (3) plus whatever it infers of the dynamics.
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    truth = pd.read_parquet(data / "truth" / "trip_probability.parquet").astype({"trip_id": "str"})
    rows = frame[["trip_id", "rider_id", "as_of", "label"]].astype({"trip_id": "str", "rider_id": "str"})
    rows = rows.assign(test=split.mask("test")).merge(truth, on="trip_id")
    logit = np.log(rows["p_incident"] / (1 - rows["p_incident"])).to_numpy()
    propensity = pd.Series(riders.propensity, index=riders.id).reindex(rows["rider_id"]).to_numpy()
    static = logit - rows["log_odds_dynamic"].to_numpy()
    without = static - propensity
    start = pd.Timestamp(split.test_start)
    lag = pd.Timedelta(days=load_label_lag())
    mature = (pd.to_datetime(rows["as_of"], utc=True) < start - lag).to_numpy()
    expected = (
        pd.Series(1 / (1 + np.exp(-without[mature]))).groupby(rows["rider_id"].to_numpy()[mature]).sum()
    )
    incidents = tables.incidents
    known = incidents[pd.to_datetime(incidents["reported_at"], utc=True) < start]
    known = known[["trip_id"]].astype({"trip_id": "str"}).merge(rows[["trip_id", "rider_id"]], on="trip_id")
    counts = known.groupby("rider_id").size()
    test = rows["test"].to_numpy()
    ids = rows.loc[test, "rider_id"].to_numpy()
    e = expected.reindex(ids).fillna(0.0).to_numpy()[:, None]
    k = counts.reindex(ids).fillna(0.0).to_numpy()[:, None]
    grid = np.quantile(riders.propensity, (np.arange(400) + 0.5) / 400)[None, :]
    loglik = k * grid - e * np.exp(grid)
    weight = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    inferred = np.log((weight * np.exp(grid)).sum(axis=1) / weight.sum(axis=1))
    y, oracle = rows.loc[test, "label"].to_numpy(), rows.loc[test, "p_incident"].to_numpy()
    best = roc_auc_score(y, oracle) - 0.5
    return [
        (roc_auc_score(y, score) - 0.5) / best
        for score in (static[test], without[test], without[test] + inferred)
    ]


def learnability(root: Path, preset: str, seeds: Sequence[int]) -> None:
    """How far LightGBM gets on the default frame when it is also GIVEN every hidden standing quantity.

    Same frame, same split, fixed parameters (no tuning, no selection): the frame's features alone, then
    the frame plus the simulator's true rider propensity and prior experience, merchant location effect,
    and pickup/drop-off zone risk and night multipliers. The second is an upper bound for any feature
    engineering of standing risk with this much data; what it misses is finite-sample learning and the
    dynamics.
    """
    import lightgbm as lgb
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from safetyml.features.definitions import load_feature_set
    from safetyml.simulate import _rng, build_cities, build_merchants, build_riders, build_zones
    from safetyml.simulate.presets import get_preset
    from safetyml.tables import load_tables
    from safetyml.training.config import load_training_config
    from safetyml.training.data import build_task_frame, select_features, usable_rows
    from safetyml.training.split import time_split

    print("\n## learnability (incident risk, share of the oracle's lift on the default test rows)")
    print("| seed | frame features | frame + every hidden standing quantity, true |\n| --- | --- | --- |")
    config = load_training_config("incident_risk")
    fs = load_feature_set()
    names = [f.name for f in select_features(fs, config)]
    for seed in seeds:
        data = _data(root, preset, seed)
        frame, _ = usable_rows(build_task_frame(load_tables(data), fs, config), config)
        split = time_split(frame["as_of"], frame["label"], config.split)
        cities, p = build_cities(), get_preset(preset)
        zones = build_zones(cities, _rng(seed, "zones"), p.start)
        r = build_riders(p, cities, _rng(seed, "riders"))
        m = build_merchants(p, cities, zones, _rng(seed, "merchants"))
        rider, merchant = frame["rider_id"].astype(str), frame["merchant_id"].astype(str)
        true = {
            "true_propensity": pd.Series(r.propensity, index=r.id).reindex(rider).to_numpy(),
            "true_prior_days": pd.Series(r.prior_days, index=r.id).reindex(rider).to_numpy(),
            "true_location": pd.Series(m.location_effect, index=m.id).reindex(merchant).to_numpy(),
        }
        z = pd.read_parquet(data / "truth" / "zones.parquet").set_index("h3")
        for side in ("pickup", "dropoff"):
            cells = frame[f"{side}_h3"].astype(str)
            true[f"true_{side}_risk"] = z["log_risk"].reindex(cells).to_numpy()
            true[f"true_{side}_night"] = z["night_multiplier"].reindex(cells).to_numpy()
        frame = frame.assign(**true)
        oracle = (
            pd.read_parquet(data / "truth" / "trip_probability.parquet")
            .astype({"trip_id": "str"})
            .set_index("trip_id")["p_incident"]
            .reindex(frame["trip_id"].astype(str))
            .to_numpy()
        )
        tr, va, te = (split.mask(k) for k in ("train", "valid", "test"))
        y = frame["label"].to_numpy()
        best = roc_auc_score(y[te], oracle[te]) - 0.5
        cells_out = []
        for cols in (names, names + list(true)):
            x = frame[cols]
            booster = lgb.train(
                {**config.lightgbm, "verbosity": -1, "seed": seed, "num_threads": 2},
                lgb.Dataset(x[tr], y[tr]),
                num_boost_round=1000,
                valid_sets=[lgb.Dataset(x[va], y[va])],
                callbacks=[lgb.early_stopping(50, verbose=False)],
            )
            p_test = booster.predict(x[te], num_iteration=booster.best_iteration)
            cells_out.append(f"{(roc_auc_score(y[te], p_test) - 0.5) / best:.3f}")
        print(f"| {seed} | " + " | ".join(cells_out) + " |", flush=True)


def load_label_lag() -> int:
    from safetyml.training.config import load_training_config

    return load_training_config("incident_risk").split.label_lag_days


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True, help="simulated data per seed (reused)")
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 3])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--ablation-seed", type=int, default=None, help="run the ablation on this seed")
    parser.add_argument("--ablation-trials", type=int, default=6)
    parser.add_argument(
        "--ablation-baselines", nargs="*", default=list(TASKS), help="tasks whose full models to (re)train"
    )
    parser.add_argument("--no-quality", action="store_true", help="skip the trainings of every seed")
    parser.add_argument("--ceilings", action="store_true", help="what the simulator lets any model reach")
    parser.add_argument(
        "--learnability", action="store_true", help="LightGBM given the true hidden quantities too"
    )
    args = parser.parse_args()
    os.environ.setdefault("SAFETYML_HOME", str(args.data_root / "home"))
    print(f"SAFETYML_HOME={os.environ['SAFETYML_HOME']}; load average {os.getloadavg()[0]:.1f}", flush=True)
    started = time.perf_counter()
    if not args.no_quality:
        quality(args.data_root, args.preset, args.seeds, args.tasks)
    if args.ceilings:
        ceilings(args.data_root, args.preset, args.seeds)
    if args.learnability:
        learnability(args.data_root, args.preset, args.seeds)
    if args.ablation_seed is not None:
        ablation(
            args.data_root,
            args.preset,
            args.ablation_seed,
            args.ablation_trials,
            args.tasks,
            args.ablation_baselines,
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
