"""The policy review report: one self-contained HTML file explaining a model on a population.

It holds the model card (version, training window, metrics, calibration), the global importance of
feature groups, the dependence of the top features, a cohort comparison with bootstrap confidence
intervals and a few example cases with their reason codes. Everything is aggregated before rendering
(charts are inline base64 PNGs, tables are a few dozen rows), so the file stays small and opens fast
whatever the number of explained rows; nothing is loaded from the network.
"""

from __future__ import annotations

import base64
import io
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safetyml.explain.cohorts import (
    CohortImportance,
    cohort_importance,
    dependence,
    global_importance,
    grouped_contributions,
    score_bands,
)
from safetyml.explain.probability import probability_scale
from safetyml.explain.reasons import reason_codes, reason_plan
from safetyml.explain.shap_values import explain_logodds
from safetyml.model import RiskModel
from safetyml.tasks import INCIDENT_RISK, MERCHANT_CREDIT
from safetyml.training.metrics import equal_count_bins
from safetyml.values import is_missing

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet
    from safetyml.tables import Tables

COHORTS = ("city", "vehicle_type", "merchant_category", "score_band")
ID_COLUMNS = {INCIDENT_RISK: "trip_id", MERCHANT_CREDIT: "merchant_id"}
TEMPLATE = "report.html.j2"
ARTIFACT_PATH = "explanations"  # folder of the model's MLflow run that holds its reports


@dataclass
class ModelInfo:
    """Where the model came from (registry) and its run's metrics; all optional for ad-hoc models."""

    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    alias: str | None = None
    run_metrics: dict[str, float] | None = None


@dataclass
class ReportResult:
    path: Path
    rows_explained: int
    rows_available: int
    seconds: float
    bytes: int
    logged_to: str | None = None  # MLflow run id the report was attached to


# ---------------------------------------------------------------------------------------------- data


def cohort_values(
    frame: pd.DataFrame, by: str, probability: np.ndarray, tables: Tables | None = None
) -> np.ndarray:
    """Cohort label of each row: a column of the frame, or looked up in the rider/merchant tables."""
    if by == "score_band":
        return score_bands(probability)
    if by in frame.columns:
        return frame[by].astype("object").fillna("unknown").astype(str).to_numpy()
    lookups = {
        "vehicle_type": ("riders", "rider_id", "vehicle_type"),
        "merchant_category": ("merchants", "merchant_id", "category"),
        "category": ("merchants", "merchant_id", "category"),
    }
    if by in lookups and tables is not None:
        table_name, key, column = lookups[by]
        if key in frame.columns:
            table = getattr(tables, table_name)
            mapping = table.set_index(key)[column].astype("object")
            return frame[key].astype("object").map(mapping).fillna("unknown").astype(str).to_numpy()
    raise ValueError(
        f"cannot group rows by {by!r}: it is not a column of the frame and not one of {', '.join(COHORTS)} "
        f"(vehicle_type needs rider_id and the riders table, merchant_category merchant_id and merchants)"
    )


