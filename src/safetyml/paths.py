"""Where safetyml reads its configuration and writes its state.

Everything the package writes by default lives under ``SAFETYML_HOME`` (default ``.safetyml/`` in the
working directory): the MLflow store, the Optuna studies, the online store, the audit log, reports.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetyml import envvars

HOME_ENV = envvars.HOME
PROJECT_ENV = envvars.PROJECT_DIR


def home() -> Path:
    """The state folder, created on first use."""
    path = Path(os.environ.get(HOME_ENV, ".safetyml")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_dir() -> Path:
    """The folder holding ``features/``, ``training/``, ``serving/`` and ``experiments/``.

    ``SAFETYML_PROJECT_DIR`` wins; otherwise the first of the working directory and the source checkout
    that has a ``features/`` folder.
    """
    if env := os.environ.get(PROJECT_ENV):
        return Path(env).expanduser().resolve()
    candidates = [Path.cwd(), Path(__file__).resolve().parents[2]]
    for candidate in candidates:
        if (candidate / "features").is_dir():
            return candidate
    return Path.cwd()


def features_dir() -> Path:
    return project_dir() / "features"


def training_dir() -> Path:
    return project_dir() / "training"


def serving_dir() -> Path:
    return project_dir() / "serving"


def policies_dir() -> Path:
    return serving_dir() / "policies"


def experiments_dir() -> Path:
    return project_dir() / "experiments"
