"""Evaluation against the simulator's truth: an optional step that runs only on simulated data.

A simulated data folder has a ``truth/`` folder with each trip's and merchant's true probability. With it,
training also scores the *oracle* (the true probabilities) on the test rows, and reports the share of the
oracle's discrimination the model reaches. Real data has no ``truth/``, and this step is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from safetyml.tasks import INCIDENT_RISK
from safetyml.training.config import TrainingConfig
from safetyml.training.metrics import classification_metrics, oracle_share

SEVERE_MIN = 3  # the simulator's truth has p_incident (severity >= 1) and p_incident_severe (>= 3)
TRUTH_DIR = "truth"


@dataclass(frozen=True)
class TruthEvaluation:
    """The oracle's probabilities (None without truth) and metrics on the same test rows."""

    oracle: np.ndarray | None = None
    metrics: dict[str, float] | None = None
    share: float | None = None


def has_truth(data_dir: Path | None) -> bool:
    """Whether ``data_dir`` is simulated data with a ``truth/`` folder."""
    return data_dir is not None and (Path(data_dir) / TRUTH_DIR).is_dir()


def oracle_probabilities(
    data_dir: Path | None, frame: pd.DataFrame, config: TrainingConfig
) -> np.ndarray | None:
    """True probabilities from a simulated data folder's ``truth/`` for the frame's rows (NaN if absent)."""
    if data_dir is None:
        return None
    truth_dir = Path(data_dir) / TRUTH_DIR
    if config.task == INCIDENT_RISK:
        path = truth_dir / "trip_probability.parquet"
        column = {1: "p_incident", SEVERE_MIN: "p_incident_severe"}.get(config.label.min_severity)
        keys = ["trip_id"]
    else:
        path = truth_dir / "merchant_default.parquet"
        column = "p_default_90d" if config.label.horizon_days == 90 else None
        keys = ["merchant_id", "as_of"]
    if not path.exists() or column is None:
        return None
    truth = pd.read_parquet(path, columns=[*keys, column])
    left = frame[keys].copy()
    for key in keys:
        if key == "as_of":
            left[key] = pd.to_datetime(left[key], utc=True).astype("datetime64[ns, UTC]")
            truth[key] = pd.to_datetime(truth[key], utc=True).astype("datetime64[ns, UTC]")
        else:
            left[key] = left[key].astype("str")
            truth[key] = truth[key].astype("str")
    merged = left.merge(truth.drop_duplicates(keys), on=keys, how="left", validate="many_to_one")
    return merged[column].to_numpy(dtype="float64")


def evaluate_against_truth(
    data_dir: Path | None, test: pd.DataFrame, p_test: np.ndarray, config: TrainingConfig
) -> TruthEvaluation:
    """Oracle metrics on the test rows that have a true probability; empty when the data has no truth."""
    if not has_truth(data_dir):
        return TruthEvaluation()
    oracle = oracle_probabilities(data_dir, test, config)
    if oracle is None or np.isnan(oracle).all():
        return TruthEvaluation(oracle=oracle)
    y = test["label"].to_numpy(dtype="int64")
    known = ~np.isnan(oracle)
    metrics = classification_metrics(
        y[known], oracle[known], config.review_capacity, config.calibration.ece_bins
    )
    metrics["rows_without_truth"] = float((~known).sum())
    model_on_known = classification_metrics(y[known], p_test[known], config.review_capacity)["roc_auc"]
    return TruthEvaluation(oracle, metrics, oracle_share(model_on_known, metrics["roc_auc"]))


__all__ = ["SEVERE_MIN", "TruthEvaluation", "evaluate_against_truth", "has_truth", "oracle_probabilities"]
