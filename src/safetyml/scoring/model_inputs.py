"""Model inputs for scoring: the fast LightGBM matrix paths, credit points and each row's market."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from safetyml.model import RiskModel, level_codes
from safetyml.scoring.policies import market_of_city


def category_codes(model: RiskModel) -> dict[str, dict[str, int]] | None:
    """Category → code maps that LightGBM itself uses for this booster, or None if they cannot be trusted."""
    cached = getattr(model, "_safetyml_codes", False)
    if cached is not False:
        return cached
    cat_columns = [name for name in model.features if name in model.categories]
    booster_levels = getattr(model.booster, "pandas_categorical", None) or []
    ours = [list(model.categories[name]) for name in cat_columns]
    codes = None
    if [list(levels) for levels in booster_levels] == ours:
        codes = {name: {level: i for i, level in enumerate(model.categories[name])} for name in cat_columns}
    object.__setattr__(model, "_safetyml_codes", codes)
    return codes


def fast_matrix(model: RiskModel, rows: list[dict[str, Any]]) -> np.ndarray | pd.DataFrame:
    """The rows as LightGBM sees them: floats, categorical levels as their codes (missing: NaN).

    Equal to what LightGBM builds from ``model.prepare(DataFrame)`` (tests check the scores are identical);
    falls back to that DataFrame when the booster's categories differ from the model's.
    """
    codes = category_codes(model)
    if codes is None:
        return model.prepare(pd.DataFrame(rows, columns=model.features))
    matrix = np.empty((len(rows), len(model.features)), dtype="float64")
    for j, name in enumerate(model.features):
        mapping = codes.get(name)
        if mapping is None:
            matrix[:, j] = [row[name] for row in rows]
        else:
            matrix[:, j] = [
                mapping.get(row[name], np.nan) if row[name] is not None else np.nan for row in rows
            ]
    return matrix


def predict_matrix(model: RiskModel, matrix: np.ndarray | pd.DataFrame, num_threads: int = 1) -> np.ndarray:
    """``model.predict_proba`` on a prepared matrix; single-threaded by default (a few rows: threads cost)."""
    from safetyml.calibration import sigmoid

    raw = np.asarray(model.booster.predict(matrix, raw_score=True, num_threads=num_threads), dtype="float64")
    return model.calibrator.transform(sigmoid(raw))


def market_codes(X: pd.DataFrame, markets: list[str | None] | None) -> tuple[np.ndarray, list[str | None]]:
    """Rows as codes into a list of distinct markets (None: no market), looked up once per distinct city.

    ``markets`` (one per row) wins; else the ``market`` column; else each row's ``city`` mapped to its market
    (missing or unknown city → None); else None for every row. An empty market name counts as None.
    """
    if markets is not None:
        values: Any = pd.Series([m if m else None for m in markets], dtype="object")
        to_market = _market_name
    elif "market" in X.columns:
        values, to_market = X["market"], _market_name
    elif "city" in X.columns:
        values, to_market = X["city"], _market_of_city_value
    else:
        return np.zeros(len(X), dtype=np.intp), [None]
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    per_unique = [to_market(value) for value in uniques] + [None]  # the last: missing values (code -1)
    labels = list(dict.fromkeys(per_unique))
    remap = np.array([labels.index(m) for m in per_unique], dtype=np.intp)
    return remap[codes], labels


def _market_name(value: Any) -> str | None:
    return None if pd.isna(value) or not str(value) else str(value)


def _market_of_city_value(value: Any) -> str | None:
    return None if pd.isna(value) else market_of_city(str(value))


def predict_frame(model: RiskModel, X: pd.DataFrame) -> np.ndarray:
    """``model.predict_proba(X)``, bit for bit, without its DataFrame copies: one float64 matrix for LightGBM.

    The matrix holds what LightGBM's own pandas conversion gives (floats; categorical levels as the
    booster's codes, other values NaN), so the scores are identical (tested); prediction uses every core.
    Falls back to ``predict_proba`` when the booster's categories differ from the model's, for missing
    columns (its error names them) and for an empty frame.
    """
    codes = category_codes(model)
    if codes is None or len(X) == 0 or any(name not in X.columns for name in model.features):
        return model.predict_proba(X)
    columns = []
    for name in model.features:
        column = X[name]
        if name in model.categories:
            columns.append(level_codes(column, model.categories[name]))
        elif pd.api.types.is_float_dtype(column.dtype):
            columns.append(column.to_numpy(dtype="float64", na_value=np.nan))
        else:
            columns.append(pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
    matrix = np.empty((len(X), len(columns)), dtype="float64")
    for start in range(0, len(X), _FILL_ROWS):  # row blocks that stay in cache: ~2x faster than whole columns
        block = matrix[start : start + _FILL_ROWS]
        for j, values in enumerate(columns):
            block[:, j] = values[start : start + _FILL_ROWS]
    return predict_matrix(model, matrix, num_threads=_cores())


_FILL_ROWS = 4096


def _cores() -> int:
    """CPUs this process may use (LightGBM's threads for batch prediction)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
