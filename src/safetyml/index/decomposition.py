"""How much each indicator and pillar contributed to a score, and to its change since the last period.

Arithmetic aggregation: the contribution of indicator i is its overall weight × its normalised value;
they sum to the score exactly. Geometric aggregation: the score is a product, so contributions are
shares of its logarithm, scaled to the score (they sum to the score); a change is split in proportion
to each indicator's change of weighted log value, which again sums exactly to the change.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from safetyml.index.weights import Weights


def contributions(normalised: np.ndarray, score: np.ndarray, weights: Weights, method: str) -> np.ndarray:
    """(U, I) contributions to the score."""
    w = weights.overall
    if method == "arithmetic":
        return normalised * w
    logs = np.log1p(0.99 * np.clip(normalised, 0, None)) * w
    total = logs.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, logs / np.where(total > 0, total, 1), 1.0 / len(w))
    return share * score[:, None]


def changes(
    units: pd.DataFrame,
    keys: list[str],
    normalised: np.ndarray,
    score: np.ndarray,
    weights: Weights,
    method: str,
) -> np.ndarray:
    """(U, I) contribution of each indicator to the change of score since the unit's previous period
    (NaN where the unit has no previous period)."""
    w = weights.overall
    part = normalised * w if method == "arithmetic" else np.log1p(0.99 * np.clip(normalised, 0, None)) * w
    order = units.reset_index(drop=True).sort_values([*keys, "period"]).index.to_numpy()
    out = np.full(normalised.shape, np.nan)
    frame = units.iloc[order]
    same = (frame[keys].shift(1) == frame[keys]).all(axis=1).to_numpy()
    for pos in np.flatnonzero(same):
        now, before = order[pos], order[pos - 1]
        delta = part[now] - part[before]
        if method == "arithmetic":
            out[now] = delta
        else:
            total = delta.sum()
            d_score = score[now] - score[before]
            out[now] = delta / total * d_score if total != 0 else np.zeros_like(delta)
    return out
