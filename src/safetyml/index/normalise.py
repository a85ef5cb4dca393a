"""Normalisation to a common 0-100 *risk* scale (0 = safest, 100 = least safe), direction-aware.

Bounds are taken over the whole panel of a level (every period at once), so a score means the same in
every month and trends are comparable (COINr's panel normalisation). Methods:

- ``minmax``: 100·(x − min)/(max − min), flipped for safety indicators (a constant column gives 50);
- ``zscore``: 50 + 10·z (a T-score), z signed so that higher is riskier;
- ``target``: COINr's distance to target, risk-oriented: 100·(x − target)/(worst − target), 0 at or
  beyond the target. Without a ``target`` in the YAML the panel's best value is the target.
"""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray, sign: np.ndarray, method: str, targets: np.ndarray | None = None) -> np.ndarray:
    """Normalise ``x`` (..., U, I) column-wise; ``sign`` is +1 for risk and −1 for safety indicators."""
    oriented = x * sign  # higher = riskier
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "zscore":
            mean = np.nanmean(oriented, axis=-2, keepdims=True)
            std = np.nanstd(oriented, axis=-2, keepdims=True)
            return 50.0 + 10.0 * np.where(std > 0, (oriented - mean) / np.where(std > 0, std, 1), 0.0)
        low = np.nanmin(oriented, axis=-2, keepdims=True)
        high = np.nanmax(oriented, axis=-2, keepdims=True)
        if method == "target":
            goal = np.where(np.isnan(targets), np.nan, targets * sign) if targets is not None else None
            if goal is not None:
                low = np.where(np.isnan(goal), low, goal)
            span = high - low
            return np.clip(
                np.where(span > 0, 100.0 * (oriented - low) / np.where(span > 0, span, 1), 50.0), 0, None
            )
        if method == "minmax":
            span = high - low
            return np.where(span > 0, 100.0 * (oriented - low) / np.where(span > 0, span, 1), 50.0)
    raise ValueError(f"unknown normalisation {method!r}; expected minmax, zscore or target")
