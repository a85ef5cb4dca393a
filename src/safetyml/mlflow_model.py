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


def _numeric(name: str, column: pd.Series) -> pd.Series:
    """A numeric model column as float64; text, categorical or date values raise an error naming it."""
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    ):
        return column.astype("float64")
    if pd.api.types.is_object_dtype(dtype):  # Python numbers and None (JSON input) are fine; text is not
        converted = pd.to_numeric(column, errors="coerce")
        bad = column.notna() & converted.isna()
        if not bad.any():
            return converted.astype("float64")
        example = column[bad].iloc[0]
        raise TypeError(
            f"column {name!r} is numeric: expected numbers or missing values, got "
            f"{type(example).__name__} values such as {example!r}"
        )
    raise TypeError(f"column {name!r} is numeric: expected a number dtype, got {dtype}")


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
        """The model's columns in order: categoricals on their fixed levels, the rest as float64.

        Accepts what ``safetyml features build`` writes (pandas Categorical or text columns, float or
        integer numbers, booleans) and refuses anything else with the column named, instead of silently
        scoring a wrong column as missing.
        """
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise ValueError(f"input lacks {len(missing)} model column(s): {', '.join(missing[:10])}")
        out = X.loc[:, self.features].copy()
        for name in self.features:
            column = out[name]
            if name in self.categories:
                values = column.astype("object")
                bad = values.notna() & ~values.map(lambda v: isinstance(v, str))
                if bad.any():
                    raise TypeError(
                        f"column {name!r} is categorical: expected text (one of "
                        f"{', '.join(self.categories[name][:8])}) or missing, got "
                        f"{type(values[bad].iloc[0]).__name__} values such as {values[bad].iloc[0]!r}"
                    )
                out[name] = pd.Categorical(values, categories=self.categories[name])
            else:
                out[name] = _numeric(name, column)
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
