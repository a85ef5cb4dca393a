"""Merchant credit score: probability of default → points (PDO scaling) → grade A–E.

Standard scorecard scaling: ``points = offset + factor * ln(odds)`` with ``odds = (1 − p) / p`` (good to
bad), ``factor = pdo / ln 2`` and ``offset = base_points − factor * ln(base_odds)``. So
``base_points`` are scored at ``base_odds`` and every doubling of the odds adds exactly ``pdo`` points.
Defaults (``training/merchant_credit.yaml``): 600 points at 50:1, 20 points to double the odds.
"""

from __future__ import annotations

import math

import numpy as np

from safetyml.training.config import CreditScoreConfig

_EPS = 1e-9


def _config(config: CreditScoreConfig | None) -> CreditScoreConfig:
    return config if config is not None else CreditScoreConfig()


def credit_points(
    p_default: float | np.ndarray, config: CreditScoreConfig | None = None
) -> float | np.ndarray:
    """Points for a probability of default (higher points = safer); arrays in, arrays out."""
    cfg = _config(config)
    factor = cfg.pdo / math.log(2.0)
    offset = cfg.base_points - factor * math.log(cfg.base_odds)
    p = np.clip(np.asarray(p_default, dtype="float64"), _EPS, 1 - _EPS)
    points = offset + factor * np.log((1 - p) / p)
    return float(points) if points.ndim == 0 else points


def credit_grade(points: float | np.ndarray, config: CreditScoreConfig | None = None) -> str | np.ndarray:
    """The best grade whose cut-off the points reach; below every cut-off is ``E``."""
    cfg = _config(config)
    names = list(cfg.grades)
    cuts = np.asarray(list(cfg.grades.values()), dtype="float64")
    pts = np.asarray(points, dtype="float64")
    # number of cut-offs the points fall below: 0 → best grade, len(cuts) → worst (E)
    idx = (pts[..., None] < cuts).sum(axis=-1)
    labels = np.asarray([*names, "E"], dtype=object)[idx]
    return str(labels) if pts.ndim == 0 else labels
