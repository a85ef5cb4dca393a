"""The true risk of every city and zone on simulated data, to check the index against (benchmarks, report).

**True risk** of a unit in a period is the mean true incident probability per trip
(``truth/trip_probability.parquet``, column ``p_incident``) over the trips of the city, or over the
trips touching the zone (same membership as the index). It is what the incident indicators estimate
and what the simulator's city effects, zone risks, hot zones, riders and conditions add up to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from safetyml.index.indicators import CITY_KEYS, ZONE_KEYS, Inputs, Panel

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
