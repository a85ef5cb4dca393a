"""Stability: one more incident in one city should move no *other* city beyond the resampling noise.

The check (a unit test and a benchmark figure) builds the index twice, with and without one extra
incident on a recent trip of one city, under the nominal method, and compares every other city's score
change with the spread of its score when only the data are redrawn (the Monte Carlo with the method
fixed). A brittle index (say, min-max bounds set by one city) would move everyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from safetyml.index.config import IndexConfig
from safetyml.tables import Tables


def with_one_more_incident(tables: Tables, city: str, days: int = 20) -> Tables:
    """A copy of ``tables`` with one incident added on the first trip of ``city`` in its last ``days``."""
    trips, incidents = tables.trips, tables.incidents
    recent = trips["requested_at"] >= trips["requested_at"].max() - pd.Timedelta(days=days)
    trip = trips[recent & (trips["city"] == city)].iloc[0]
    extra = incidents.iloc[[0]].assign(
        incident_id="I_STABILITY",
        trip_id=trip["trip_id"],
        rider_id=trip["rider_id"],
        merchant_id=trip["merchant_id"],
        occurred_at=trip["requested_at"],
        reported_at=trip["requested_at"],
    )
    fields = {**tables.__dict__, "incidents": pd.concat([incidents, extra], ignore_index=True)}
    return type(tables)(**fields)


def data_only(config: IndexConfig) -> IndexConfig:
    """The config with every method choice fixed to the nominal one: the Monte Carlo redraws data only."""
    m = config.method
    fixed = config.uncertainty.model_copy(
        update={
            "normalisations": [m.normalisation],
            "weights": [m.weights],
            "aggregations": [m.aggregation],
            "outliers": [m.outliers.method],
            "weight_noise": 0.0,
        }
    )
    return config.model_copy(update={"uncertainty": fixed})


@dataclass
class Stability:
    city: str
    moved_self: float  # largest score change of the city that got the incident
    worst_ratio: float  # largest (|score change| / data-noise sd) over the other cities and periods
    within_noise: bool


def stability(tables: Tables, config: IndexConfig, city: str, replications: int = 200) -> Stability:
    """Add one incident in ``city``; compare other cities' score changes with their data-noise sd."""
    from safetyml.index.build import build_index

    quiet = data_only(config)
    noise = build_index(
        None, None, quiet, tables=tables, replications=replications, zones=False, progress=False
    )
    before = noise.index.set_index(["period", "city"])["score"]
    sd = pd.Series(noise.levels["city"].monte_carlo.scores.std(axis=0), index=before.index)
    after = build_index(
        None,
        None,
        quiet,
        tables=with_one_more_incident(tables, city),
        replications=0,
        zones=False,
        progress=False,
    )
    moved = (after.index.set_index(["period", "city"])["score"] - before).abs()
    others = moved.drop(index=city, level="city")
    ratio = (others / sd.drop(index=city, level="city")).replace(np.inf, np.nan).fillna(0.0)
    worst = float(ratio.max()) if len(ratio) else 0.0
    return Stability(city, float(moved.xs(city, level="city").max()), worst, worst <= 1.0)
