"""Aggregation of normalised indicators into pillars and pillars into the index, and ranks.

``arithmetic``: the weighted mean (full compensation: a bad indicator can be offset by a good one).
``geometric``: the weighted geometric mean of (1 + 0.99·v), mapped back to 0-100, so a very bad
indicator weighs more (partial compensation), as the OECD Handbook recommends when compensation is not
wanted. Values below 0 (possible with z-scores) are floored at 0 first.
"""

from __future__ import annotations

import numpy as np

from safetyml.index.weights import Weights


def _dot(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted sum over the last axis; ``w`` is (k,) or, one row per replication, (R, k)."""
    return values @ w if w.ndim == 1 else np.einsum("r...k,rk->r...", values, w)


def _mean(values: np.ndarray, w: np.ndarray, method: str) -> np.ndarray:
    if method == "arithmetic":
        return _dot(values, w)
    logs = np.log1p(0.99 * np.clip(values, 0, None))
    return np.expm1(_dot(logs, w)) / 0.99


def pillars(normalised: np.ndarray, weights: Weights, method: str) -> np.ndarray:
    """Pillar values (..., U, P) from normalised indicators (..., U, I)."""
    return np.stack(
        [_mean(normalised[..., idx], weights.within[..., idx], method) for idx in weights.members], axis=-1
    )


def index(pillar_values: np.ndarray, weights: Weights, method: str) -> np.ndarray:
    """The index (..., U) from pillar values (..., U, P)."""
    return _mean(pillar_values, weights.pillar, method)


def ranks(scores: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Rank of each unit within its period, 1 = highest score (least safe); ties share the best rank."""
    from scipy.stats import rankdata

    out = np.zeros(scores.shape, dtype=np.int64)
    for p in np.unique(periods):
        cols = periods == p
        out[..., cols] = rankdata(-scores[..., cols], method="min", axis=-1).astype(np.int64)
    return out
