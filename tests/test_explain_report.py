"""The policy review report (synthetic model, then the real pipeline through the CLI) and `explain case`."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.explain.cohorts import global_importance, grouped_contributions
from safetyml.explain.report import ModelInfo, write_model_report
from safetyml.explain.shap_values import explain_logodds
from tests.explain_support import feature_set, synthetic_frame, train_model

REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
SECTIONS = ("model-card", "global-importance", "dependence", "cohorts", "examples")


def _frame(n: int, seed: int) -> pd.DataFrame:
    frame = synthetic_frame(n, seed=seed)
    start = pd.Timestamp("2026-03-01", tz="UTC")
    frame["as_of"] = start + pd.to_timedelta(np.linspace(0, 60 * 86400, n), unit="s")
    return frame


@pytest.fixture(scope="module")
def model():
    model = train_model(synthetic_frame(3000, seed=1), rounds=40)
    model.metadata["split"] = {
        "train_end": "2026-01-31",
        "valid_start": "2026-02-01",
        "valid_end": "2026-02-28",
        "test_start": "2026-04-01",
        "test_end": "2026-04-30",
    }
    return model


def assert_self_contained(text: str) -> None:
    assert not REMOTE.search(text), REMOTE.search(text).group(0)
    assert "<script" not in text.lower() and "<link" not in text.lower() and "@import" not in text
    images = re.findall(r'<img[^>]*src="([^"]*)"', text)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)


@pytest.mark.slow  # matplotlib charts and 1,000 rows explained: a few seconds
def test_report_content_comes_from_the_data(model, tmp_path: Path) -> None:
    frame = _frame(4000, seed=2)
    fs = feature_set()
    out = tmp_path / "report.html"
    info = ModelInfo(
        name="safetyml-incident-risk",
        version="7",
        run_id="abc123",
        alias="champion",
        run_metrics={"test_roc_auc": 0.71234, "valid_best_pr_auc": 0.2},
    )
    result = write_model_report(
        model, frame, fs, out, cohort="city", sample=1000, seed=3, info=info, n_boot=100
    )
    text = out.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in text
    assert_self_contained(text)
    # the test period only (as_of from 2026-04-01), then a sample of 1,000 of it
    test_rows = frame[frame["as_of"] >= pd.Timestamp("2026-04-01", tz="UTC")]
    assert result.rows_explained == 1000 and result.rows_available == len(frame)
    assert "1,000 rows explained (test period (as_of ≥ 2026-04-01)" in html.unescape(text)
    assert "version</th><td>7 (champion)" in text and "test_roc_auc" in text and "0.7123" in text
    assert "valid_best_pr_auc" not in text  # the card shows test metrics only
    # the importance table's first group is the data's top group by mean |SHAP|
    pick = np.sort(np.random.default_rng(3).choice(len(test_rows), size=1000, replace=False))
    rows = test_rows.iloc[pick].reset_index(drop=True)
    contrib = explain_logodds(model, rows)
    grouped = grouped_contributions(contrib, model.features, {f.name: f.group for f in fs.features})
    top = global_importance(grouped).iloc[0]
    first = re.search(
        r"<th>share</th></tr>\s*<tr><td[^>]*>1</td><td>([^<]+)</td><td[^>]*>([\d.]+)</td>", text
    )
    assert first.group(1) == top["name"] and float(first.group(2)) == pytest.approx(top["mean_abs"], abs=1e-4)
    observed = rows["label"].mean()
    assert f"observed label rate of {100 * observed:.2f}%" in text
    for city in ("rio", "sao_paulo", "recife"):
        assert f'<td>{city}</td><td class="num">{(rows["city"] == city).sum():,}</td>' in text
    assert "In rio, zone_night_risk drives scores more than in" in text
    assert text.count('class="case"') == 6
    # the highest-scored row is the first example
    best = rows.iloc[int(np.argmax(model.predict_proba(rows)))]
    assert text.index(f"trip_id {best['trip_id']}") < text.index("random case")


@pytest.mark.slow
def test_report_size_does_not_grow_with_rows(model, tmp_path: Path) -> None:
    fs = feature_set()
    small = write_model_report(
        model, _frame(3000, 4), fs, tmp_path / "small.html", sample=None, period="all", n_boot=50
    )
    large = write_model_report(
        model, _frame(20_000, 4), fs, tmp_path / "large.html", sample=None, period="all", n_boot=50
    )
    assert large.rows_explained == 20_000
    assert large.bytes < 1_000_000 and large.bytes < 1.3 * small.bytes


# ---------------------------------------------------------------------------------------------- real pipeline


def _cli(args: list[str]):
    from safetyml.cli import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def real(trained_home):
    """Frames, feature set and champions of the trained small data, built once for these tests."""
    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.frames import build_frame
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env

    fs = load_feature_set()
    tables = load_tables(trained_home.data_dir)
    with safetyml_env(trained_home.home):
        champions = {
            task: tracking.load_model(task, "champion") for task in ("incident_risk", "merchant_credit")
        }
    frames = {task: build_frame(task, tables, fs) for task in champions}
    return {"fs": fs, "frames": frames, "champions": champions}


@pytest.mark.slow
def test_cli_report_for_the_champion_is_logged_to_its_run(trained_env, real, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from safetyml import tracking

    out = tmp_path / "incident_risk.html"
    output = _cli(
        [
            "explain",
            "report",
            "incident_risk",
            "--data",
            str(trained_env.data_dir),
            "--out",
            str(out),
            "--sample",
            "3000",
        ]
    )
    assert f"wrote {out}" in output.replace("\n", "")
    text = out.read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in text
    assert_self_contained(text)
    assert out.stat().st_size < 1_000_000
    _, ref = real["champions"]["incident_risk"]
    assert f"<code>{ref.run_id}</code>" in text and ref.name in text
    auc = tracking.run_info(ref.run_id)["metrics"]["test_roc_auc"]
    assert f"{auc:.4g}" in text
    frame = real["frames"]["incident_risk"]
    assert f"out of {len(frame):,} available" in text
    for city in frame["city"].unique():
        assert f"<td>{city}</td>" in text  # every city of the data is a cohort row
    tracking.configure()
    logged = [a.path for a in MlflowClient().list_artifacts(ref.run_id, "explanations")]
    assert "explanations/incident_risk.html" in logged


@pytest.mark.slow
def test_cli_report_for_merchants_by_category(trained_env, real, tmp_path: Path) -> None:
    out = tmp_path / "merchant_credit.html"
    _cli(
        [
            "explain",
            "report",
            "merchant_credit",
            "--data",
            str(trained_env.data_dir),
            "--out",
            str(out),
            "--cohort",
            "merchant_category",
            "--no-log",
        ]
    )
    text = out.read_text()
    assert_self_contained(text)
    assert "Cohort comparison by merchant_category" in text
    assert "points, grade" in text  # example merchants show their credit score
    assert "<td>restaurant</td>" in text


@pytest.mark.slow
def test_cli_case_prints_the_score_and_its_reasons(trained_env, real) -> None:
    from safetyml.explain.reasons import reason_codes

    frame = real["frames"]["incident_risk"]
    model, _ = real["champions"]["incident_risk"]
    p = model.predict_proba(frame)
    i = int(np.argmax(p))
    row = frame.iloc[[i]]
    output = _cli(
        [
            "explain",
            "case",
            "incident_risk",
            "--id",
            str(row["trip_id"].iloc[0]),
            "--data",
            str(trained_env.data_dir),
        ]
    )
    assert f"score {100 * p[i]:.2f}%" in output
    expected = reason_codes(model, row, real["fs"], k=3, include_negative=True)[0]
    assert expected
    for reason in expected:
        assert reason.text in output and reason.feature in output


@pytest.mark.slow
def test_cli_case_for_a_merchant_uses_its_latest_snapshot(trained_env, real) -> None:
    from safetyml.credit_score import credit_points, credit_scale

    frame = real["frames"]["merchant_credit"]
    merchant = frame["merchant_id"].iloc[0]
    latest = frame[frame["merchant_id"] == merchant].sort_values("as_of").iloc[[-1]]
    model, _ = real["champions"]["merchant_credit"]
    p = float(model.predict_proba(latest)[0])
    output = _cli(
        ["explain", "case", "merchant_credit", "--id", str(merchant), "--data", str(trained_env.data_dir)]
    )
    assert f"score {100 * p:.2f}%" in output
    assert f"credit score {float(credit_points(p, credit_scale())):.0f}" in output
    assert str(latest["as_of"].iloc[0]) in output


def test_cli_case_names_an_unknown_task() -> None:
    from safetyml.cli import app

    result = CliRunner().invoke(app, ["explain", "case", "fraud", "--id", "X"], env={"COLUMNS": "240"})
    assert result.exit_code == 2
    assert "fraud" in result.output and "incident_risk" in result.output


def test_cohorts_come_from_the_frame_or_the_rider_and_merchant_tables() -> None:
    from types import SimpleNamespace

    from safetyml.explain.report import cohort_values

    frame = pd.DataFrame(
        {"rider_id": ["r1", "r2", "r9"], "merchant_id": ["m1", "m2", "m1"], "city": ["a", "b", "a"]}
    )
    tables = SimpleNamespace(
        riders=pd.DataFrame({"rider_id": ["r1", "r2"], "vehicle_type": ["bicycle", "car"]}),
        merchants=pd.DataFrame({"merchant_id": ["m1", "m2"], "category": ["grocery", "pharmacy"]}),
    )
    p = np.array([0.1, 0.5, 0.9])
    assert list(cohort_values(frame, "city", p, tables)) == ["a", "b", "a"]
    assert list(cohort_values(frame, "vehicle_type", p, tables)) == ["bicycle", "car", "unknown"]
    assert list(cohort_values(frame, "merchant_category", p, tables)) == ["grocery", "pharmacy", "grocery"]
    assert list(cohort_values(frame, "score_band", p, tables)) == ["1: bottom 50%", "2: 50–90%", "4: top 1%"]
    with pytest.raises(ValueError, match="payment_method"):
        cohort_values(frame, "payment_method", p, tables)
