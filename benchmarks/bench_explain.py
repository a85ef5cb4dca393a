"""Explanation speed: single-row score + reasons latency (p50/p95, in process) and batch explanation rate.

Uses the champion of each task in SAFETYML_HOME (run ``make demo`` or ``safetyml train`` first) and the data
folder it was trained on (``--data`` to override). ``--stress`` also trains, on the same frame, the largest
model the tuning search space allows (num_leaves 63, every one of num_boost_round trees, no early stopping)
to show the worst case a future champion could reach.

    .venv/bin/python benchmarks/bench_explain.py [--data DIR] [--rows 300] [--batch 20000] [--stress]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

console = Console(width=170)
TASKS = ("incident_risk", "merchant_credit")


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def single_row(model, frame: pd.DataFrame, fs, rows: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """Latency of one request: calibrated score and top-3 reasons for one row, from a DataFrame or a dict."""
    from safetyml.explain.probability import predict_proba_fast, probability_scale
    from safetyml.explain.reasons import reason_codes
    from safetyml.explain.shap_values import explain_logodds

    pick = np.random.default_rng(seed).choice(len(frame), size=min(rows, len(frame)), replace=False)
    one_rows = [frame.iloc[[i]] for i in pick]
    records = [{name: frame[name].iloc[i] for name in model.features} for i in pick]

    def score_and_reasons(x):
        contributions = explain_logodds(model, x)
        _, p, _ = probability_scale(model, contributions)  # the score is the contributions' sum, calibrated
        return p[0], reason_codes(model, x, fs, k=3, contributions=contributions)[0]

    for x in one_rows[:20]:  # warm caches (plan, category lookup)
        score_and_reasons(x)
    out: dict[str, list[float]] = {
        "score only (predict_proba)": [],
        "score only (predict_proba_fast, dict row)": [],
        "TreeSHAP only": [],
        "score + reasons (DataFrame row)": [],
        "score + reasons (dict row)": [],
    }
    cpu: dict[str, list[float]] = {name: [] for name in out}

    def timed(name: str, call) -> None:
        wall, thread = time.perf_counter(), time.thread_time()
        call()
        out[name].append(time.perf_counter() - wall)
        cpu[name].append(time.thread_time() - thread)

    for x, record in zip(one_rows, records, strict=True):
        timed("score only (predict_proba)", lambda x=x: model.predict_proba(x))
        timed("score only (predict_proba_fast, dict row)", lambda r=record: predict_proba_fast(model, r))
        timed("TreeSHAP only", lambda r=record: explain_logodds(model, r))
        timed("score + reasons (DataFrame row)", lambda x=x: score_and_reasons(x))
        timed("score + reasons (dict row)", lambda r=record: score_and_reasons(r))
    # wall p50, wall p95, and p50 of this thread's CPU time (what an idle core would take; the box is shared)
    return {name: (*_percentiles(values), _percentiles(cpu[name])[0]) for name, values in out.items()}


def batch_rate(model, frame: pd.DataFrame, fs, rows: int, seed: int) -> dict[str, float]:
    """Rows per second: TreeSHAP for a batch, then reasons as objects or as a table."""
    from safetyml.explain.reasons import reason_codes, reason_table
    from safetyml.explain.shap_values import explain_logodds

    rng = np.random.default_rng(seed)
    batch = frame.iloc[rng.choice(len(frame), size=rows, replace=len(frame) < rows)].reset_index(drop=True)
    start, cpu = time.perf_counter(), time.process_time()
    contributions = explain_logodds(model, batch)
    shap_s, shap_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    reason_codes(model, batch, fs, k=3, contributions=contributions)
    objects_s = time.perf_counter() - start
    start = time.perf_counter()
    reason_table(model, batch, fs, k=3, contributions=contributions)
    table_s = time.perf_counter() - start
    return {
        "TreeSHAP (rows/s)": rows / shap_s,
        "TreeSHAP (rows per CPU-second)": rows / shap_cpu,
        "reason objects after TreeSHAP (rows/s)": rows / objects_s,
        "reason table after TreeSHAP (rows/s)": rows / table_s,
        "TreeSHAP + reason objects (rows/s)": rows / (shap_s + objects_s),
    }


def stress_model(model, frame: pd.DataFrame, task: str, max_depth: int = -1):
    """The largest model the search space allows, trained on this frame (worst case for TreeSHAP)."""
    import lightgbm as lgb

    from safetyml.model import RiskModel
    from safetyml.training.config import load_training_config

    config = load_training_config(task)
    space = config.tuning.search_space
    leaves = int(space["num_leaves"].high) if "num_leaves" in space else 63
    params = {
        **config.lightgbm,
        "num_leaves": leaves,
        "min_child_samples": 50,
        "max_depth": max_depth,
        "verbose": -1,
        "seed": 0,
    }
    params.pop("monotone_constraints", None)
    X = model.prepare(frame)
    booster = lgb.train(
        params, lgb.Dataset(X, label=frame["label"].to_numpy()), num_boost_round=config.num_boost_round
    )
    return (
        RiskModel(
            task=task,
            booster=booster,
            features=model.features,
            categories=model.categories,
            calibrator=model.calibrator,
        ),
        leaves,
        config.num_boost_round,
    )


def depth_study(model, frame: pd.DataFrame, task: str, fs, rows: int, seed: int) -> Table:
    """The search space's largest leaves with max_depth capped: accuracy against explanation time."""
    import lightgbm as lgb

    from safetyml.explain.shap_values import explain_logodds
    from safetyml.model import RiskModel
    from safetyml.training.config import load_training_config
    from safetyml.training.metrics import classification_metrics

    config = load_training_config(task)
    split = model.metadata.get("split") or {}
    as_of = pd.to_datetime(frame["as_of"], utc=True)
    train = as_of <= pd.Timestamp(split["train_end"])
    valid = (as_of >= pd.Timestamp(split["valid_start"])) & (as_of <= pd.Timestamp(split["valid_end"]))
    test = (as_of >= pd.Timestamp(split["test_start"])) & (as_of <= pd.Timestamp(split["test_end"]))
    X, y = model.prepare(frame), frame["label"].to_numpy()
    space = config.tuning.search_space
    leaves = int(space["num_leaves"].high) if "num_leaves" in space else 63
    table = Table(
        "max_depth",
        "trees",
        "mean depth",
        "test PR AUC",
        "test ROC AUC",
        "TreeSHAP p50 ms",
        "TreeSHAP rows/s",
        title=f"{task}: depth limit vs accuracy and TreeSHAP time ({leaves} leaves)",
    )
    pick = np.random.default_rng(seed).choice(
        np.flatnonzero(test), size=min(rows, int(test.sum())), replace=False
    )
    records = [{name: frame[name].iloc[i] for name in model.features} for i in pick]
    for max_depth in (-1, 10, 8, 6):
        params = {**config.lightgbm, "num_leaves": leaves, "max_depth": max_depth, "verbose": -1, "seed": 0}
        params.pop("monotone_constraints", None)
        booster = lgb.train(
            params,
            lgb.Dataset(X[train], label=y[train]),
            num_boost_round=config.num_boost_round,
            valid_sets=[lgb.Dataset(X[valid], label=y[valid])],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
        m = RiskModel(task=task, booster=booster, features=model.features, categories=model.categories)
        metrics = classification_metrics(y[test], m.predict_proba(frame.loc[test]), config.review_capacity)
        timings = []
        for record in records:
            start = time.perf_counter()
            explain_logodds(m, record)
            timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        explain_logodds(m, frame.iloc[pick])
        rate = len(pick) / (time.perf_counter() - start)
        text = describe(m).split(", ")
        table.add_row(
            str(max_depth) if max_depth > 0 else "none",
            text[0].split()[0],
            text[2],
            f"{metrics['pr_auc']:.4f}",
            f"{metrics['roc_auc']:.4f}",
            f"{_percentiles(timings)[0]:.2f}",
            f"{rate:,.0f}",
        )
        console.print(f"[dim]max_depth {max_depth} done[/]")
    return table


def describe(model) -> str:
    dump = model.booster.dump_model()["tree_info"]
    leaves = [t["num_leaves"] for t in dump]

    def depth(node, d=0):
        if "leaf_index" in node:
            return d
        return max(depth(node["left_child"], d + 1), depth(node["right_child"], d + 1))

    depths = [depth(t["tree_structure"]) for t in dump]
    return f"{len(dump)} trees, ≤{max(leaves)} leaves, mean depth {np.mean(depths):.1f} (max {max(depths)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=300, help="single rows timed per task")
    parser.add_argument("--batch", type=int, default=20_000, help="rows in the batch measurement")
    parser.add_argument("--stress", action="store_true", help="also time the largest model the search allows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--max-depth", type=int, default=-1, help="max_depth of the --stress model")
    parser.add_argument(
        "--depth-study",
        action="store_true",
        help="only: accuracy vs TreeSHAP time of the largest leaves with max_depth caps",
    )
    args = parser.parse_args()

    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.frames import build_frame
    from safetyml.tables import load_tables

    fs = load_feature_set()
    latency = Table(
        "task", "model", "measure", "p50 ms", "p95 ms", "CPU p50 ms", title="Single-row latency (in process)"
    )
    rates = Table("task", "model", "measure", "rows/s", title=f"Batch explanation rate ({args.batch:,} rows)")
    tables_cache: dict[Path, object] = {}
    for task in args.tasks:
        model, ref = tracking.load_model(task, "champion")
        data = args.data or Path(tracking.run_info(ref.run_id)["params"]["data_dir"])
        if data not in tables_cache:
            tables_cache[data] = load_tables(data)
        tables = tables_cache[data]
        frame = build_frame(task, tables, fs)
        if args.depth_study:
            console.print(depth_study(model, frame, task, fs, args.rows, args.seed))
            continue
        candidates = [(f"champion v{ref.version}: {describe(model)}", model)]
        if args.stress:
            with console.status(f"training the largest {task} model of the search space"):
                big, leaves, rounds = stress_model(model, frame, task, args.max_depth)
            cap = f", max_depth {args.max_depth}" if args.max_depth > 0 else ""
            candidates.append((f"stress ({leaves} leaves, {rounds} rounds{cap}): {describe(big)}", big))
        for label, m in candidates:
            for name, (p50, p95, cpu50) in single_row(m, frame, fs, args.rows, args.seed).items():
                latency.add_row(task, label, name, f"{p50:.3f}", f"{p95:.3f}", f"{cpu50:.3f}")
            for name, value in batch_rate(m, frame, fs, args.batch, args.seed).items():
                rates.add_row(task, label, name, f"{value:,.0f}")
            console.print(f"[dim]{task}: {label} measured[/]")
    if args.depth_study:
        return
    console.print(latency)
    console.print(rates)
    console.print("budget: score + reasons p50 ≤ 5 ms in process")


if __name__ == "__main__":
    main()
