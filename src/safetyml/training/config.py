"""Training configuration: one YAML per task (``training/<task>.yaml``) validated into pydantic models.

Experiments are the same config with overrides merged in (:func:`merge_overrides`), so every knob a
data scientist can turn is a field here, with a default and a bound.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safetyml import paths
from safetyml.errors import SafetymlError, validation_message
from safetyml.tasks import TASKS, Task

Metric = Literal["roc_auc", "pr_auc"]


class TrainingConfigError(SafetymlError, ValueError):
    """A training config file or override is invalid; the message names the file and the fields."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LabelConfig(_Strict):
    """How the label is defined and which rows may be used."""

    min_severity: int = Field(1, ge=1, le=5, description="incident_risk: lowest incident severity counted")
    horizon_days: int = Field(90, ge=1, description="merchant_credit: days after as_of a credit event counts")
    min_history_days: int = Field(60, ge=0, description="merchant_credit: history needed for a full profile")
    train_on_insufficient_history: bool = Field(
        True, description="merchant_credit: keep young merchants (flagged) in training and evaluation"
    )


class SplitConfig(_Strict):
    """Time split anchored on the latest as_of with a mature label: train | gap | valid | gap | test."""

    test_days: int = Field(14, ge=1)
    valid_days: int = Field(14, ge=1)
    gap_days: int = Field(0, ge=0, description="days left out before valid and before test (label maturity)")
    label_lag_days: int = Field(
        0,
        ge=0,
        description="rows this close to the latest as_of are left out: their labels are not yet known",
    )


class FeatureSelection(_Strict):
    """Which features of the task's feature set the model uses."""

    exclude: list[str] = Field(default_factory=list, description="feature names to leave out")
    exclude_groups: list[str] = Field(default_factory=list, description="feature groups to leave out")
    exclude_entities: list[str] = Field(default_factory=list, description="entities (e.g. zone) to leave out")
    exclude_windows: list[str] = Field(
        default_factory=list, description="feature windows (e.g. 90d) to leave out"
    )
    include: list[str] | None = Field(None, description="if set, only these features")


class SelectionConfig(_Strict):
    """Feature selection on the validation window (see :mod:`safetyml.training.selection`)."""

    enabled: bool = True
    method: Literal["grouped_permutation"] = "grouped_permutation"
    group_by: Literal["group", "family", "feature"] = Field(
        "group", description="the unit kept or dropped: a feature group (a declaration's windows), ..."
    )
    tolerance: float = Field(
        0.002, ge=0, le=0.5, description="drop a group whose shuffling costs at most this share of the lift"
    )
    confirm_tolerance: float = Field(
        0.01, ge=0, le=0.5, description="the kept set may lose at most this share of the lift on validation"
    )
    repeats: int = Field(2, ge=1, le=20, description="shuffles per group (averaged)")
    valid_rows: int | None = Field(
        150_000, ge=1000, description="judge on at most this many validation rows (seeded sample)"
    )
    learning_rate: float | None = Field(
        0.1, gt=0, le=1, description="learning rate of the selection fits (None: the config's)"
    )
    keep_groups: list[str] = Field(default_factory=list, description="groups never dropped")


