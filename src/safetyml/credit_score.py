"""Merchant credit score: probability of default → points (PDO scaling) → grade A–E.

Standard scorecard scaling: ``points = offset + factor * ln(odds)`` with ``odds = (1 − p) / p`` (good to
bad), ``factor = pdo / ln 2`` and ``offset = base_points − factor * ln(base_odds)``. So
``base_points`` are scored at ``base_odds`` and every doubling of the odds adds exactly ``pdo`` points.
The scale is the ``credit_score`` section of ``training/merchant_credit.yaml``, read by :func:`credit_scale`
once at each entry point (training, the scorer behind serving and batch, ``explain case``, the policy report)
and passed down, so every path gives the same points for the same probability. The code defaults below are
only the documented starting values: 600 points at 50:1, 20 points to double the odds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from safetyml.training.config import CreditScoreConfig

if TYPE_CHECKING:
    from safetyml.training.config import TrainingConfig

_EPS = 1e-9


def credit_scale(config: TrainingConfig | None = None) -> CreditScoreConfig:
    """The project's credit-score scale: the merchant-credit training config's ``credit_score`` section.

    ``config`` is an already-loaded merchant-credit config; without it ``training/merchant_credit.yaml`` is
    read (call this once per entry point, not per score). A config without the section gets the defaults.
    """
    if config is None:
        from safetyml.tasks import MERCHANT_CREDIT
        from safetyml.training.config import load_training_config

        config = load_training_config(MERCHANT_CREDIT)
    return config.credit_score if config.credit_score is not None else CreditScoreConfig()


def credit_points(p_default: float | np.ndarray, scale: CreditScoreConfig) -> float | np.ndarray:
    """Points for a probability of default (higher points = safer); arrays in, arrays out."""
    cfg = scale
    factor = cfg.pdo / math.log(2.0)
    offset = cfg.base_points - factor * math.log(cfg.base_odds)
    p = np.clip(np.asarray(p_default, dtype="float64"), _EPS, 1 - _EPS)
    points = offset + factor * np.log((1 - p) / p)
    return float(points) if points.ndim == 0 else points


def credit_grade(points: float | np.ndarray, scale: CreditScoreConfig) -> str | np.ndarray:
    """The best grade whose cut-off the points reach; below every cut-off is ``E``."""
    cfg = scale
    names = list(cfg.grades)
    cuts = np.asarray(list(cfg.grades.values()), dtype="float64")
    pts = np.asarray(points, dtype="float64")
    # number of cut-offs the points fall below: 0 → best grade, len(cuts) → worst (E)
    idx = (pts[..., None] < cuts).sum(axis=-1)
    labels = np.asarray([*names, "E"], dtype=object)[idx]
    return str(labels) if pts.ndim == 0 else labels


def credit_of(probability: np.ndarray, scale: CreditScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """Credit points and grades (as arrays) for probabilities of default, on ``scale``."""
    points = np.asarray(credit_points(probability, scale), dtype="float64")
    return points, np.asarray(credit_grade(points, scale), dtype=object)


__all__ = ["credit_grade", "credit_of", "credit_points", "credit_scale"]
