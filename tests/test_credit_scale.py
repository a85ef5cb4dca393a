"""The credit-score scale comes from training/merchant_credit.yaml on every path: change the YAML (in a temp
project folder) and training, the scorer (serving and batch), ``explain case`` and the report all follow."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from safetyml import paths
from safetyml.credit_score import credit_of, credit_scale
from safetyml.tasks import MERCHANT_CREDIT
from safetyml.training.config import CreditScoreConfig, load_training_config
from tests.batch_support import StubFeatureSet, make_scorer, synthetic_frame, trained_model

CHANGED = {"base_points": 450.0, "base_odds": 20.0, "pdo": 45.0, "grades": {"A": 520.0, "B": 480.0}}


@pytest.fixture(scope="module")
def merchant_model():
    model = trained_model(synthetic_frame(2_000, seed=3))
    model.task = MERCHANT_CREDIT
    return model


@pytest.fixture
def changed_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source = paths.project_dir()
    for folder in ("features", "training", "serving"):
        shutil.copytree(source / folder, tmp_path / folder)
    config_file = tmp_path / "training" / "merchant_credit.yaml"
    raw = yaml.safe_load(config_file.read_text())
    raw["credit_score"] = CHANGED
    config_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SAFETYML_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("SAFETYML_POLICIES", raising=False)
    return tmp_path


def _expected(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return credit_of(p, CreditScoreConfig(**CHANGED))


def test_the_changed_scale_differs_from_the_defaults() -> None:
    p = np.array([0.01, 0.05, 0.2])
    assert not np.allclose(_expected(p)[0], credit_of(p, CreditScoreConfig())[0])


def test_training_reads_the_scale_from_the_yaml(changed_project: Path) -> None:
    from safetyml.training.pipeline import credit_grade_table

    config = load_training_config(MERCHANT_CREDIT)
    assert credit_scale(config) == CreditScoreConfig(**CHANGED) == credit_scale()
    p = np.array([0.002, 0.01, 0.05, 0.3])
    table = credit_grade_table(p, np.array([0, 0, 1, 1]), config)
    assert sorted(table["grade"]) == sorted(set(_expected(p)[1]))


def test_the_scorer_for_serving_and_batch_follows_the_yaml(changed_project: Path, merchant_model) -> None:
    from safetyml.batch.score_file import read_scores, score_file

    frame = synthetic_frame(300, seed=4)
    scorer = make_scorer(merchant_model)  # built like the service's: no scale given, so the project's
    scored = scorer.score_features(MERCHANT_CREDIT, frame)
    points, grades = _expected(scored["probability"].to_numpy())
    np.testing.assert_allclose(scored["credit_score"].to_numpy(), points)
    assert scored["grade"].tolist() == grades.tolist()

    path, out = changed_project / "frame.parquet", changed_project / "scores.parquet"
    frame.to_parquet(path, index=False)
    score_file(MERCHANT_CREDIT, path, out, scorer=scorer, batch_size=100, progress=False)
    np.testing.assert_allclose(read_scores(out)["credit_score"].to_numpy(), points)


def test_explain_case_and_the_report_follow_the_yaml(
    changed_project: Path, merchant_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetyml.cli import app
    from safetyml.cli import explain as cli_explain
    from safetyml.explain.report import _credit

    frame = synthetic_frame(50, seed=5)
    ref = SimpleNamespace(name="safetyml-merchant-credit", version="3", run_id="r")
    monkeypatch.setattr(cli_explain, "_champion", lambda task: (merchant_model, ref))
    monkeypatch.setattr(cli_explain, "_frame", lambda task, data: (None, StubFeatureSet(), frame))
    merchant = str(frame["merchant_id"].iloc[0])
    latest = frame[frame["merchant_id"] == merchant].sort_values("as_of").iloc[[-1]]
    p = merchant_model.predict_proba(latest)
    result = CliRunner().invoke(
        app,
        ["explain", "case", MERCHANT_CREDIT, "--id", merchant, "--data", str(changed_project)],
        env={"COLUMNS": "240"},
    )
    assert result.exit_code == 0, result.output
    points, grades = _expected(p)
    assert f"credit score {points[0]:.0f} (grade {grades[0]})" in result.output

    report_points, report_grades = _credit(p, merchant_model)
    np.testing.assert_allclose(report_points, points)
    assert report_grades.tolist() == grades.tolist()
    assert isinstance(latest, pd.DataFrame)
