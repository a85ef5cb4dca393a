"""Probability calibration stored as plain numbers (JSON), never as a pickled estimator.

Fitting uses scikit-learn (``IsotonicRegression``, ``LogisticRegression``); applying is done here from
the fitted numbers so a saved model needs neither pickle nor scikit-learn at scoring time. Tests check
that the applied values equal scikit-learn's own predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

CalibrationMethod = Literal["isotonic", "platt", "none"]
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype="float64")))


@dataclass
class Calibrator:
    """Maps the booster's raw probability to a calibrated one.

    - ``isotonic``: piecewise-linear interpolation through (x, y), like
      ``IsotonicRegression(out_of_bounds="clip")``.
    - ``platt``: ``sigmoid(a * logit(p) + b)``, a logistic regression on the booster's log-odds.
    - ``none``: identity.
    """

    method: CalibrationMethod = "none"
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    def transform(self, raw_probability: np.ndarray) -> np.ndarray:
        p = np.asarray(raw_probability, dtype="float64")
        if self.method == "isotonic":
            return np.interp(p, self.x, self.y)
        if self.method == "platt":
            return sigmoid(self.a * logit(p) + self.b)
        return p

    def to_dict(self) -> dict:
        return {"method": self.method, "x": list(self.x), "y": list(self.y), "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        return cls(
            method=data.get("method", "none"),
            x=[float(v) for v in data.get("x", [])],
            y=[float(v) for v in data.get("y", [])],
            a=float(data.get("a", 1.0)),
            b=float(data.get("b", 0.0)),
        )

    @classmethod
    def fit(cls, method: CalibrationMethod, raw_probability: np.ndarray, labels: np.ndarray) -> Calibrator:
        """Fit on held-out (validation) predictions and labels with scikit-learn, keep the numbers."""
        p = np.asarray(raw_probability, dtype="float64")
        y = np.asarray(labels, dtype="float64")
        if method == "none":
            return cls("none")
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(p, y)
            return cls("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000).fit(logit(p).reshape(-1, 1), y)
            return cls("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
        raise ValueError(f"unknown calibration method {method!r}; expected isotonic, platt or none")
