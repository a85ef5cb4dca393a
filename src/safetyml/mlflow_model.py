"""MLflow "model from code" for a safetyml risk model: calibrated probabilities, no pickle.

Logged with ``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})``. It is
self-contained on purpose (numpy, pandas, lightgbm, json; no safetyml import), so anyone with MLflow
can ``mlflow.pyfunc.load_model(uri).predict(df)`` and get the same numbers as
``safetyml.model.RiskModel.predict_proba``: booster log-odds → sigmoid → calibrator.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

_EPS = 1e-6


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class SafetyRiskModel(mlflow.pyfunc.PythonModel):
    """Loads ``model.txt`` (LightGBM text) and ``model.json`` (features, categories, calibrator)."""

    def load_context(self, context) -> None:
        import lightgbm as lgb

        folder = Path(context.artifacts["model_dir"])
        self.sidecar = json.loads((folder / "model.json").read_text())
        self.booster = lgb.Booster(model_file=str(folder / "model.txt"))
        self.features = list(self.sidecar["features"])
        self.categories = {k: list(v) for k, v in self.sidecar.get("categories", {}).items()}
        self.calibrator = self.sidecar.get("calibrator", {"method": "none"})

    def _prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise ValueError(f"input lacks {len(missing)} model column(s): {', '.join(missing[:10])}")
        out = X.loc[:, self.features].copy()
        for name in self.features:
            if name in self.categories:
                out[name] = pd.Categorical(out[name].astype("object"), categories=self.categories[name])
            else:
                out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
        return out

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        cal = self.calibrator
        if cal.get("method") == "isotonic":
            return np.interp(p, cal["x"], cal["y"])
        if cal.get("method") == "platt":
            q = np.clip(p, _EPS, 1 - _EPS)
            return _sigmoid(float(cal["a"]) * np.log(q / (1 - q)) + float(cal["b"]))
        return p

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Calibrated probability of the positive class, one per input row.

        The DataFrame hint keeps MLflow validating input against the logged signature.
        """
        raw = np.asarray(
            self.booster.predict(self._prepare(pd.DataFrame(model_input)), raw_score=True), dtype="float64"
        )
        return self._calibrate(_sigmoid(raw))


mlflow.models.set_model(SafetyRiskModel())
