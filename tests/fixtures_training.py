"""Session fixtures with real trained models: both tasks trained on the small preset (seed 7) and registered.

``trained_home`` trains once per session into its own SAFETYML_HOME (MLflow + Optuna in SQLite there),
with a tiny budget (2 trials, few boosting rounds) so both tasks take well under a minute. The first
version of each registered model is champion. Tests that read it must point SAFETYML_HOME at
``trained_home.home`` themselves (``monkeypatch.setenv``), or use the ``trained_env`` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from safetyml.envvars import environment

TASKS = ("incident_risk", "merchant_credit")
# Small but real: enough rounds for a useful model on the small preset, few enough to stay fast.
FAST_OVERRIDES: dict[str, Any] = {
    "num_boost_round": 80,
    "early_stopping_rounds": 20,
    "tuning": {"sample_rows": None, "pruner_warmup_rounds": 10, "pruner_startup_trials": 1},
}
TRIALS = 2
SEED = 7


@dataclass
class TrainedHome:
    """A SAFETYML_HOME with both tasks trained and registered (version 1 = champion = challenger)."""

    home: Path
    data_dir: Path
    results: dict[str, Any] = field(default_factory=dict)  # task -> TrainingResult


def safetyml_env(home: Path):
    """Set SAFETYML_HOME (and clear MLFLOW_TRACKING_URI) for the block, restoring both afterwards."""
    return environment({"SAFETYML_HOME": str(home), "MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None})


def train_fast(task: str, data_dir: Path, seed: int = SEED, **kwargs: Any) -> Any:
    """Train ``task`` with the fast test budget (SAFETYML_HOME must already be set)."""
    from safetyml.training.config import merge_overrides
    from safetyml.training.pipeline import train

    overrides = merge_overrides(FAST_OVERRIDES, kwargs.pop("config_overrides", None))
    return train(
        task,
        data_dir,
        trials=kwargs.pop("trials", TRIALS),
        seed=seed,
        config_overrides=overrides,
        progress=False,
        **kwargs,
    )


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory, small_data_dir: Path) -> TrainedHome:
    """Both models trained on the small preset (seed 7, 2 trials) and registered; v1 of each is champion."""
    from safetyml.tables import load_tables

    home = tmp_path_factory.mktemp("trained_home")
    tables = load_tables(small_data_dir)
    with safetyml_env(home):
        results = {task: train_fast(task, small_data_dir, tables=tables) for task in TASKS}
    return TrainedHome(home=home, data_dir=small_data_dir, results=results)


@pytest.fixture
def trained_env(trained_home: TrainedHome, monkeypatch: pytest.MonkeyPatch) -> TrainedHome:
    """``trained_home`` with SAFETYML_HOME pointing at it for the duration of one test."""
    monkeypatch.setenv("SAFETYML_HOME", str(trained_home.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return trained_home


@pytest.fixture(scope="session")
def credit_frame(small_data_dir: Path) -> tuple[Any, list[Any], dict[str, Any]]:
    """The merchant-credit frame of the small preset (usable rows), its features and the fast overrides."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.tables import load_tables
    from safetyml.training.config import load_training_config
    from safetyml.training.data import build_task_frame, select_features, usable_rows

    config = load_training_config("merchant_credit", FAST_OVERRIDES)
    fs = load_feature_set()
    frame, _ = usable_rows(build_task_frame(load_tables(small_data_dir), fs, config), config)
    return frame, select_features(fs, config), FAST_OVERRIDES
