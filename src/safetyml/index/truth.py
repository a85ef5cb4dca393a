"""The truth of every city and zone on simulated data, to check the index against (benchmarks, report).

Two truths, for two questions:

- **True incident risk** of a unit in a period: the mean true incident probability per trip
  (``truth/trip_probability.parquet``, column ``p_incident``) over the trips of the city, or over the
  trips touching the zone (same membership as the index). It is what the simulator's city effects, zone
  risks, hot zones, riders and conditions add up to, and the estimand of ``incident_rate`` only.
- **True index**: the same index method (nominal choices and weights) applied to every indicator's
  *true expected value* (:func:`true_values`), i.e. the composite's own estimand: what the index would
  be with infinitely many trips of the same kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from safetyml.index.config import IndexConfig
from safetyml.index.indicators import CITY_KEYS, ZONE_KEYS, Inputs, Panel
from safetyml.index.weights import Weights

TRUTH_FILE = Path("truth") / "trip_probability.parquet"


def has_truth(data: Path | None) -> bool:
    return data is not None and (Path(data) / TRUTH_FILE).exists()


def true_risk(data: Path, inputs: Inputs, panel: Panel) -> np.ndarray:
    """Mean true incident probability per trip of every unit of ``panel`` (aligned with its rows)."""
    truth = pd.read_parquet(Path(data) / TRUTH_FILE, columns=["trip_id", "p_incident"])
    p = inputs.trips["trip_id"].map(truth.set_index("trip_id")["p_incident"]).to_numpy(dtype="float64")
    trips = inputs.trips
    if panel.level == "city":
        frame = trips[CITY_KEYS].assign(p=p)
        keys = CITY_KEYS
    else:
        rows = inputs.members["row"].to_numpy()
        frame = trips[CITY_KEYS].iloc[rows].assign(h3=inputs.members["h3"].to_numpy(), p=p[rows])
        keys = ZONE_KEYS
    means = frame.groupby(keys, as_index=False)["p"].mean()
    return panel.units[keys].merge(means, on=keys, how="left")["p"].to_numpy()


# indicator → the per-trip truth column whose mean over the unit's trips is its expected value
TRIP_TRUTH = {
    "incident_rate": "p_incident",
    "severe_incident_rate": "p_incident_severe",
    "violence_rate": "p_incident_violence",
    "accident_rate": "p_incident_accident",
    "predicted_risk": "p_incident",  # a model's mean prediction estimates the mean true probability
}
# shares of the unit's own trips: facts, not estimates; the observed share is their truth
OBSERVED_SHARES = ("night_share", "experienced_share", "hot_zone_share")


def _trip_probabilities(data: Path, inputs: Inputs, columns: list[str]) -> pd.DataFrame:
    path = Path(data) / TRUTH_FILE
    import pyarrow.parquet as pq

    have = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise KeyError(
            f"{path}: no column {missing[0]!r} (the simulator writes it since the TRUST index's composite "
            "truth; simulate the data again)"
        )
    truth = pd.read_parquet(path, columns=["trip_id", *columns]).set_index("trip_id")
    return truth.reindex(inputs.trips["trip_id"].to_numpy())


def _unit_mean(values: np.ndarray, inputs: Inputs, panel: Panel) -> np.ndarray:
    """Mean of a per-trip value over each unit's trips (the index's membership), aligned with the panel."""
    rows, codes, units = inputs.unit_codes(panel.level)
    n = len(units)
    mean = np.bincount(codes, weights=values[rows], minlength=n) / np.bincount(codes, minlength=n)
    keys = CITY_KEYS if panel.level == "city" else ZONE_KEYS
    return panel.units[keys].merge(units.assign(v=mean), on=keys, how="left")["v"].to_numpy()


def _riders_expected(p: np.ndarray, inputs: Inputs, panel: Panel) -> np.ndarray:
    """Expected share of a unit's active riders with at least one incident: mean of 1 − Π(1 − p)."""
    rows, codes, units = inputs.unit_codes(panel.level)
    rider, riders = pd.factorize(inputs.trips["rider_id"])
    pair, inverse = np.unique(codes * len(riders) + rider[rows], return_inverse=True)
    log_none = np.bincount(inverse, weights=np.log1p(-np.minimum(p[rows], 1 - 1e-12)), minlength=len(pair))
    unit = pair // len(riders)
    n = len(units)
    share = np.bincount(unit, weights=-np.expm1(log_none), minlength=n) / np.bincount(unit, minlength=n)
    keys = CITY_KEYS if panel.level == "city" else ZONE_KEYS
    return panel.units[keys].merge(units.assign(v=share), on=keys, how="left")["v"].to_numpy()


