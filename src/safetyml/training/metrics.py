"""Classification metrics for risk scores: ranking, calibration, and what the review team will see.

ROC AUC, PR AUC (average precision), Brier and log loss come from scikit-learn, KS from
``scipy.stats.ks_2samp``. Two are our own because no library has them in this form:

- **ECE** (expected calibration error) uses *equal-frequency* bins of the predicted probability
  (quantile bins, ``n_bins`` of them): ``sum_b (n_b / n) * |mean(p in b) - mean(y in b)|``. Equal-width
  bins would put nearly every row of a rare-event model into the first bin and hide miscalibration.
- **precision / recall at top-k%**: the ``ceil(k * n)`` highest scores (ties broken by row order) are
  what a review team with capacity ``k`` would look at.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

_EPS = 1e-15


def _arrays(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype="float64")
    s = np.asarray(p, dtype="float64")
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    return y, s


def equal_count_bins(
    scores: np.ndarray, n_bins: int, descending: bool = False, keep_empty: bool = False
) -> list[np.ndarray]:
    """Row positions in ``n_bins`` groups of (nearly) equal size by score, lowest first (``descending``:
    highest first); a stable sort keeps tied rows in input order. Empty groups (fewer rows than bins) are
    dropped unless ``keep_empty``. Used by the ECE, the lift table, the calibration plot and the report."""
    s = np.asarray(scores, dtype="float64")
    order = np.argsort(-s if descending else s, kind="stable")
    bins = np.array_split(order, n_bins)
    return bins if keep_empty else [b for b in bins if len(b)]


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE over equal-frequency bins of the predicted probability (see module docstring)."""
    y, s = _arrays(y_true, p)
    if len(y) == 0:
        return float("nan")
    bins = equal_count_bins(s, n_bins)
    return float(sum(len(b) / len(y) * abs(s[b].mean() - y[b].mean()) for b in bins))


def ks_statistic(y_true: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov–Smirnov distance between the score distributions of positives and negatives."""
    from scipy.stats import ks_2samp

    y, s = _arrays(y_true, p)
    return float(ks_2samp(s[y == 1], s[y == 0]).statistic)


def top_k(y_true: np.ndarray, p: np.ndarray, share: float) -> tuple[float, float]:
    """(precision, recall) among the ``ceil(share * n)`` highest scores."""
    y, s = _arrays(y_true, p)
    k = max(1, math.ceil(share * len(y)))
    top = np.argsort(-s, kind="stable")[:k]
    hits = float(y[top].sum())
    return hits / k, hits / max(float(y.sum()), 1.0)


def lift_by_decile(y_true: np.ndarray, p: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Decile 1 = the highest scores. Columns: rows, positives, rate, lift (rate / base rate), cum_recall."""
    y, s = _arrays(y_true, p)
    rows = []
    overall = y.mean() if len(y) else float("nan")
    cum = 0.0
    for i, idx in enumerate(equal_count_bins(s, n_bins, descending=True, keep_empty=True), start=1):
        positives = float(y[idx].sum())
        cum += positives
        rate = positives / len(idx) if len(idx) else float("nan")
        rows.append(
            {
                "decile": i,
                "rows": len(idx),
                "positives": int(positives),
                "mean_score": float(s[idx].mean()) if len(idx) else float("nan"),
                "rate": rate,
                "lift": rate / overall if overall > 0 else float("nan"),
                "cum_recall": cum / y.sum() if y.sum() > 0 else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def classification_metrics(
    y_true: np.ndarray, p: np.ndarray, review_capacity: float = 0.02, n_bins: int = 10
) -> dict[str, float]:
    """All scalar test metrics of one score vector (probabilities in [0, 1])."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y, s = _arrays(y_true, p)
    s = np.clip(s, 0.0, 1.0)
    precision, recall = top_k(y, s, review_capacity)
    lift = lift_by_decile(y, s)
    return {
        "rows": float(len(y)),
        "positive_rate": float(y.mean()),
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "brier": float(brier_score_loss(y, s)),
        "log_loss": float(log_loss(y, np.clip(s, _EPS, 1 - _EPS), labels=[0, 1])),
        "ece": expected_calibration_error(y, s, n_bins),
        "ks": ks_statistic(y, s),
        "precision_at_k": precision,
        "recall_at_k": recall,
        "lift_top_decile": float(lift["lift"].iloc[0]),
    }


def oracle_share(model_auc: float, oracle_auc: float) -> float:
    """The model's share of the lift over random that the true probabilities reach: (AUC−0.5)/(AUC*−0.5)."""
    if not oracle_auc > 0.5:
        return float("nan")
    return (model_auc - 0.5) / (oracle_auc - 0.5)
