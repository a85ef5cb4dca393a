"""Exact TreeSHAP contributions of a risk model, in log-odds.

LightGBM's own ``pred_contrib`` (the exact path-dependent TreeSHAP algorithm of Lundberg et al., in C++)
is the engine: it is the same algorithm ``shap.TreeExplainer`` runs, and shap itself hands LightGBM
boosters to it. :func:`shap_reference` runs shap's *own* C implementation on the parsed trees instead, so
tests can check the two independent implementations agree.

The only thing written here is :func:`to_matrix`, a faster way than ``RiskModel.prepare`` to turn a few
rows into the booster's float matrix (categorical levels to their codes): a one-row DataFrame spends
most of its time in pandas, and serving explains one row per request. Tests check it gives the same
contributions as the pandas path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from safetyml.model import FeatureMismatchError, RiskModel, level_codes
from safetyml.values import as_float

# Up to this many rows, predict on one thread.
SINGLE_THREAD_ROWS = 64
# Below this many rows the per-value Python loop beats pandas' per-column machinery.
_SMALL = 8


def _category_lookup(model: RiskModel) -> dict[str, dict[Any, float]]:
    """Level -> code (as float) for each categorical feature, cached on the model."""
    cached = model.__dict__.get("_explain_category_lookup")
    if cached is not None and cached[0] == id(model.categories):
        return cached[1]
    lookup = {
        name: {level: float(i) for i, level in enumerate(levels)} for name, levels in model.categories.items()
    }
    model.__dict__["_explain_category_lookup"] = (id(model.categories), lookup)
    return lookup


def _check_columns(model: RiskModel, columns: Any) -> None:
    missing = [name for name in model.features if name not in columns]
    if missing:
        raise FeatureMismatchError(
            f"{model.task} model needs {len(missing)} column(s) missing from the input: "
            f"{', '.join(missing[:10])}"
        )


def small_rows(model: RiskModel, X: pd.DataFrame) -> list[list[Any]]:
    """The model's feature values of a few rows as Python lists, in model feature order.

    ``X.iloc[i]`` on the whole frame and a dict lookup is ~10x faster than ``X.loc[:, features]`` (or
    ``columns.get_indexer``) for one row.
    """
    columns = X.columns.tolist()
    rows = []
    for i in range(len(X)):
        record = dict(zip(columns, X.iloc[i].tolist(), strict=True))
        rows.append([record[name] for name in model.features])
    return rows


def to_matrix(model: RiskModel, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """The booster's input matrix (float64, model feature order, categorical levels as codes, unknown → NaN).

    Accepts a DataFrame or one row as a mapping (the fastest form for serving).
    """
    lookup = _category_lookup(model)
    if isinstance(X, Mapping):
        _check_columns(model, X)
        rows = [[X[name] for name in model.features]]
    else:
        _check_columns(model, X.columns)
        if len(X) > _SMALL:
            out = np.empty((len(X), len(model.features)), dtype="float64")
            for j, name in enumerate(model.features):
                col = X[name]
                if name in lookup:
                    out[:, j] = level_codes(col, model.categories[name])
                elif pd.api.types.is_float_dtype(col.dtype) and not isinstance(
                    col.dtype, pd.CategoricalDtype
                ):
                    out[:, j] = col.to_numpy(dtype="float64", na_value=np.nan)
                else:
                    out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            return out
        rows = small_rows(model, X)
    out = np.empty((len(rows), len(model.features)), dtype="float64")
    for i, row in enumerate(rows):
        for j, (name, value) in enumerate(zip(model.features, row, strict=True)):
            levels = lookup.get(name)
            if levels is None:
                out[i, j] = as_float(value)
            else:
                code = None if value is None else levels.get(value if isinstance(value, str) else str(value))
                out[i, j] = math.nan if code is None else code
    return out


def explain_logodds(model: RiskModel, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """Exact TreeSHAP values in log-odds, shape (n, n_features + 1); the last column is the base value.

    Each row sums to the booster's raw score for that row (before calibration).
    """
    matrix = to_matrix(model, X)
    return contributions_for_matrix(model, matrix)


def contributions_for_matrix(
    model: RiskModel, matrix: np.ndarray, num_threads: int | None = None
) -> np.ndarray:
    """TreeSHAP for an already-built input matrix (see :func:`to_matrix`).

    A few rows run on one thread: on a busy machine, OpenMP's other threads waiting at the barrier cost
    milliseconds per call, far more than the work (measured 8 ms → 0.1 ms for one row).
    """
    if num_threads is None:
        num_threads = 1 if len(matrix) <= SINGLE_THREAD_ROWS else (os.cpu_count() or 1)
    return np.asarray(
        model.booster.predict(matrix, pred_contrib=True, num_threads=num_threads), dtype="float64"
    )


def shap_reference(model: RiskModel, X: pd.DataFrame) -> np.ndarray:
    """The same values computed by shap's own TreeSHAP C code on the parsed trees (not LightGBM's).

    Used to cross-check :func:`explain_logodds`. shap's C code does not follow LightGBM's categorical
    splits (its answers differ by up to ~0.8 log-odds on them), so a model with any raises ``ValueError``.
    """
    import shap

    explainer = shap.TreeExplainer(model.booster, feature_perturbation="tree_path_dependent")
    if explainer.model.trees is None or (np.asarray(explainer.model.threshold_types) == 1).any():
        raise ValueError(f"{model.task} model has categorical splits, which shap's tree parser cannot read")
    explainer.model.model_type = "internal"  # skip shap's shortcut back to LightGBM's pred_contrib
    matrix = to_matrix(model, X)
    values = np.asarray(explainer.shap_values(matrix, check_additivity=False), dtype="float64")
    base = np.full((len(matrix), 1), float(np.ravel(explainer.expected_value)[0]))
    return np.hstack([values.reshape(len(matrix), -1), base])
