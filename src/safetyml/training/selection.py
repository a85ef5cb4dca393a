"""Feature selection on the validation window: grouped permutation importance, confirmed by a refit.

The full family set is wide (windows × aggregations per entity); the model keeps only the feature groups
that earn their place **on the validation window**, i.e. on later data than it learned from.

Method (``grouped_permutation``):

1. One LightGBM with fixed parameters (the config's, no tuning) is fitted on the tuning sample of the
   training rows, with early stopping on validation.
2. For each feature group (a declaration's windows, e.g. ``rider_trips_count_{1h..90d}``), the group's
   columns are shuffled *together* across validation rows (``repeats`` times, seeded) and the drop of the
   primary metric is the group's importance. Shuffling the group jointly keeps its windows consistent
   with each other, so a group is judged as a whole, as it is materialized and explained.
3. Groups whose importance is at most ``tolerance`` × the model's lift over a random ranking are dropped.
4. **Confirmation**: a second model is fitted on the kept groups. Two redundant groups (e.g. the same
   count in two entities) can each look useless while the other is present; if the kept set loses more
   than ``confirm_tolerance`` × the lift on validation, the dropped groups with a positive importance are
   restored, and if that still loses, nothing is dropped.

Why this and not one refit per dropped group (drop-column) or shuffled-target null importance: drop-column
costs one LightGBM fit per group (~70 groups for incident risk: minutes on a 2-core machine, inside every
``safetyml train``), and null importance measures gain on the *training* rows, not what generalises to
later data. Grouped permutation needs two fits plus cheap validation predictions, and the confirmation
refit covers the redundancy that permutation importance alone misses. Our own code because
``sklearn.inspection.permutation_importance`` shuffles one column at a time and wants an sklearn estimator;
for one-column groups :func:`group_permutation_importance` is tested against it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

METHOD = "grouped_permutation"
KEEP, DROP, RESTORED, PINNED = "keep", "drop", "restored", "kept (pinned)"


def feature_list_version(names: Sequence[str]) -> str:
    """A short hash of the sorted feature names: the version of a model's feature list."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]