def true_values(
    data: Path, inputs: Inputs, panel: Panel, nominal: np.ndarray
) -> tuple[np.ndarray, dict[str, str]]:
    """Every indicator's true expected value per unit (U, I, display scale), and where each came from.

    Trip incident rates: the mean of the trip's true probability of that kind of incident; riders with
    an incident: the mean over active riders of 1 − Π(1 − p) over their trips in the unit; trip shares:
    the observed share (a fact about the trips). Indicators the simulator has no truth for (the merchant
    ones) keep the ``nominal`` estimate, and the returned sources say so.
    """
    columns = sorted({TRIP_TRUTH[n] for n in panel.indicators if n in TRIP_TRUTH} | {"p_incident"})
    probs = _trip_probabilities(data, inputs, columns)
    out = np.array(nominal, dtype="float64", copy=True)
    sources: dict[str, str] = {}
    for j, name in enumerate(panel.indicators):
        if name in TRIP_TRUTH:
            column = TRIP_TRUTH[name]
            out[:, j] = panel.scale[j] * _unit_mean(probs[column].to_numpy(dtype="float64"), inputs, panel)
            sources[name] = f"mean {column} per trip"
        elif name == "riders_with_incident":
            p = probs["p_incident"].to_numpy(dtype="float64")
            out[:, j] = panel.scale[j] * _riders_expected(p, inputs, panel)
            sources[name] = "mean over active riders of 1 - prod(1 - p_incident)"
        elif name in OBSERVED_SHARES:
            out[:, j] = panel.raw[:, j]
            sources[name] = "observed share (a fact about the trips)"
        else:
            sources[name] = "no simulator truth: the index's own estimate"
    return out, sources


def agreement(table: pd.DataFrame, risk: np.ndarray) -> dict[str, float]:
    """Spearman of score with true risk (median over periods) and the share of units whose true rank
    lies in their rank interval."""
    from scipy.stats import spearmanr

    frame = table.assign(true_risk=risk)
    frame["true_rank"] = frame.groupby("period")["true_risk"].rank(ascending=False, method="min")
    rhos = [spearmanr(g["score"], g["true_risk"]).statistic for _, g in frame.groupby("period") if len(g) > 2]
    covered = (frame["true_rank"] >= frame["rank_low"]) & (frame["true_rank"] <= frame["rank_high"])
    return {
        "spearman": float(np.median(rhos)) if rhos else float("nan"),
        "coverage": float(covered.mean()),
        "units": float(len(frame)),
        "mean_interval_width": float((frame["rank_high"] - frame["rank_low"] + 1).mean()),
    }


def has_composite_truth(data: Path | None) -> bool:
    """Whether the truth file has every per-trip column the true index needs (older folders do not)."""
    if not has_truth(data):
        return False
    import pyarrow.parquet as pq

    names = set(pq.read_schema(Path(data) / TRUTH_FILE).names)
    return set(TRIP_TRUTH.values()) <= names


def true_index(
    data: Path,
    inputs: Inputs,
    panel: Panel,
    nominal_values: np.ndarray,
    config: IndexConfig,
    weights: Weights,
) -> tuple[np.ndarray, dict[str, str]]:
    """The true index of every unit: the nominal method (choices and ``weights``) applied to
    :func:`true_values`; and where each indicator's true value came from."""
    from safetyml.index.composite import Choice, compose

    values, sources = true_values(data, inputs, panel, nominal_values)
    score = compose(values, config, panel.indicators, Choice.nominal(config), weights).score
    return score, sources


def agreements(
    data: Path, inputs: Inputs, table: pd.DataFrame, result, config: IndexConfig
) -> dict[str, float]:
    """Agreement of a level's index with the true incident risk (keys as :func:`agreement`) and, when
    the truth file allows, with the true index (keys prefixed ``true_index_``). ``result`` is the
    level's :class:`safetyml.index.build.LevelResult`."""
    figures = agreement(table, true_risk(data, inputs, result.panel))
    if has_composite_truth(data):
        score, _ = true_index(
            data, inputs, result.panel, result.values.values, config, result.nominal.weights
        )
        figures.update({f"true_index_{k}": v for k, v in agreement(table, score).items() if k != "units"})
    return figures
