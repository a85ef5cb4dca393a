"""The batch commands end to end on the small simulated preset with the session's trained champions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.batch.zones import ZONE_COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def features_file(trained_home, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.frames import build_frame
    from safetyml.tables import load_tables

    frame = build_frame("incident_risk", load_tables(trained_home.data_dir), load_feature_set())
    path = tmp_path_factory.mktemp("batch_cli") / "incident_risk.parquet"
    frame.to_parquet(path, index=False, row_group_size=10_000)
    return path


def test_score_zones_writes_table_geojson_map_and_logs_them_to_mlflow(trained_env, features_file, tmp_path):
    from safetyml.cli import app

    out = tmp_path / "zones"
    result = CliRunner().invoke(
        app,
        [
            "score-zones",
            "--data",
            str(trained_env.data_dir),
            "--window",
            "7d",
            "--out",
            str(out),
            "--features",
            str(features_file),
        ],
    )
    assert result.exit_code == 0, result.output
    zones = pd.read_parquet(out / "zones.parquet")
    assert list(zones.columns) == list(ZONE_COLUMNS)
    assert set(zones["band"]) == {"day", "night", "all"}
    assert (out / "zones.geojson").stat().st_size > 0 and (out / "zone_map.html").stat().st_size > 0
    # the last week's trips, scored: every window trip is in the "all" band once per distinct cell it touches
    frame = pd.read_parquet(features_file)
    window = frame[frame["as_of"] > frame["as_of"].max() - pd.Timedelta(days=7)]
    all_band = zones[zones["band"] == "all"]
    assert all_band["expected_incidents"].sum() > 0
    assert len(window) <= all_band["trips"].sum() <= 2 * len(window)
    # planted hot cells carry a higher risk multiplier than the rest, even on the small preset
    truth = pd.read_parquet(trained_env.data_dir / "truth" / "hot_zones.parquet")
    planted = all_band["h3"].isin(set(truth["h3"]))
    assert all_band.loc[planted, "risk_ratio"].median() > 1.3 * all_band.loc[~planted, "risk_ratio"].median()

    from mlflow.tracking import MlflowClient

    from safetyml import tracking

    tracking.configure()
    client = MlflowClient()
    experiment = client.get_experiment_by_name("zone-risk")
    runs = client.search_runs([experiment.experiment_id])
    assert runs and runs[0].info.status == "FINISHED"
    names = {Path(a.path).name for a in client.list_artifacts(runs[0].info.run_id, "zones")}
    assert names == {"zones.parquet", "zones.geojson", "zone_map.html"}
    assert runs[0].data.metrics["hotspots"] == zones["flagged"].sum()


def test_score_file_cli_scores_with_the_champion(trained_env, features_file, tmp_path):
    from safetyml import tracking
    from safetyml.cli import app

    out = tmp_path / "scored.parquet"
    result = CliRunner().invoke(
        app,
        [
            "score-file",
            "incident_risk",
            "--input",
            str(features_file),
            "--out",
            str(out),
            "--batch-rows",
            "7000",
        ],
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    frame = pd.read_parquet(features_file)
    model, _ = tracking.load_model("incident_risk", "champion")
    np.testing.assert_array_equal(scored["probability"].to_numpy(), model.predict_proba(frame))
    assert scored["trip_id"].tolist() == frame["trip_id"].tolist()
    assert (scored["model_version"] == "1").all()


def test_score_file_cli_names_bad_input(trained_env, tmp_path):
    from safetyml.cli import app

    result = CliRunner().invoke(
        app,
        [
            "score-file",
            "incident_risk",
            "--input",
            str(tmp_path / "nope.parquet"),
            "--out",
            str(tmp_path / "o.parquet"),
        ],
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(app, ["score-file", "fraud", "--input", "x", "--out", "y"])
    assert result.exit_code == 2 and "unknown task" in result.output
