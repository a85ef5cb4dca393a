"""The features commands: list, build, materialize, and a bad definition's error."""

from __future__ import annotations

import shutil

import pandas as pd
from typer.testing import CliRunner

from safetyml import paths
from safetyml.cli import app
from safetyml.features.definitions import load_feature_set
from safetyml.features.online import OnlineStore
from safetyml.tables import write_tables
from tests.test_features_data import make_tables

runner = CliRunner()


def _data(tmp_path):
    folder = tmp_path / "data"
    write_tables(make_tables(6), folder)
    return folder


def test_list_prints_every_definition_and_filters_by_task():
    fs = load_feature_set()
    result = runner.invoke(app, ["features", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "rider_incidents_30d" in result.output and "zone_incident_rate_30d" in result.output
    assert fs.version in result.output
    result = runner.invoke(app, ["features", "list", "--task", "merchant_credit"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "merchant_chargeback_rate_90d" in result.output and "rider_trips_count_7d" not in result.output
    assert f"{len(fs.for_task('merchant_credit'))} model columns" in result.output
    result = runner.invoke(app, ["features", "list", "--task", "fraud"])
    assert result.exit_code == 2 and "unknown task" in result.output


def test_build_writes_the_frame_and_reports_rows_and_positives(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    data = _data(tmp_path)
    out = tmp_path / "frames" / "incident.parquet"
    result = runner.invoke(
        app, ["features", "build", "incident_risk", "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out)
    assert (
        f"{len(frame):,} rows" in result.output
        and f"{int(frame['label'].sum()):,} positives" in result.output
    )
    assert len(frame) == 80 and "rider_incidents_30d" in frame.columns
    out = tmp_path / "credit.parquet"
    result = runner.invoke(
        app, ["features", "build", "merchant_credit", "--data", str(data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "insufficient history" in result.output and pd.read_parquet(out)["as_of"].dt.day.eq(1).all()


def test_build_rejects_invalid_tables_unless_quarantined(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    data = _data(tmp_path)
    trips = pd.read_parquet(data / "trips.parquet")
    trips.loc[0, "distance_km"] = -5.0
    trips.to_parquet(data / "trips.parquet", index=False)
    out = tmp_path / "f.parquet"
    args = ["features", "build", "incident_risk", "--data", str(data), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "distance_km" in result.output and not out.exists()
    result = runner.invoke(app, [*args, "--on-invalid", "quarantine"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(out)) == 79


def test_materialize_writes_the_store_and_prints_counts_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    data = _data(tmp_path)
    result = runner.invoke(app, ["features", "materialize", "--data", str(data), "--as-of", "2026-01-20"])
    assert result.exit_code == 0, result.output
    fs = load_feature_set()
    assert fs.version in result.output
    with OnlineStore.open() as store:
        meta = store.metadata()
    assert meta["version"] == fs.version and meta["as_of"].startswith("2026-01-20T00:00:00")
    assert meta["rows"]["rider"] == 6 and f"{meta['rows']['zone']:,}" in result.output
    result = runner.invoke(app, ["features", "materialize", "--data", str(data), "--as-of", "yesterday-ish"])
    assert result.exit_code == 2 and "--as-of" in result.output


def test_a_bad_definition_fails_with_file_feature_and_field(tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(paths.features_dir(), project / "features")
    path = project / "features" / "merchant.yaml"
    path.write_text(path.read_text().replace("    windows: [90d, 365d]\n", "    windows: 90 days\n"))
    monkeypatch.setenv("SAFETYML_PROJECT_DIR", str(project))
    result = runner.invoke(app, ["features", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "merchant.yaml" in text and "'merchant_late_repayments'" in text and "'windows'" in text