def metric_function(metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """``roc_auc`` or ``pr_auc`` as ``f(y, score)`` (rank metrics: raw scores are fine)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    functions = {"roc_auc": roc_auc_score, "pr_auc": average_precision_score}
    if metric not in functions:
        raise ValueError(f"selection metric must be one of {', '.join(functions)}, got {metric!r}")
    return lambda y, s: float(functions[metric](y, s))


def random_level(metric: str, y: np.ndarray) -> float:
    """The metric of a random ranking: 0.5 ROC AUC, the positive rate for PR AUC."""
    return 0.5 if metric == "roc_auc" else float(np.mean(y))


def to_float_matrix(X: pd.DataFrame) -> np.ndarray:
    """Model inputs as a float matrix: categoricals as their codes (missing → NaN), as LightGBM reads them."""
    out = np.empty((len(X), X.shape[1]), dtype="float64")
    for j, name in enumerate(X.columns):
        column = X[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy().astype("float64")
            codes[codes < 0] = np.nan
            out[:, j] = codes
        else:
            out[:, j] = pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return out


def group_permutation_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    groups: dict[str, list[int]],
    score: Callable[[np.ndarray, np.ndarray], float],
    repeats: int = 2,
    seed: int = 0,
    unused: set[int] | frozenset[int] = frozenset(),
) -> tuple[float, dict[str, np.ndarray]]:
    """The baseline score and, per group, the score drops when its columns are shuffled together.

    ``groups`` maps a name to column positions of ``X``; every repeat draws one row permutation per group
    and applies it to all the group's columns. ``X`` is changed in place and restored. A group whose
    columns are all in ``unused`` (columns the model never splits on) costs exactly nothing when shuffled,
    so it is not predicted again (its permutations are still drawn: the other groups' stay the same).
    """
    rng = np.random.default_rng(seed)
    baseline = score(y, predict(X))
    drops: dict[str, np.ndarray] = {}
    for name, columns in groups.items():
        values = np.zeros(repeats)
        if set(columns) <= unused:
            for _ in range(repeats):
                rng.permutation(len(X))
            drops[name] = values
            continue
        saved = X[:, columns].copy()
        for r in range(repeats):
            X[:, columns] = saved[rng.permutation(len(X))]
            values[r] = baseline - score(y, predict(X))
        X[:, columns] = saved
        drops[name] = values
    return baseline, drops


@dataclass
class SelectionResult:
    """What selection kept, what it dropped and why (``table``: one row per group)."""

    selected: list[str]
    total: int
    table: pd.DataFrame
    metric: str
    metric_full: float
    metric_selected: float
    outcome: str  # "dropped N groups", "restored ...", "kept all", "disabled"
    seconds: float
    fits: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def dropped(self) -> list[str]:
        rows = self.table[self.table["decision"] == DROP]
        return [name for names in rows["features"] for name in names.split(",") if name]

    @property
    def version(self) -> str:
        return feature_list_version(self.selected)

    def summary(self) -> dict[str, Any]:
        """Flat facts for the MLflow run and the model's sidecar."""
        return {
            "method": METHOD,
            "outcome": self.outcome,
            "features_total": self.total,
            "features_selected": len(self.selected),
            "groups_total": len(self.table),
            "groups_dropped": int((self.table["decision"] == DROP).sum()),
            "feature_list_version": self.version,
            "valid_metric": self.metric,
            "valid_metric_full": self.metric_full,
            "valid_metric_selected": self.metric_selected,
            "seconds": round(self.seconds, 2),
            "fits": self.fits,
        }


def select_groups(
    fit: Callable[[list[str]], Any],
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    groups: dict[str, list[str]],
    metric: str,
    tolerance: float,
    confirm_tolerance: float,
    repeats: int = 2,
    seed: int = 0,
    pinned: Sequence[str] = (),
) -> SelectionResult:
    """Drop the groups whose shuffling costs at most ``tolerance`` of the validation lift, then confirm.

    ``fit(columns)`` returns a LightGBM booster trained on those columns (fixed parameters, early stopping
    on validation); ``groups`` maps a group name to its columns of ``X_valid``. ``pinned`` groups are
    never dropped.
    """
    started = time.perf_counter()
    score = metric_function(metric)
    columns = [c for names in groups.values() for c in names]
    position = {c: j for j, c in enumerate(X_valid.columns)}
    unknown = [c for c in columns if c not in position]
    if unknown:
        raise ValueError(f"selection: group columns missing from the validation frame: {unknown[:5]}")
    booster = fit(list(X_valid.columns))
    matrix = to_float_matrix(X_valid)

    def predict_matrix(M: np.ndarray) -> np.ndarray:
        return booster.predict(M, raw_score=True, num_threads=1)

    full, drops = group_permutation_importance(
        predict_matrix,
        matrix,
        y_valid,
        {g: [position[c] for c in names] for g, names in groups.items()},
        score,
        repeats=repeats,
        seed=seed,
        unused={
            position[c]
            for c, n in zip(booster.feature_name(), booster.feature_importance(), strict=True)
            if n == 0 and c in position
        },
    )
    lift = max(full - random_level(metric, y_valid), 1e-12)
    threshold = tolerance * lift
    importance = {g: float(v.mean()) for g, v in drops.items()}
    decision = {g: PINNED if g in pinned else (DROP if importance[g] <= threshold else KEEP) for g in groups}
    reasons = {
        g: (
            "pinned in the config"
            if decision[g] == PINNED
            else f"shuffling it costs {importance[g]:+.5f} {metric} "
            f"({'≤' if decision[g] == DROP else '>'} tolerance {threshold:.5f})"
        )
        for g in groups
    }
    fits, selected_metric, outcome = 1, full, "kept all"

    group_of = {c: g for g, names in groups.items() for c in names}

    def kept_columns() -> list[str]:
        return [c for c in X_valid.columns if c in group_of and decision[group_of[c]] != DROP]

    if any(d == DROP for d in decision.values()):
        if all(d == DROP for d in decision.values()):
            for g in groups:
                decision[g], reasons[g] = KEEP, reasons[g] + "; every group looked useless: kept all"
        else:
            kept = kept_columns()
            selected_metric = score(y_valid, fit(kept).predict(X_valid[kept], raw_score=True, num_threads=1))
            fits += 1
            outcome = f"dropped {sum(d == DROP for d in decision.values())} of {len(groups)} groups"
            if selected_metric < full - confirm_tolerance * lift:
                positive = [g for g in groups if decision[g] == DROP and importance[g] > 0]
                for g in positive:
                    decision[g] = RESTORED
                    reasons[g] += f"; restored: without it the kept set lost {full - selected_metric:.5f}"
                kept = kept_columns()
                selected_metric = (
                    score(y_valid, fit(kept).predict(X_valid[kept], raw_score=True, num_threads=1))
                    if positive
                    else selected_metric
                )
                fits += bool(positive)
                outcome = f"restored {len(positive)} groups after the confirmation refit"
                if selected_metric < full - confirm_tolerance * lift:
                    for g in groups:
                        if decision[g] == DROP:
                            decision[g] = RESTORED
                            reasons[g] += "; restored: the kept set still lost on validation"
                    selected_metric, outcome = full, "kept all (the confirmation refit lost on validation)"
    table = pd.DataFrame(
        [
            {
                "group": g,
                "features": ",".join(groups[g]),
                "n_features": len(groups[g]),
                "metric": metric,
                "metric_with": full,
                "metric_without": full - importance[g],
                "importance": importance[g],
                "importance_sd": float(drops[g].std(ddof=1)) if repeats > 1 else float("nan"),
                "decision": decision[g],
                "reason": reasons[g],
            }
            for g in groups
        ]
    ).sort_values("importance", ascending=False, kind="stable", ignore_index=True)
    return SelectionResult(
        selected=kept_columns(),
        total=len(columns),
        table=table,
        metric=metric,
        metric_full=full,
        metric_selected=selected_metric,
        outcome=outcome,
        seconds=time.perf_counter() - started,
        fits=fits,
        details={"threshold": threshold, "lift": lift, "valid_rows": len(y_valid)},
    )


def feature_groups(features: Sequence[Any], by: str = "group") -> dict[str, list[str]]:
    """Feature names per group (``by``: ``group``, ``family`` or ``feature``), in feature order."""
    out: dict[str, list[str]] = {}
    for f in features:
        key = f.name if by == "feature" else (getattr(f, by, None) or getattr(f, "group", None) or f.name)
        out.setdefault(str(key), []).append(f.name)
    return out


def disabled_selection(features: Sequence[Any], by: str = "group") -> SelectionResult:
    """Every feature kept (``selection.enabled: false``), with the groups listed as such."""
    groups = feature_groups(features, by)
    table = pd.DataFrame(
        [
            {"group": g, "features": ",".join(n), "n_features": len(n), "decision": KEEP}
            for g, n in groups.items()
        ]
    )
    names = [f.name for f in features]
    nan = float("nan")
    return SelectionResult(names, len(names), table, "", nan, nan, "disabled", 0.0, 0)


def run_selection(
    features: Sequence[Any],
    X: pd.DataFrame,
    y: np.ndarray,
    train_rows: np.ndarray,
    valid_rows: np.ndarray,
    config: Any,
    seed: int = 0,
) -> SelectionResult:
    """Select ``features`` (definitions, in model order) for ``config`` (a TrainingConfig).

    ``X`` holds the prepared model inputs of every row, ``train_rows`` the (tuning-sample) training
    positions and ``valid_rows`` the validation positions. Fits use the config's fixed LightGBM parameters
    (``selection.learning_rate`` for speed), monotone constraints unless the config turns them off.
    """
    from safetyml.training.monotone import constraints_for
    from safetyml.training.tuning import FitData, base_params, fit_booster

    cfg = config.selection
    if not cfg.enabled:
        return disabled_selection(features, cfg.group_by)
    unknown = [g for g in cfg.keep_groups if g not in feature_groups(features, cfg.group_by)]
    if unknown:
        raise ValueError(
            f"training config {config.task}: selection.keep_groups names unknown group(s) {unknown}"
        )
    valid_rows = np.asarray(valid_rows)
    if cfg.valid_rows is not None and len(valid_rows) > cfg.valid_rows:
        rng = np.random.default_rng(seed + 1)
        valid_rows = np.sort(rng.choice(valid_rows, size=cfg.valid_rows, replace=False))
    X_train, y_train = X.iloc[train_rows], y[train_rows]
    X_valid, y_valid = X.iloc[valid_rows], y[valid_rows]
    by_name = {f.name: f for f in features}
    constrained = config.monotone_constraints is not False

    def fit(columns: list[str]) -> Any:
        monotone = constraints_for([by_name[c] for c in columns], constrained)
        params = base_params(config, seed, monotone)
        if cfg.learning_rate is not None:
            params["learning_rate"] = cfg.learning_rate
        data = FitData(X_train[columns], y_train, X_valid[columns], y_valid, monotone)
        return fit_booster(params, data, config.num_boost_round, config.early_stopping_rounds)

    return select_groups(
        fit,
        X_valid,
        y_valid,
        feature_groups(features, cfg.group_by),
        config.primary_metric,
        cfg.tolerance,
        cfg.confirm_tolerance,
        repeats=cfg.repeats,
        seed=seed,
        pinned=cfg.keep_groups,
    )


def registered_features(aliases: Sequence[str] = ("champion", "challenger")) -> list[str] | None:
    """The union of the feature lists of every task's registered models behind ``aliases``, or None when a
    task has no champion yet (then its next model may need any column: store them all)."""
    from safetyml import tracking
    from safetyml.tasks import TASKS

    names: set[str] = set()
    for task in TASKS:
        for alias in aliases:
            try:
                model, _ = tracking.load_model(task, alias)
            except LookupError:
                if alias == "champion":
                    return None
                continue
            names.update(model.features)
    return sorted(names)


__all__ = [
    "METHOD",
    "SelectionResult",
    "disabled_selection",
    "feature_groups",
    "feature_list_version",
    "group_permutation_importance",
    "metric_function",
    "registered_features",
    "run_selection",
    "select_groups",
    "to_float_matrix",
]
