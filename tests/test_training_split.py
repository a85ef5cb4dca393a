"""Time split: ordered windows, gaps for label maturity, never random; calibration choice cross-fitted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.calibration import sigmoid
from safetyml.training.calibrate import choose_calibrator
from safetyml.training.config import SplitConfig
from safetyml.training.split import SplitError, time_split


def _frame(days: int = 120, per_day: int = 50, seed: int = 0) -> tuple[pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    as_of = start + pd.to_timedelta(rng.uniform(0, days, days * per_day), unit="D")
    return pd.Series(as_of), (rng.random(len(as_of)) < 0.1).astype(int)


def test_windows_are_ordered_with_gaps():
    as_of, y = _frame()
    cfg = SplitConfig(test_days=14, valid_days=14, gap_days=7, label_lag_days=5)
    split = time_split(as_of, y, cfg)
    t = as_of.to_numpy()
    day = np.timedelta64(1, "D")
    tr, va, te = (t[split.mask(n)] for n in ("train", "valid", "test"))
    assert tr.max() + 7 * day <= va.min()
    assert va.max() + 7 * day <= te.min()
    assert te.max() <= t.max() - 5 * day  # the last days' labels are not mature yet
    assert te.max() - te.min() <= 14 * day
    assert sum(split.counts().values()) == len(t)
    assert split.counts()["unused"] > 0


def test_split_depends_on_time_not_on_row_order():
    as_of, y = _frame()
    cfg = SplitConfig(test_days=14, valid_days=14, gap_days=7)
    perm = np.random.default_rng(1).permutation(len(as_of))
    a = time_split(as_of, y, cfg).assignment[perm]
    b = time_split(as_of.iloc[perm].reset_index(drop=True), y[perm], cfg).assignment
    assert (a == b).all()


def test_too_short_data_names_the_split():
    as_of, y = _frame(days=20)
    with pytest.raises(SplitError, match="split 'train'"):
        time_split(as_of, y, SplitConfig(test_days=14, valid_days=14, gap_days=7))


def test_calibrator_choice_is_cross_fitted_and_reduces_ece():
    rng = np.random.default_rng(5)
    z = rng.normal(-3, 1.2, 20000)
    y = (rng.random(len(z)) < sigmoid(z)).astype(int)
    raw = sigmoid(2.0 * z + 1.0)  # overconfident and shifted: a logistic mapping repairs it exactly
    choice = choose_calibrator(raw, y, ["isotonic", "platt", "none"], folds=3)
    assert choice.method == min(choice.cv_log_loss, key=choice.cv_log_loss.get)
    assert choice.method == "platt"
    assert choice.cv_log_loss["none"] > choice.cv_log_loss["platt"]
    assert choice.ece_after < choice.ece_before / 3
    assert choice.calibrator.a == pytest.approx(0.5, abs=0.05)
