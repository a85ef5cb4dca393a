"""Model performance as labels mature: realised metrics on mature weeks, estimated ones on recent weeks.

**Realised** (rows whose labels are mature, i.e. older than the maturity horizon): ROC AUC, PR AUC
(average precision), ECE (the training metrics' equal-frequency bins) and the incident rate per policy
band, per period, with percentile intervals from a Poisson bootstrap (each row weighted by a Poisson(1)
draw, all resamples computed at once on the rows sorted by score, with ties handled exactly as
scikit-learn does; the tests check the unweighted figures against ``sklearn.metrics``).

**Estimated** (any period, meant for the immature recent ones): confidence-based performance estimation
as NannyML's CBPE describes it — with calibrated probabilities ``p``, row ``i`` is a positive with
probability ``p_i``, so the expected confusion matrix at every threshold gives expected TPR/FPR and the
ROC AUC from them; the same for average precision; the expected incident rate of a band is its mean
``p``. The sampling interval of the estimated AUC is Hanley & McNeil's standard error with the expected
numbers of positives and negatives. CBPE assumes no concept drift (P(y|x) unchanged); the realised
figures of the same weeks, once mature, check it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order of rows by descending score, and the start of each run of equal scores in that order."""
    order = np.argsort(-p, kind="stable")
    sp = p[order]
    starts = np.flatnonzero(np.r_[True, sp[1:] != sp[:-1]])
    return order, starts


