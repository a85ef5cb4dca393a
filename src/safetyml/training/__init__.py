"""Training: time-split LightGBM tuned with Optuna, calibrated, evaluated, tracked and registered in MLflow.

Modules: ``config`` (one YAML per task), ``data`` (frame, features, usable rows), ``split``, ``tuning``,
``calibrate``, ``metrics``, ``pipeline`` (:func:`train`), ``truth`` (the optional evaluation against
simulator truth), ``promote`` (champion/challenger), ``experiments``, ``report`` and ``plots``.
Names are imported lazily, so ``import safetyml.training`` loads neither LightGBM nor MLflow.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safetyml.training.config import TrainingConfig, load_training_config
    from safetyml.training.pipeline import TrainingResult, train
    from safetyml.training.promote import promote

_NAMES = {
    "TrainingConfig": "config",
    "load_training_config": "config",
    "TrainingResult": "pipeline",
    "train": "pipeline",
    "promote": "promote",
}
__all__ = ["TrainingConfig", "TrainingResult", "load_training_config", "promote", "train"]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(import_module(f"safetyml.training.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'safetyml.training' has no attribute {name!r}")
