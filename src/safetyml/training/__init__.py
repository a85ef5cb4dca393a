"""Training: time-split LightGBM tuned with Optuna, calibrated, evaluated, tracked and registered in MLflow.

Modules: ``config`` (one YAML per task), ``data`` (frame, features, usable rows), ``split``, ``tuning``,
``calibrate``, ``metrics``, ``pipeline`` (:func:`train`), ``truth`` (the optional evaluation against
simulator truth), ``promote`` (champion/challenger), ``experiments``, ``report`` and ``plots``.
Names are imported lazily, so ``import safetyml.training`` loads neither LightGBM nor MLflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetyml._lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _NAMES)
