"""Experiments (YAML overrides) and the training CLI commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safetyml import paths
from safetyml.training.config import TrainingConfigError, load_training_config
from safetyml.training.experiments import load_experiment, run_experiment
from tests.fixtures_training import FAST_OVERRIDES

runner = CliRunner()


def _shipped() -> list[Path]:
    return sorted(paths.experiments_dir().glob("*.yaml"))


def test_at_least_three_experiments_ship_and_validate():
    files = _shipped()
    assert len(files) >= 3
    for path in files:
        spec = load_experiment(path)
        assert spec.name == path.stem
        config = load_training_config(spec.task, spec.overrides)
        assert config != load_training_config(spec.task)  # each changes something


def test_bad_experiment_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ntask: incident_risk\ndescription: broken\noverrides:\n  split:\n    gap_days: -1\n"
    )
    with pytest.raises(TrainingConfigError, match=r"split\.gap_days"):
        load_experiment(bad)
    bad.write_text("name: bad\ntask: incident_risk\n")
    with pytest.raises(TrainingConfigError, match=rf"(?s){re.escape(str(bad))}.*field description"):
        load_experiment(bad)


@pytest.mark.slow
def test_experiment_is_compared_with_the_champion_and_not_registered(trained_env):
    from safetyml import tracking

    path = paths.experiments_dir() / "no_zone_features.yaml"
    out = run_experiment(
        path, trained_env.data_dir, trials=1, seed=7, progress=False, budget_overrides=FAST_OVERRIDES
    )
    result = out.result
    assert not [f for f in result.model.features if f.startswith(("pickup_", "dropoff_"))]
    assert result.model_version is None
    assert result.experiment == "safetyml-experiment-no_zone_features"
    assert tracking.get_alias("safetyml-incident-risk", "challenger").version == "1"
    assert out.champion_version == "1"
    champion = trained_env.results["incident_risk"]
    # the champion is scored on the experiment's own test rows: the same rows as its own test split here
    assert out.champion_metrics["rows"] == result.metrics["rows"]
    assert out.champion_metrics["roc_auc"] == pytest.approx(champion.metrics["roc_auc"])


def test_cli_errors_are_actionable(tmp_path, monkeypatch):
    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    out = runner.invoke(app, ["train", "fraud", "--data", str(tmp_path)])
    assert out.exit_code == 2 and "unknown task 'fraud'" in out.output
    out = runner.invoke(app, ["train", "incident_risk", "--data", str(tmp_path / "nowhere")])
    assert out.exit_code == 2 and "does not exist" in out.output
    out = runner.invoke(app, ["promote", "incident_risk", "--force"])
    assert out.exit_code == 2 and "--reason" in out.output


@pytest.mark.slow
def test_cli_promote_reports_the_decision(trained_env):
    from safetyml.cli import app

    out = runner.invoke(app, ["promote", "merchant_credit"])
    assert out.exit_code == 0, out.output
    assert "already the champion" in out.output