def _auc_ap(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision from positive/negative mass per score group (…, groups), descending."""
    P = pos.sum(axis=-1, keepdims=True)
    N = neg.sum(axis=-1, keepdims=True)
    neg_below = N - np.cumsum(neg, axis=-1)  # negatives with a strictly lower score
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(axis=-1) / (P * N)[..., 0]
        cum_pos = np.cumsum(pos, axis=-1)
        cum_all = cum_pos + np.cumsum(neg, axis=-1)
        precision = np.where(cum_all > 0, cum_pos / cum_all, 0.0)
        ap = (pos * precision).sum(axis=-1) / P[..., 0]
    return auc, ap


def _ece_bins(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each row: the training metrics' equal-count bins (those of the ECE they report)."""
    from safetyml.training.metrics import equal_count_bins

    out = np.empty(len(p), dtype=np.int64)
    for number, rows in enumerate(equal_count_bins(p, bins)):
        out[rows] = number
    return out


def _ece(p: np.ndarray, y: np.ndarray, w: np.ndarray, bins: int) -> np.ndarray:
    """Expected calibration error for each row of weights ``w`` (resamples × rows), equal-frequency bins."""
    b = _ece_bins(p, bins)
    onehot = np.zeros((len(p), int(b.max()) + 1))
    onehot[np.arange(len(p)), b] = 1.0
    n_b = w @ onehot
    p_b = (w * p) @ onehot
    y_b = (w * y) @ onehot
    gap = np.abs(p_b - y_b) / np.maximum(n_b, 1e-12)
    return (gap * n_b).sum(axis=-1) / n_b.sum(axis=-1)


def realised_metrics(
    p: np.ndarray,
    y: np.ndarray,
    bootstrap: int = 200,
    confidence: float = 0.95,
    ece_bins: int = 10,
    seed: int = 0,
    chunk: int = 25,
) -> dict[str, float]:
    """ROC AUC, PR AUC and ECE of one period with bootstrap percentile intervals (``*_lo``, ``*_hi``)."""
    p = np.asarray(p, dtype="float64")
    y = np.asarray(y, dtype="float64")
    out: dict[str, float] = {"rows": float(len(p)), "positives": float(y.sum())}
    if len(p) == 0 or y.sum() == 0 or y.sum() == len(y):
        return out | {k: math.nan for k in ("roc_auc", "pr_auc", "ece")}
    order, starts = _groups(p)
    ys = y[order]
    point_pos = np.add.reduceat(ys, starts)
    point_neg = np.add.reduceat(1.0 - ys, starts)
    auc, ap = _auc_ap(point_pos, point_neg)
    out.update(roc_auc=float(auc), pr_auc=float(ap), ece=float(_ece(p, y, np.ones((1, len(p))), ece_bins)[0]))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {"roc_auc": [], "pr_auc": [], "ece": []}
    ps = p[order]
    for done in range(0, bootstrap, chunk):
        w = rng.poisson(1.0, size=(min(chunk, bootstrap - done), len(p))).astype("float64")
        wy = w * ys
        a, b = _auc_ap(np.add.reduceat(wy, starts, axis=1), np.add.reduceat(w - wy, starts, axis=1))
        draws["roc_auc"].append(a)
        draws["pr_auc"].append(b)
        draws["ece"].append(_ece(ps, ys, w, ece_bins))
    tail = (1 - confidence) / 2 * 100
    for name, parts in draws.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        out[f"{name}_lo"], out[f"{name}_hi"] = (
            (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            if len(values)
            else (math.nan, math.nan)
        )
    return out


def hanley_mcneil_se(auc: float, n_pos: float, n_neg: float) -> float:
    """Standard error of a ROC AUC with ``n_pos`` positives and ``n_neg`` negatives (Hanley & McNeil 1982)."""
    if n_pos <= 1 or n_neg <= 1 or not np.isfinite(auc):
        return math.nan
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def estimated_metrics(p: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """CBPE: expected ROC AUC and average precision from calibrated probabilities alone, with an interval."""
    from scipy import stats

    p = np.asarray(p, dtype="float64")
    if len(p) == 0:
        return {"rows": 0.0, "expected_positives": 0.0, "est_roc_auc": math.nan, "est_pr_auc": math.nan}
    order, starts = _groups(p)
    ps = p[order]
    pos = np.add.reduceat(ps, starts)
    neg = np.add.reduceat(1.0 - ps, starts)
    auc, ap = _auc_ap(pos, neg)
    n_pos, n_neg = float(p.sum()), float((1 - p).sum())
    se = hanley_mcneil_se(float(auc), n_pos, n_neg)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return {
        "rows": float(len(p)),
        "expected_positives": n_pos,
        "est_roc_auc": float(auc),
        "est_roc_auc_lo": float(auc) - z * se,
        "est_roc_auc_hi": float(auc) + z * se,
        "est_pr_auc": float(ap),
    }


def band_rates(
    tier: np.ndarray,
    p: np.ndarray,
    y: np.ndarray | None,
    confidence: float = 0.95,
    bootstrap: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Per policy tier: rows, expected rate (mean p) and, given labels, the realised rate and its CI."""
    frame = pd.DataFrame({"tier": np.asarray(tier, dtype=object), "p": p})
    if y is not None:
        frame["y"] = np.asarray(y, dtype="float64")
    rng = np.random.default_rng(seed)
    rows = []
    tail = (1 - confidence) / 2 * 100
    for name, part in frame.groupby("tier", sort=False):
        row = {"tier": name, "rows": len(part), "expected_rate": float(part["p"].mean())}
        if y is not None:
            yy = part["y"].to_numpy()
            row["incident_rate"] = float(yy.mean())
            w = rng.poisson(1.0, size=(bootstrap, len(yy)))
            rates = (w @ yy) / np.maximum(w.sum(axis=1), 1)
            row["incident_rate_lo"], row["incident_rate_hi"] = np.percentile(rates, [tail, 100 - tail])
        rows.append(row)
    return pd.DataFrame(rows)


def performance_by_period(
    frame: pd.DataFrame,
    mature: np.ndarray,
    bootstrap: int = 200,
    confidence: float = 0.95,
    ece_bins: int = 10,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per period: realised metrics on mature rows and CBPE estimates on all rows; and band rates.

    ``frame`` has ``period``, ``probability``, ``label`` (known at as_of) and ``tier``. A period is
    ``mature`` when every one of its rows is (only those get realised figures).
    """
    metrics, bands = [], []
    frame = frame.assign(_mature=np.asarray(mature, dtype=bool))
    for period, part in frame.groupby("period", sort=True):
        p = part["probability"].to_numpy(dtype="float64")
        is_mature = bool(part["_mature"].all())
        row: dict[str, object] = {"period": period, "mature": is_mature}
        row.update(estimated_metrics(p, confidence))
        if is_mature:
            row.update(realised_metrics(p, part["label"].to_numpy(), bootstrap, confidence, ece_bins, seed))
        metrics.append(row)
        rates = band_rates(
            part["tier"].to_numpy(),
            p,
            part["label"].to_numpy() if is_mature else None,
            confidence,
            bootstrap,
            seed,
        )
        bands.append(rates.assign(period=period, mature=is_mature))
    return pd.DataFrame(metrics), pd.concat(bands, ignore_index=True) if bands else pd.DataFrame()
