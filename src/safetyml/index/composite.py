"""One pass of the index: rates → treated → normalised → pillars → index, for one set of method choices.

Arrays carry an optional leading replication axis, so the Monte Carlo runs the same code on many
replications at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safetyml.index import aggregate
from safetyml.index.config import IndexConfig, OutlierSpec
from safetyml.index.normalise import normalise
from safetyml.index.treat import Treatment, treat
from safetyml.index.weights import Weights


@dataclass(frozen=True)
class Choice:
    """The method choices of one computation (the nominal one or a Monte Carlo replication)."""

    normalisation: str
    weights: str
    aggregation: str
    outliers: str

    @classmethod
    def nominal(cls, config: IndexConfig) -> Choice:
        m = config.method
        return cls(m.normalisation, m.weights, m.aggregation, m.outliers.method)


@dataclass
class Composite:
    treatment: Treatment
    normalised: np.ndarray  # (..., U, I)
    pillars: np.ndarray  # (..., U, P)
    score: np.ndarray  # (..., U)
    weights: Weights


def signs(config: IndexConfig, indicators: list[str]) -> np.ndarray:
    return np.array([1.0 if config.indicators[n].direction == "risk" else -1.0 for n in indicators])


def targets(config: IndexConfig, indicators: list[str]) -> np.ndarray:
    return np.array(
        [np.nan if config.indicators[n].target is None else config.indicators[n].target for n in indicators]
    )


def treated_normalised(
    values: np.ndarray, config: IndexConfig, indicators: list[str], choice: Choice
) -> tuple[Treatment, np.ndarray]:
    spec: OutlierSpec = config.method.outliers.model_copy(update={"method": choice.outliers})
    treatment = treat(values, spec)
    goal = targets(config, indicators)
    if treatment.logged.any():  # a target in raw units means nothing on a log scale: use the best value
        goal = np.where(treatment.logged.reshape(-1, len(indicators)).any(axis=0), np.nan, goal)
    return treatment, normalise(treatment.values, signs(config, indicators), choice.normalisation, goal)


def compose(
    values: np.ndarray, config: IndexConfig, indicators: list[str], choice: Choice, weights: Weights
) -> Composite:
    """The index of ``values`` (..., U, I) (rates on their display scale) under ``choice``."""
    treatment, normed = treated_normalised(values, config, indicators, choice)
    pillar_values = aggregate.pillars(normed, weights, choice.aggregation)
    score = aggregate.index(pillar_values, weights, choice.aggregation)
    return Composite(treatment, normed, pillar_values, score, weights)
