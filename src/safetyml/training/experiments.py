"""Experiments: a YAML override of a task's training config, trained under its own MLflow experiment.

An experiment file holds ``name``, ``task``, ``description`` and ``overrides`` (merged into
``training/<task>.yaml``). Its model is logged in the experiment's run but not registered, so an
experiment can never become challenger or champion by accident; it is compared with the champion on
the experiment's own test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safetyml.errors import validation_message
from safetyml.training.config import TrainingConfigError, load_training_config

if TYPE_CHECKING:
    import pandas as pd

    from safetyml.tables import Tables

EXPERIMENT_PREFIX = "safetyml-experiment-"


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    task: str
    description: str = Field(min_length=3)
    overrides: dict[str, Any] = Field(default_factory=dict)


@dataclass
class ExperimentResult:
    spec: ExperimentSpec
    result: Any  # TrainingResult
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    notes: list[str] = field(default_factory=list)


def load_experiment(path: Path) -> ExperimentSpec:
    """Read and validate an experiment file (its overrides are validated against the task's config)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"experiment file {path} not found")
    try:
        spec = ExperimentSpec.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as exc:
        raise TrainingConfigError(validation_message(f"experiment file {path}", exc)) from None
    load_training_config(spec.task, spec.overrides)  # fail early, naming the file's bad override
    return spec


def run_experiment(
    path: Path,
    data_dir: Path,
    trials: int | None = None,
    timeout: float | None = None,
    seed: int = 0,
    progress: bool = True,
    budget_overrides: dict[str, Any] | None = None,
    tables: Tables | None = None,
    frame: pd.DataFrame | None = None,
) -> ExperimentResult:
    """Train the experiment (not registered) and score the task's champion, if any, on the same test rows.

    ``budget_overrides`` (e.g. fewer boosting rounds) are merged under the experiment's own overrides;
    ``frame`` reuses the task frame (see :func:`~safetyml.training.pipeline.train`).
    """
    from safetyml import tracking
    from safetyml.training.config import merge_overrides
    from safetyml.training.metrics import classification_metrics
    from safetyml.training.pipeline import train

    spec = load_experiment(path)
    overrides = merge_overrides(budget_overrides or {}, spec.overrides)
    result = train(
        spec.task,
        data_dir,
        trials=trials,
        timeout=timeout,
        seed=seed,
        config_overrides=overrides,
        experiment=EXPERIMENT_PREFIX + spec.name,
        register=False,
        progress=progress,
        tables=tables,
        frame=frame,
    )
    notes = []
    try:
        champion, ref = tracking.load_model(spec.task, "champion")
    except LookupError as exc:
        notes.append(str(exc))
        return ExperimentResult(spec, result, None, None, notes)
    test = result.test_frame
    y = test["label"].to_numpy()
    champion_metrics = classification_metrics(
        y, champion.predict_proba(test), result.config.review_capacity, result.config.calibration.ece_bins
    )
    return ExperimentResult(spec, result, ref.version, champion_metrics, notes)
