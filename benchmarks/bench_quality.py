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

    from safetyml.simulate import _rng, build_cities, build_merchants, build_zones
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
    print("| seed | credit: stress + fraud known | credit: stress known | incident: static oracle |")
    print("| --- | --- | --- | --- |")
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
        # incident risk: the true probability without its dynamic terms
        config = load_training_config("incident_risk")
        frame, _ = usable_rows(build_task_frame(tables, None, config), config)
        y = frame["label"].to_numpy()
        test = frame.loc[time_split(frame["as_of"], y, config.split).mask("test"), ["trip_id", "label"]]
        truth = pd.read_parquet(data / "truth" / "trip_probability.parquet")
        test = test.astype({"trip_id": "str"}).merge(truth.astype({"trip_id": "str"}), on="trip_id")
        logit = np.log(test["p_incident"] / (1 - test["p_incident"]))
        cells.append(f"{share(test['label'], logit - test['log_odds_dynamic'], test['p_incident']):.3f}")
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)


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
    args = parser.parse_args()
    os.environ.setdefault("SAFETYML_HOME", str(args.data_root / "home"))
    print(f"SAFETYML_HOME={os.environ['SAFETYML_HOME']}; load average {os.getloadavg()[0]:.1f}", flush=True)
    started = time.perf_counter()
    if not args.no_quality:
        quality(args.data_root, args.preset, args.seeds, args.tasks)
    if args.ceilings:
        ceilings(args.data_root, args.preset, args.seeds)
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