class SearchParam(_Strict):
    """One dimension of the Optuna search space."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical search parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"{self.type} search parameter needs low <= high (got {self.low}, {self.high})")
        return self


class TuningConfig(_Strict):
    """Optuna: TPE sampler, median pruner, early stopping inside each trial."""

    trials: int = Field(20, ge=1)
    timeout_s: float | None = Field(600, gt=0)
    sample_rows: int | None = Field(
        300_000, ge=1000, description="tune on at most this many training rows (seeded sample), refit on all"
    )
    pruner_startup_trials: int = Field(3, ge=0)
    pruner_warmup_rounds: int = Field(30, ge=0)
    search_space: dict[str, SearchParam] = Field(default_factory=dict)


class CalibrationConfig(_Strict):
    """Calibrate on validation with whichever candidate gives the lowest cross-fitted log loss."""

    methods: list[Literal["isotonic", "platt", "none"]] = Field(default_factory=lambda: ["isotonic", "platt"])
    folds: int = Field(3, ge=2, le=10, description="time-ordered folds of validation used to choose")
    ece_bins: int = Field(10, ge=2, le=100)


class PromotionConfig(_Strict):
    margin: float = Field(0.005, ge=0, description="challenger may be this much worse on the primary metric")


class CreditScoreConfig(_Strict):
    """PDO scaling: ``points = offset + factor * ln(good:bad odds)``; grades by points cut-offs."""

    base_points: float = 600.0
    base_odds: float = Field(50.0, gt=0, description="good:bad odds that score base_points")
    pdo: float = Field(20.0, gt=0, description="points to double the good:bad odds")
    grades: dict[str, float] = Field(
        default_factory=lambda: {"A": 660.0, "B": 620.0, "C": 580.0, "D": 540.0},
        description="lowest points for each grade, best first; below the last is E",
    )

    @field_validator("grades")
    @classmethod
    def _descending(cls, grades: dict[str, float]) -> dict[str, float]:
        values = list(grades.values())
        if any(a <= b for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f"grade cut-offs must be strictly decreasing from best to worst, got {grades}")
        return grades


class TrainingConfig(_Strict):
    """Everything one training of a task needs apart from the data and the seed."""

    task: Task
    registered_model_name: str = Field(min_length=1)
    experiment_name: str | None = Field(None, description="MLflow experiment (default safetyml-<task>)")
    label: LabelConfig = Field(default_factory=LabelConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    features: FeatureSelection = Field(default_factory=FeatureSelection)
    monotone_constraints: bool | Literal["search"] = Field(
        "search", description="search: validation decides between constrained and free trees"
    )
    explanation_budget_ms: float | None = Field(
        2.0,
        gt=0,
        description="score + reasons p50 (CPU ms, one row): a deeper model over it is refit shallower",
    )
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    class_weight: Literal["search", "none", "balanced"] = Field(
        "search", description="search: let validation decide between none and balanced"
    )
    lightgbm: dict[str, Any] = Field(default_factory=dict)
    num_boost_round: int = Field(1000, ge=1)
    early_stopping_rounds: int = Field(50, ge=1)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    review_capacity: float = Field(0.02, gt=0, le=1, description="share of cases the review team can handle")
    primary_metric: Metric = "pr_auc"
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    credit_score: CreditScoreConfig | None = None

    @property
    def mlflow_experiment(self) -> str:
        return self.experiment_name or f"safetyml-{self.task}"

    def fingerprint(self) -> str:
        """Short hash of the whole config: the same config gives the same Optuna study name."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``overrides`` into ``base`` (dicts merge key by key; anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def config_path(task: str) -> Path:
    if task not in TASKS:
        raise TrainingConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return paths.training_dir() / f"{task}.yaml"


def read_config_dict(task: str) -> dict[str, Any]:
    """The raw YAML of a task's training config."""
    path = config_path(task)
    if not path.exists():
        raise TrainingConfigError(f"training config {path} not found (set SAFETYML_PROJECT_DIR?)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise TrainingConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def validate_config(data: dict[str, Any], source: str) -> TrainingConfig:
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise TrainingConfigError(validation_message(source, exc)) from None


def load_training_config(task: str, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """Read ``training/<task>.yaml``, merge ``overrides`` and validate; errors name file and field."""
    data = merge_overrides(read_config_dict(task), overrides)
    if data.get("task", task) != task:
        raise TrainingConfigError(
            f"{config_path(task)}: field task is {data.get('task')!r}, expected {task!r}"
        )
    data["task"] = task
    source = str(config_path(task)) + (" (with overrides)" if overrides else "")
    return validate_config(data, source)
