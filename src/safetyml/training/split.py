"""Time-based train / validation / test split with gaps for label maturity. Never random.

Timeline, oldest to newest (``as_of`` of each row)::

    train  | gap |  valid  | gap |  test  | label lag (left out)

The test window ends at the latest as_of whose label is mature (``label_lag_days`` before the last
row). A row in the gap is used nowhere: its label window (the incident reporting delay, the 90-day
credit horizon) would reach into the next split, so a label from the future would leak backwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from safetyml.errors import SafetymlError
from safetyml.training.config import SplitConfig

SPLITS = ("train", "valid", "test")


class SplitError(SafetymlError, ValueError):
    """The data is too short or too sparse for the configured windows."""


@dataclass(frozen=True)
class TimeSplit:
    """Boundaries of the split (UTC) and each row's split: ``"train"``, ``"valid"``, ``"test"`` or ``""``."""

    train_end: pd.Timestamp  # exclusive
    valid_start: pd.Timestamp
    valid_end: pd.Timestamp  # exclusive
    test_start: pd.Timestamp
    test_end: pd.Timestamp  # inclusive: the latest mature as_of
    assignment: np.ndarray

    def mask(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return self.assignment == name

    def counts(self) -> dict[str, int]:
        return {name: int(self.mask(name).sum()) for name in SPLITS} | {
            "unused": int((self.assignment == "").sum())
        }

    def describe(self) -> dict[str, str]:
        return {
            "train_end": str(self.train_end),
            "valid_start": str(self.valid_start),
            "valid_end": str(self.valid_end),
            "test_start": str(self.test_start),
            "test_end": str(self.test_end),
        }


def time_split(as_of: pd.Series, labels: pd.Series | np.ndarray, config: SplitConfig) -> TimeSplit:
    """Assign each row to a split by its ``as_of``; each split must hold both classes."""
    times = pd.to_datetime(pd.Series(as_of).reset_index(drop=True), utc=True)
    if times.isna().any():
        raise SplitError(f"column as_of has {int(times.isna().sum())} missing value(s); every row needs one")
    if times.empty:
        raise SplitError("cannot split an empty frame")
    day = pd.Timedelta(days=1)
    test_end = times.max() - config.label_lag_days * day
    test_start = test_end - config.test_days * day
    valid_end = test_start - config.gap_days * day
    valid_start = valid_end - config.valid_days * day
    train_end = valid_start - config.gap_days * day

    t = times
    assignment = np.full(len(times), "", dtype=object)
    assignment[(t < train_end).to_numpy()] = "train"
    assignment[((t >= valid_start) & (t < valid_end)).to_numpy()] = "valid"
    assignment[((t > test_start) & (t <= test_end)).to_numpy()] = "test"
    split = TimeSplit(train_end, valid_start, valid_end, test_start, test_end, assignment.astype(str))

    y = np.asarray(labels)
    for name in SPLITS:
        mask = split.mask(name)
        positives = int(y[mask].sum())
        if mask.sum() == 0 or positives == 0 or positives == mask.sum():
            raise SplitError(
                f"split {name!r} has {int(mask.sum())} row(s) with {positives} positive label(s); both "
                f"classes are needed. The data spans {times.min()} to {times.max()}; windows are test "
                f"{config.test_days} d, valid {config.valid_days} d, gaps {config.gap_days} d, label lag "
                f"{config.label_lag_days} d. Use more data or shorter windows (training config: split)."
            )
    return split
