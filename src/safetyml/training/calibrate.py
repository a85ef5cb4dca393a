"""Choose and fit the calibrator on the validation split.

Fitting isotonic regression and scoring it on the same rows would always make it win, so the choice is
cross-fitted: validation is cut into ``folds`` contiguous time blocks, each block is predicted by a
calibrator fitted on the others, and the method with the lowest log loss over all blocks wins. The
winner is then refitted on the whole validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safetyml.calibration import Calibrator
from safetyml.training.metrics import expected_calibration_error

_EPS = 1e-15


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))


@dataclass
class CalibrationChoice:
    calibrator: Calibrator
    method: str
    cv_log_loss: dict[str, float]
    ece_before: float
    ece_after: float


def choose_calibrator(
    raw_probability: np.ndarray,
    labels: np.ndarray,
    methods: list[str],
    folds: int = 3,
    ece_bins: int = 10,
) -> CalibrationChoice:
    """Cross-fitted log loss per method on validation (rows in time order); refit the best on all of it."""
    p = np.asarray(raw_probability, dtype="float64")
    y = np.asarray(labels, dtype="float64")
    blocks = np.array_split(np.arange(len(p)), folds)
    scores: dict[str, float] = {}
    for method in methods:
        out = np.empty_like(p)
        for block in blocks:
            rest = np.setdiff1d(np.arange(len(p)), block, assume_unique=True)
            if method != "none" and (y[rest].sum() == 0 or y[rest].sum() == len(rest)):
                out[block] = p[block]  # a fold without both classes cannot be fitted: leave it raw
                continue
            out[block] = Calibrator.fit(method, p[rest], y[rest]).transform(p[block])
        scores[method] = _log_loss(y, out)
    best = min(methods, key=lambda m: (scores[m], methods.index(m)))
    calibrator = Calibrator.fit(best, p, y)
    return CalibrationChoice(
        calibrator=calibrator,
        method=best,
        cv_log_loss=scores,
        ece_before=expected_calibration_error(y, p, ece_bins),
        ece_after=expected_calibration_error(y, calibrator.transform(p), ece_bins),
    )
