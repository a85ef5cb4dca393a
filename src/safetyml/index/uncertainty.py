"""Monte Carlo uncertainty: every replication draws one option of each method choice *and* a redraw
of the data, recomputes the index and ranks; intervals are quantiles over replications.

Replications sharing the same method choices run together as one array computation (a leading axis),
so 1,000 replications of ~6,000 zone-periods take seconds. The parameters of every replication are
kept (``replications.parquet``), with how far it moved ranks from the nominal index.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from safetyml.index import aggregate, rates
from safetyml.index.composite import Choice, compose
from safetyml.index.config import IndexConfig
from safetyml.index.indicators import Panel
from safetyml.index.weights import Weights, make_weights

MIN_SAME_SCALE = 20  # fewest same-scale replications to base a score interval on
CHUNK = 64  # replications per array computation (memory: CHUNK × units × indicators floats)


@dataclass
class MonteCarlo:
    scores: np.ndarray  # (R, U)
    ranks: np.ndarray  # (R, U)
    replications: pd.DataFrame  # one row per replication: its choices, seed and rank shift

    def intervals(self, level: float, nominal: Choice | None = None) -> dict[str, np.ndarray]:
        """Score and rank intervals. Ranks compare across every replication; scores only across those
        on the nominal scale (same normalisation and aggregation: a z-score T-score and a min-max
        score are different units), when there are at least ``MIN_SAME_SCALE`` of them."""
        lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
        if len(self.scores) == 0:
            return {}
        scores = self.scores
        if nominal is not None:
            reps = self.replications
            same = (reps["normalisation"] == nominal.normalisation) & (
                reps["aggregation"] == nominal.aggregation
            )
            if same.sum() >= MIN_SAME_SCALE:
                scores = self.scores[same.to_numpy()]
        return {
            "score_low": np.quantile(scores, lo, axis=0),
            "score_high": np.quantile(scores, hi, axis=0),
            # rank 1 is the least safe: the best (lowest) plausible rank is the low quantile
            "rank_low": np.floor(np.quantile(self.ranks, lo, axis=0)).astype(np.int64),
            "rank_high": np.ceil(np.quantile(self.ranks, hi, axis=0)).astype(np.int64),
        }


class WeightCache:
    """Weights by (method, normalisation): PCA weights come from the nominal data under that normalisation."""

    def __init__(self, config: IndexConfig, indicators: list[str], nominal_values: np.ndarray):
        self.config, self.indicators, self.values = config, indicators, nominal_values
        self._cache: dict[tuple[str, str, str], Weights] = {}

    def get(self, choice: Choice) -> Weights:
        from safetyml.index.composite import treated_normalised

        key = (choice.weights, choice.normalisation, choice.outliers)
        if key not in self._cache:
            _, normed = treated_normalised(self.values, self.config, self.indicators, choice)
            self._cache[key] = make_weights(self.config, self.indicators, choice.weights, normed)
        return self._cache[key]


def choices(config: IndexConfig) -> list[Choice]:
    u = config.uncertainty
    return [Choice(*c) for c in itertools.product(u.normalisations, u.weights, u.aggregations, u.outliers)]


def run(
    panel: Panel,
    config: IndexConfig,
    nominal_values: np.ndarray,
    nominal_ranks: np.ndarray,
    replications: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    cache: WeightCache | None = None,
) -> MonteCarlo:
    """``replications`` draws (default from the config) of the index of ``panel``; reproducible by seed."""
    from rich.progress import Progress

    n = config.uncertainty.replications if replications is None else replications
    seed = config.uncertainty.seed if seed is None else seed
    options = choices(config)
    rng = np.random.default_rng([seed, 0])
    picked = rng.integers(0, len(options), n)
    cache = cache or WeightCache(config, panel.indicators, nominal_values)
    periods = panel.period_codes()[0]
    scores = np.zeros((n, len(panel.units)))
    ranks = np.zeros((n, len(panel.units)), dtype=np.int64)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"Monte Carlo ({panel.level}s)", total=n)
        for k, choice in enumerate(options):
            reps = np.flatnonzero(picked == k)
            for start in range(0, len(reps), CHUNK):
                batch = reps[start : start + CHUNK]
                draw_rng = np.random.default_rng([seed, 1, k, start])
                values = rates.draws(panel, config, config.uncertainty.data, len(batch), draw_rng)
                weights = cache.get(choice)
                if config.uncertainty.weight_noise > 0:
                    weights = weights.perturbed(config.uncertainty.weight_noise, len(batch), draw_rng)
                composite = compose(values, config, panel.indicators, choice, weights)
                scores[batch] = composite.score
                ranks[batch] = aggregate.ranks(composite.score, periods)
                bar.advance(task, len(batch))
    shift = np.abs(ranks - nominal_ranks[None, :]).mean(axis=1) if n else np.zeros(0)
    table = pd.DataFrame(
        {
            "replication": np.arange(n),
            "level": panel.level,
            "normalisation": [options[i].normalisation for i in picked],
            "weights": [options[i].weights for i in picked],
            "aggregation": [options[i].aggregation for i in picked],
            "outliers": [options[i].outliers for i in picked],
            "data": config.uncertainty.data,
            "seed": seed,
            "mean_abs_rank_shift": shift,
        }
    )
    return MonteCarlo(scores, ranks, table)
