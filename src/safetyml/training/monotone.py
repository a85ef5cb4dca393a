"""Monotone constraints from each feature's risk direction, and a check that a model respects them.

A feature with ``direction = +1`` (more chargebacks, more late repayments, more past incidents) may
never lower the risk; ``-1`` may never raise it; ``0`` is free. Categorical features are always free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd


def constraints_for(features: Sequence[Any], enabled: bool = True) -> list[int]:
    """LightGBM ``monotone_constraints``: one of -1/0/+1 per feature, in model column order."""
    out = []
    for feature in features:
        direction = int(getattr(feature, "direction", 0) or 0)
        if not enabled or getattr(feature, "kind", "numeric") == "categorical":
            direction = 0
        if direction not in (-1, 0, 1):
            raise ValueError(f"feature {feature.name!r}: direction must be -1, 0 or +1, got {direction}")
        out.append(direction)
    return out


def monotonicity_violations(
    predict: Callable[[pd.DataFrame], np.ndarray],
    X: pd.DataFrame,
    feature: str,
    direction: int,
    grid: np.ndarray | None = None,
    tolerance: float = 1e-12,
) -> int:
    """How many (row, grid step) pairs move against ``direction`` when only ``feature`` varies.

    Every row of ``X`` is copied once per grid value (default: the feature's 1st–99th percentiles
    plus its extremes), predictions are taken, and each row's curve is checked step by step.
    """
    if direction == 0:
        return 0
    values = pd.to_numeric(X[feature], errors="coerce").dropna()
    if grid is None:
        if values.empty:
            return 0
        grid = np.unique(
            np.concatenate([np.quantile(values, np.linspace(0.01, 0.99, 15)), [values.min(), values.max()]])
        )
    grid = np.sort(np.asarray(grid, dtype="float64"))
    repeated = X.loc[X.index.repeat(len(grid))].reset_index(drop=True)
    repeated[feature] = np.tile(grid, len(X))
    curves = np.asarray(predict(repeated), dtype="float64").reshape(len(X), len(grid))
    steps = np.diff(curves, axis=1) * direction
    return int((steps < -tolerance).sum())
