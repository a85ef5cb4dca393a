"""Rich renderings of training results for the terminal (``safetyml train``, experiments, the demo)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

SUMMARY_METRICS = (
    ("roc_auc", "ROC AUC"),
    ("pr_auc", "PR AUC"),
    ("brier", "Brier"),
    ("log_loss", "log loss"),
    ("ece", "ECE"),
    ("ks", "KS"),
    ("precision_at_k", "precision @ top {k}"),
    ("recall_at_k", "recall @ top {k}"),
    ("lift_top_decile", "lift, top decile"),
)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def metrics_table(title: str, columns: dict[str, dict[str, float] | None], capacity: float) -> Table:
    """One row per metric, one column per score vector (model, oracle, champion, ...)."""
    table = Table("metric", *columns, title=title)
    for key, label in SUMMARY_METRICS:
        table.add_row(
            label.format(k=f"{capacity:.0%}"), *[_fmt(m.get(key)) if m else "—" for m in columns.values()]
        )
    return table


def render_training(result: Any) -> Group:
    """Split, choices made, test metrics next to the oracle's, share of oracle lift, registry, run."""
    cfg, s, t = result.config, result.split, result.tuning
    lines = [
        Text.from_markup(
            f"[bold]{result.task}[/]: train {s['rows_train']:,} rows ({s['positives_train']:,} positive), "
            f"valid {s['rows_valid']:,} ({s['positives_valid']:,}), "
            f"test {s['rows_test']:,} ({s['positives_test']:,}); "
            f"test window {s['test_start'][:10]} → {s['test_end'][:10]}"
        )
    ]
    dropped = {
        k.removeprefix("rows_").replace("_", " "): v
        for k, v in result.notes.items()
        if k.startswith("rows_") and k not in ("rows_in_frame", "rows_used")
    }
    if dropped:
        lines.append(Text("rows: " + ", ".join(f"{k} {v:,}" for k, v in dropped.items())))
    lines.append(
        Text(
            f"tuning: {t.trials_complete} complete, {t.trials_pruned} pruned (study {t.study_name}); "
            f"best valid {cfg.primary_metric} {t.best_value:.4f}; class weighting: {result.class_weight}; "
            f"calibration: {result.calibration.method} (valid ECE {result.calibration.ece_before:.4f} → "
            f"{result.calibration.ece_after:.4f})"
        )
    )
    sel, st = result.selection, result.structure
    if sel is not None:
        lines.append(
            Text(
                f"features: {len(sel.selected)} of {sel.total} selected on validation ({sel.outcome}; "
                f"list {sel.version}); trees: monotone {'on' if st.get('monotone') else 'off'}, "
                f"max depth {st.get('max_depth')}"
                + (
                    f", explanation p50 {st['explain_p50_ms']:.2f} ms "
                    f"(budget {st['explanation_budget_ms']} ms)"
                    if "explain_p50_ms" in st
                    else ""
                )
            )
        )
    columns = {"model": result.metrics, "oracle (truth)": result.oracle_metrics}
    lines.append(metrics_table(f"{result.task}: test metrics", columns, cfg.review_capacity))
    if result.oracle_share is not None:
        lines.append(
            Text.from_markup(f"share of oracle lift (AUC−0.5)/(AUC*−0.5): [bold]{result.oracle_share:.3f}[/]")
        )
    if result.model_version:
        role = "champion (first model) and challenger" if result.promoted else "challenger"
        lines.append(Text(f"registered {cfg.registered_model_name} version {result.model_version} as {role}"))
    frame_s = result.notes.get("seconds_load_and_frame", 0.0)
    fit_s = result.notes.get("seconds_tune_fit_calibrate", 0.0)
    lines.append(
        Text(
            f"MLflow run {result.run_id} in experiment {result.experiment} ({result.seconds:.0f} s: "
            f"data and frame {frame_s:.0f} s, tuning and fit {fit_s:.0f} s)"
        )
    )
    return Group(*lines)