def select_rows(
    model: RiskModel, frame: pd.DataFrame, sample: int | None, seed: int, period: str
) -> tuple[pd.DataFrame, str]:
    """The rows to explain: the test period when known (``period="test"``), sampled down to ``sample``."""
    rows, what = frame, "all rows"
    split = (model.metadata or {}).get("split") or {}
    if period == "test" and "as_of" in frame.columns and split.get("test_start"):
        start = pd.Timestamp(split["test_start"])
        start = start.tz_localize("UTC") if start.tzinfo is None else start
        as_of = pd.to_datetime(frame["as_of"], utc=True)
        test = frame.loc[as_of >= start]
        if len(test) >= 100:
            rows, what = test, f"test period (as_of ≥ {start:%Y-%m-%d})"
    if sample is not None and len(rows) > sample:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=sample, replace=False))
        rows, what = rows.iloc[pick], f"{what}, random sample of {sample:,} (seed {seed})"
    return rows.reset_index(drop=True), what


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _importance_chart(importance: pd.DataFrame, top: int) -> str:
    import matplotlib.pyplot as plt

    head = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(head) + 0.8))
    ax.barh(head["name"], head["mean_abs"], color="#3b6ea5")
    ax.set_xlabel("mean |SHAP| (log-odds)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return _png(fig)


def _dependence_chart(panels: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    cols = 3
    nrows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(10, 2.6 * nrows), squeeze=False)
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        table = panel["table"]
        x = np.arange(len(table))
        ax.plot(x, table["mean_shap"], marker="o", color="#3b6ea5")
        ax.fill_between(x, table["p10_shap"], table["p90_shap"], alpha=0.2, color="#3b6ea5")
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(table["bin"], rotation=60, ha="right", fontsize=6)
        ax.set_title(panel["feature"], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.supylabel("SHAP (log-odds)", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _cohort_chart(result: CohortImportance, groups: list[str]) -> str:
    import matplotlib.pyplot as plt

    cohorts = list(dict.fromkeys(result.table["cohort"]))
    fig, axes = plt.subplots(
        1, len(groups), figsize=(2.4 * len(groups) + 1, 0.28 * len(cohorts) + 1.2), sharey=True, squeeze=False
    )
    for ax, group in zip(axes[0], groups, strict=True):
        rows = result.table[result.table.group == group].set_index("cohort").reindex(cohorts)
        y = np.arange(len(cohorts))
        ax.errorbar(
            rows["mean_abs"],
            y,
            xerr=[rows["mean_abs"] - rows["ci_low"], rows["ci_high"] - rows["mean_abs"]],
            fmt="o",
            color="#3b6ea5",
            ms=3,
            capsize=2,
        )
        ax.set_title(group, fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(np.arange(len(cohorts)))
    axes[0][0].set_yticklabels(cohorts)
    axes[0][0].invert_yaxis()
    fig.supxlabel("mean |SHAP| (log-odds), 95% bootstrap CI", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _reliability(probability: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    """Mean predicted vs observed rate per decile of the score."""
    out = []
    for chunk in equal_count_bins(probability, bins):
        out.append(
            {
                "rows": len(chunk),
                "predicted": float(probability[chunk].mean()),
                "observed": float(labels[chunk].mean()),
            }
        )
    return out


def _fmt_metric(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:,.0f}" if abs(number) >= 1000 else f"{number:.4g}"


def _credit(p: np.ndarray, model: RiskModel) -> tuple[np.ndarray, np.ndarray] | None:
    if model.task != MERCHANT_CREDIT:
        return None
    try:
        from safetyml.credit_score import credit_of, credit_scale

        return credit_of(p, credit_scale())  # the project's scale, as serving and batch use
    except Exception:  # the credit scale is a nicety in the report, never a reason to fail it
        return None


def build_context(
    model: RiskModel,
    frame: pd.DataFrame,
    fs: FeatureSet,
    *,
    cohort: str = "city",
    tables: Tables | None = None,
    sample: int | None = 20_000,
    seed: int = 0,
    period: str = "test",
    info: ModelInfo | None = None,
    k: int = 3,
    top: int = 12,
    n_dependence: int = 6,
    n_cohort_groups: int = 6,
    n_examples: int = 6,
    n_boot: int = 200,
    progress: Any = None,
) -> dict[str, Any]:
    """Everything the template shows, as plain numbers and strings (and inline chart images)."""
    info = info or ModelInfo()
    step = progress or (lambda _message: None)
    rows, population = select_rows(model, frame, sample, seed, period)
    if rows.empty:
        raise ValueError(f"{model.task} frame has no rows to explain")
    step("TreeSHAP")
    contributions = explain_logodds(model, rows)
    scale, probability, p_base = probability_scale(model, contributions)
    plan = reason_plan(model, fs)
    group_of = {name: plan.groups[int(g)] for name, g in zip(plan.features, plan.group_of, strict=True)}
    grouped = grouped_contributions(contributions, model.features, group_of)
    phi = pd.DataFrame(contributions[:, :-1], columns=model.features)

    step("importance and dependence")
    importance = global_importance(grouped)
    feature_importance = global_importance(phi)
    mean_scale = float(np.mean(scale))
    importance["mean_abs_points"] = importance["mean_abs"] * mean_scale
    dependence_panels = []
    for group in importance["name"].head(n_dependence):
        members = [f for f in model.features if group_of[f] == group]
        feature = max(members, key=lambda f: float(np.abs(phi[f]).mean()))
        table = dependence(rows[feature], phi[feature].to_numpy(), bins=8)
        dependence_panels.append({"group": group, "feature": feature, "table": table})

    step("cohorts")
    labels = cohort_values(rows, cohort, probability, tables)
    cohort_groups = list(importance["name"].head(n_cohort_groups))
    cohorts = cohort_importance(grouped[cohort_groups], labels, n_boot=n_boot, seed=seed)
    comparisons = cohorts.notable(cohort_groups)
    cohort_sizes = pd.Series(labels).value_counts()

    step("examples")
    order = np.argsort(-probability, kind="stable")
    n_high = max(1, n_examples // 2)
    rest = order[n_high:]
    typical = np.random.default_rng(seed).choice(
        rest, size=min(len(rest), n_examples - n_high), replace=False
    )
    picks = [*order[:n_high].tolist(), *sorted(typical.tolist(), key=lambda i: -probability[i])]
    example_rows = rows.iloc[picks]
    reasons = reason_codes(
        model, example_rows, fs, k=k, include_negative=True, contributions=contributions[picks]
    )
    id_column = ID_COLUMNS.get(model.task)
    credit = _credit(probability, model)
    examples = []
    for n, (i, row_reasons) in enumerate(zip(picks, reasons, strict=True)):
        row = rows.iloc[i]
        examples.append(
            {
                "kind": "highest score" if n < n_high else "random case",
                "id": str(row[id_column]) if id_column in rows.columns else str(i),
                "id_column": id_column or "row",
                "as_of": str(row["as_of"]) if "as_of" in rows.columns else "",
                "cohort": labels[i],
                "probability": float(probability[i]),
                "credit": (f"{credit[0][i]:.0f} points, grade {credit[1][i]}" if credit else None),
                "base": float(p_base[i]),
                "up": [r for r in row_reasons if r.direction == "up"],
                "down": [r for r in row_reasons if r.direction == "down"],
            }
        )

    step("charts")
    split = (model.metadata or {}).get("split") or {}
    label = rows["label"].to_numpy(dtype="float64") if "label" in rows.columns else None
    mature = rows["label_mature"].to_numpy(dtype=bool) if "label_mature" in rows.columns else None
    reliability, observed, predicted, labelled = None, None, None, 0
    if label is not None:  # only rows whose label is known (mature): later snapshots still look negative
        keep = ~np.isnan(label) if mature is None else (mature & ~np.isnan(label))
        labelled = int(keep.sum())
        if labelled:
            observed, predicted = float(label[keep].mean()), float(probability[keep].mean())
        if labelled >= 50:
            reliability = _reliability(probability[keep], label[keep])
    metadata = model.metadata or {}
    run_metrics = {k2: v for k2, v in sorted((info.run_metrics or {}).items()) if k2.startswith("test_")}
    return {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "task": model.task,
        "card": {
            "registered_model": info.name or metadata.get("registered_model_name") or "(not registered)",
            "version": info.version or "(ad hoc)",
            "alias": info.alias or "",
            "run_id": info.run_id or "",
            "features": len(model.features),
            "groups": len(plan.groups),
            "trees": int(model.booster.num_trees()),
            "best_iteration": metadata.get("best_iteration"),
            "feature_set_version": metadata.get("feature_set_version"),
            "split": split,
            "calibration": model.calibrator.method,
            "calibration_points": len(model.calibrator.x),
            "metrics": {name: _fmt_metric(v) for name, v in run_metrics.items()},
            "metadata_metrics": {name: _fmt_metric(v) for name, v in (metadata.get("metrics") or {}).items()},
        },
        "population": {
            "description": population,
            "rows": len(rows),
            "available": len(frame),
            "as_of_min": str(pd.to_datetime(rows["as_of"]).min()) if "as_of" in rows.columns else "",
            "as_of_max": str(pd.to_datetime(rows["as_of"]).max()) if "as_of" in rows.columns else "",
            "mean_probability": float(probability.mean()),
            "observed_rate": observed,
            "labelled_rows": labelled,
            "labelled_mean_probability": predicted,
            "base_logodds": float(contributions[0, -1]),
            "base_probability": float(p_base[0]),
            "mean_scale": mean_scale,
        },
        "reliability": reliability,
        "importance": importance.head(top).to_dict("records"),
        "feature_importance": feature_importance.head(top).to_dict("records"),
        "importance_chart": _importance_chart(importance, top),
        "dependence": [
            {"group": p["group"], "feature": p["feature"], "rows": p["table"].to_dict("records")}
            for p in dependence_panels
        ],
        "dependence_chart": _dependence_chart(dependence_panels) if dependence_panels else None,
        "cohort": cohort,
        "cohort_sizes": cohort_sizes.to_dict(),
        "cohort_groups": cohort_groups,
        "cohort_table": _cohort_pivot(cohorts, cohort_groups),
        "cohort_chart": _cohort_chart(cohorts, cohort_groups) if not cohorts.table.empty else None,
        "cohort_level": round(100 * cohorts.level),
        "n_boot": n_boot,
        "comparisons": [
            {"sentence": c.sentence(), "overlap": c.intervals_overlap, "significant": c.significant}
            for c in comparisons
        ],
        "examples": examples,
        "k": k,
    }


def _cohort_pivot(result: CohortImportance, groups: list[str]) -> list[dict[str, Any]]:
    """One row per cohort: rows, then per group the mean |SHAP| with its CI (as text)."""
    out = []
    for cohort, rows in result.table.groupby("cohort", sort=True):
        cells = {}
        for group in groups:
            r = rows[rows.group == group].iloc[0]
            cells[group] = f"{r.mean_abs:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
        out.append({"cohort": cohort, "rows": int(rows["rows"].iloc[0]), "cells": cells})
    return out


# ---------------------------------------------------------------------------------------------- render


def _display_value(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:.4g}"
    return str(value)


def render(context: dict[str, Any]) -> str:
    """The report HTML from a context built by :func:`build_context` (Jinja2, autoescaped)."""
    from importlib.resources import files

    import jinja2

    source = files("safetyml.explain").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["pct"] = lambda v, d=1: "—" if v is None else f"{100 * float(v):.{d}f}%"
    env.filters["pts"] = lambda v: f"{100 * float(v):+.2f} pts"
    env.filters["apts"] = lambda v: f"{100 * float(v):.2f} pts"
    env.filters["int"] = lambda v: f"{int(v):,}"
    env.filters["value"] = _display_value
    env.filters["num"] = lambda v, d=3: (
        "—"
        if is_missing(v)
        else (f"{float(v):,.{d}f}" if isinstance(v, (int, float, np.floating)) else str(v))
    )
    return env.from_string(source).render(**context)


def write_model_report(
    model: RiskModel,
    frame: pd.DataFrame,
    fs: FeatureSet,
    out: Path,
    **options: Any,
) -> ReportResult:
    """Build, render and write the report of ``model`` on ``frame``; options as in :func:`build_context`."""
    import matplotlib

    matplotlib.use("Agg")
    start = time.perf_counter()
    context = build_context(model, frame, fs, **options)
    html = render(context)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return ReportResult(
        out, context["population"]["rows"], len(frame), time.perf_counter() - start, out.stat().st_size
    )


def write_report(
    task: str,
    data: Path,
    out: Path,
    *,
    cohort: str = "city",
    sample: int | None = 20_000,
    seed: int = 0,
    period: str = "test",
    log: bool = True,
    alias: str = "champion",
    tables: Tables | None = None,
    frame: pd.DataFrame | None = None,
    progress: Any = None,
) -> ReportResult:
    """The policy report of the task's ``alias`` model on a data folder, logged to the model's MLflow run.

    ``tables`` and ``frame`` skip reloading and rebuilding them when the caller already has them.
    """
    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set

    model, ref = tracking.load_model(task, alias)
    fs = load_feature_set()
    if tables is None:
        from safetyml.tables import load_tables

        tables = load_tables(Path(data))
    if frame is None:
        from safetyml.features.frames import build_frame

        frame = build_frame(task, tables, fs)
    info = ModelInfo(
        name=ref.name,
        version=ref.version,
        run_id=ref.run_id,
        alias=alias,
        run_metrics=tracking.run_info(ref.run_id)["metrics"] if ref.run_id else None,
    )
    result = write_model_report(
        model,
        frame,
        fs,
        out,
        cohort=cohort,
        tables=tables,
        sample=sample,
        seed=seed,
        period=period,
        info=info,
        progress=progress,
    )
    if log and ref.run_id:
        tracking.log_artifacts(ref.run_id, [result.path], ARTIFACT_PATH)
        result.logged_to = ref.run_id
    return result
