"""A trained risk model: a LightGBM booster, its calibrator and its metadata, saved without pickle.

On disk a model is a folder with ``model.txt`` (LightGBM's own text format) and ``model.json`` (feature
list, categorical levels, calibrator, task and metadata). Scoring, explanation, serving and batch jobs
all use this one class, so a score means the same thing everywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from safetyml.calibration import Calibrator, sigmoid
from safetyml.errors import SafetymlError

MODEL_FILE = "model.txt"
SIDECAR_FILE = "model.json"
FORMAT_VERSION = 1


class FeatureMismatchError(SafetymlError, ValueError):
    """Scoring input lacks columns the model was trained on."""


def level_codes(column: pd.Series, levels: list[str]) -> np.ndarray:
    """The one categorical encoder: codes of ``pd.Categorical(column.astype("object"), categories=levels)``
    as floats (missing or unknown level: NaN), i.e. what :meth:`RiskModel.prepare` hands LightGBM."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        # Recode the column's own categories once instead of every value.
        position = pd.Index(levels, dtype="object").get_indexer(
            pd.Index(column.cat.categories.astype("object"), dtype="object")
        )
        mapping = np.append(position, -1).astype("float64")  # code -1 (missing) stays missing
        codes = mapping[column.cat.codes.to_numpy()]
    else:
        codes = pd.Categorical(column.astype("object"), categories=levels).codes.astype("float64")
    codes[codes < 0] = np.nan
    return codes


@dataclass
class RiskModel:
    """A LightGBM binary classifier with calibration.

    ``features`` is the model's input columns in order; ``categories`` fixes the levels of categorical
    features so their codes are the same in training and scoring (unknown levels become missing).
    """

    task: str
    booster: Any  # lightgbm.Booster
    features: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    calibrator: Calibrator = field(default_factory=Calibrator)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------- inputs
    def prepare(self, X: pd.DataFrame) -> pd.DataFrame:
        """Select the model's columns in order, with categorical levels fixed; extra columns are ignored."""
        missing = [name for name in self.features if name not in X.columns]
        if missing:
            raise FeatureMismatchError(
                f"{self.task} model needs {len(missing)} column(s) missing from the input: "
                f"{', '.join(missing[:10])}"
            )
        out = X.loc[:, self.features].copy()
        for name, levels in self.categories.items():
            out[name] = pd.Categorical(out[name].astype("object"), categories=levels)
        for name in self.features:
            if name not in self.categories and not pd.api.types.is_float_dtype(out[name]):
                out[name] = pd.to_numeric(out[name], errors="coerce").astype("float64")
        return out

    # ------------------------------------------------------------------------------------- scores
    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """The booster's log-odds (before calibration)."""
        return np.asarray(self.booster.predict(self.prepare(X), raw_score=True), dtype="float64")

    def predict_uncalibrated(self, X: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.predict_raw(X))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class (an incident, a credit event)."""
        return self.calibrator.transform(self.predict_uncalibrated(X))

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """Exact TreeSHAP values in log-odds: shape (n, n_features + 1), last column the expected value."""
        return np.asarray(self.booster.predict(self.prepare(X), pred_contrib=True), dtype="float64")

    # ------------------------------------------------------------------------------------- storage
    def sidecar(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "features": self.features,
            "categories": self.categories,
            "calibrator": self.calibrator.to_dict(),
            "metadata": self.metadata,
        }

    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / MODEL_FILE), num_iteration=-1)
        (folder / SIDECAR_FILE).write_text(json.dumps(self.sidecar(), indent=2, sort_keys=True, default=str))
        return folder

    @classmethod
    def load(cls, folder: Path) -> RiskModel:
        import lightgbm as lgb

        folder = Path(folder)
        model_path, sidecar_path = folder / MODEL_FILE, folder / SIDECAR_FILE
        for path in (model_path, sidecar_path):
            if not path.exists():
                raise FileNotFoundError(f"model folder {folder} has no {path.name}")
        sidecar = json.loads(sidecar_path.read_text())
        if sidecar.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{sidecar_path}: unsupported format_version {sidecar.get('format_version')!r}")
        booster = lgb.Booster(model_file=str(model_path))
        return cls(
            task=sidecar["task"],
            booster=booster,
            features=list(sidecar["features"]),
            categories={k: list(v) for k, v in sidecar.get("categories", {}).items()},
            calibrator=Calibrator.from_dict(sidecar.get("calibrator", {})),
            metadata=sidecar.get("metadata", {}),
        )
