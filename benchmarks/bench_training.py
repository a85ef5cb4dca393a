"""Train both models and run the shipped experiments on a data folder; print the figures as Markdown.

    SAFETYML_HOME=/tmp/bench_home .venv/bin/python benchmarks/bench_training.py --data /tmp/medium --trials 8

Figures: test metrics of each model and of the oracle (truth/), the share of oracle lift, training time,
and each experiment next to the champion on the same test rows. Used for the README (Training) and
experiments/README.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

COLUMNS = (
    "roc_auc",
    "pr_auc",
    "brier",
    "log_loss",
    "ece",
    "ks",
    "precision_at_k",
    "recall_at_k",
    "lift_top_decile",
)


def _row(label: str, metrics: dict | None, extra: str = "") -> str:
    cells = [f"{metrics[c]:.4f}" if metrics else "—" for c in COLUMNS]
    return f"| {label} | " + " | ".join(cells) + f" | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tasks", nargs="*", default=["incident_risk", "merchant_credit"])
    parser.add_argument(
        "--experiments", nargs="*", default=None, help="experiment files (default: all shipped)"
    )
    args = parser.parse_args()

    from safetyml import paths
    from safetyml.tables import load_tables
    from safetyml.training.experiments import run_experiment
    from safetyml.training.pipeline import train

    started = time.perf_counter()
    tables = load_tables(args.data)
    print(f"loaded {args.data} in {time.perf_counter() - started:.0f} s")
    header = "| model | " + " | ".join(COLUMNS) + " | notes |\n|" + " --- |" * (len(COLUMNS) + 2)
    lines = ["## models", header]
    for task in args.tasks:
        result = train(
            task, args.data, trials=args.trials, timeout=args.timeout, seed=args.seed, tables=tables
        )
        t = result.tuning
        note = (
            f"oracle share {result.oracle_share:.3f}; {result.seconds:.0f} s; {t.trials_complete} trials "
            f"({t.trials_pruned} pruned); class weight {result.class_weight}; calibration "
            f"{result.calibration.method}; test rows {result.split['rows_test']:,} "
            f"({result.split['positives_test']:,} positive); features {len(result.model.features)}/"
            f"{result.selection.total} selected; monotone {result.structure.get('monotone')}, max depth "
            f"{result.structure.get('max_depth')}, explain p50 {result.structure.get('explain_p50_ms')} ms"
        )
        lines += [
            _row(f"{task} v{result.model_version}", result.metrics, note),
            _row(f"{task} oracle", result.oracle_metrics),
        ]
        print("\n".join(lines[-2:]), flush=True)

    files = args.experiments or sorted(str(p) for p in paths.experiments_dir().glob("*.yaml"))
    lines += ["", "## experiments (same test rows as the champion)", header]
    for file in files:
        out = run_experiment(
            Path(file), args.data, trials=args.trials, timeout=args.timeout, seed=args.seed, tables=tables
        )
        r = out.result
        lines += [
            _row(f"{out.spec.name}", r.metrics, f"oracle share {r.oracle_share:.3f}; {r.seconds:.0f} s"),
            _row(f"champion v{out.champion_version}", out.champion_metrics),
        ]
        print("\n".join(lines[-2:]), flush=True)
    print("\n".join(lines))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
