"""MLflow tracking and registry on a real SQLite store: runs, nested trials, pyfunc model, aliases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _client():
    from mlflow import MlflowClient

    from safetyml import tracking

    uri = tracking.configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_configure_uses_the_embedded_store_without_touching_the_environment(tmp_path, monkeypatch):
    from safetyml import tracking

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.configure()
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # mlflow exports it; we undo that
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'team.db'}")
    assert tracking.configure() == f"sqlite:///{tmp_path / 'team.db'}"


@pytest.mark.parametrize("task", ["incident_risk", "merchant_credit"])
def test_champion_loads_as_risk_model_and_as_plain_pyfunc(trained_env, task):
    import mlflow

    from safetyml import tracking

    model, ref = tracking.load_model(task, "champion")
    assert (ref.task, ref.version, ref.alias) == (task, "1", "champion")
    assert ref.run_id == trained_env.results[task].run_id
    test = trained_env.results[task].test_frame.head(300)
    expected = trained_env.results[task].model.predict_proba(test)
    assert np.allclose(model.predict_proba(test), expected, rtol=0, atol=1e-12)

    pyfunc = mlflow.pyfunc.load_model(ref.uri())
    plain = test[model.features].copy()
    for name in model.categories:  # a plain MLflow user sends strings, not pandas categoricals
        plain[name] = plain[name].astype("object")
    assert np.allclose(np.asarray(pyfunc.predict(plain)), expected, rtol=0, atol=1e-12)


def _features_build_frame(data_dir: Path, task: str, out: Path):
    """The frame exactly as ``safetyml features build`` writes it, read back from its Parquet file."""
    import pandas as pd
    from typer.testing import CliRunner

    from safetyml.cli import app

    result = CliRunner().invoke(app, ["features", "build", task, "--data", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return pd.read_parquet(out)


@pytest.mark.parametrize("task", ["incident_risk", "merchant_credit"])
def test_plain_pyfunc_scores_a_features_build_frame(trained_env, task, tmp_path):
    """mlflow.pyfunc on the Parquet of `safetyml features build` (categoricals as pandas Categorical)."""
    import mlflow
    import pandas as pd

    from safetyml import tracking

    model, ref = tracking.load_model(task, "champion")
    frame = _features_build_frame(trained_env.data_dir, task, tmp_path / "frame.parquet").head(2000)
    # the case that failed: "Can not safely convert category to <U0" (selection may drop a categorical;
    # the frame keeps it, and the next test checks a champion that uses one)
    assert any(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in frame.columns)
    assert all(isinstance(frame[name].dtype, pd.CategoricalDtype) for name in model.categories)
    got = np.asarray(mlflow.pyfunc.load_model(ref.uri()).predict(frame))
    assert np.allclose(got, model.predict_proba(frame), rtol=0, atol=1e-12)


def test_plain_pyfunc_names_the_column_of_a_wrong_dtype(trained_env):
    import mlflow

    from safetyml import tracking

    models = {task: tracking.load_model(task, "champion") for task in trained_env.results}
    with_categories = [task for task, (model, _) in models.items() if model.categories]
    assert with_categories, "no champion uses a categorical feature: the Categorical path is untested"
    task = with_categories[0]
    model, ref = models[task]
    pyfunc = mlflow.pyfunc.load_model(ref.uri())
    frame = trained_env.results[task].test_frame.head(50)
    categorical = next(iter(model.categories))
    numeric = next(f for f in model.features if f not in model.categories)
    bad_category = frame.copy()
    bad_category[categorical] = np.arange(len(frame))  # numbers where text levels are expected
    with pytest.raises(Exception, match=rf"column '{categorical}' is categorical: expected text"):
        pyfunc.predict(bad_category)
    bad_number = frame.copy()
    bad_number[numeric] = "high"  # text where a number is expected
    with pytest.raises(Exception, match=rf"(?i)column '?{numeric}'?"):
        pyfunc.predict(bad_number)
    from mlflow.types.schema import AnyType, DataType

    schema = {c.name: c.type for c in pyfunc.metadata.get_input_schema().inputs}
    assert list(schema) == model.features
    assert schema[numeric] == DataType.double and isinstance(schema[categorical], AnyType)


def test_model_artifacts_hold_no_pickle(trained_env):
    from safetyml import tracking

    tracking.load_model("merchant_credit", "champion")
    cached = trained_env.home / "models" / "safetyml-merchant-credit" / "1"
    files = [p for p in cached.rglob("*") if p.is_file()]
    assert any(p.name == "model.txt" for p in files) and any(p.name == "model.json" for p in files)
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib", ".cloudpickle")]


def test_run_has_nested_trials_params_fingerprints_and_artifacts(trained_env):
    result = trained_env.results["incident_risk"]
    client = _client()
    run = client.get_run(result.run_id)
    assert run.data.params["data_fingerprint"] == run.data.tags["safetyml.data_fingerprint"]
    assert len(run.data.params["data_fingerprint"]) == 64
    assert run.data.params["feature_set_version"] == result.model.metadata["feature_set_version"]
    assert run.data.params["class_weight"] == result.class_weight
    assert run.data.tags.get("mlflow.source.git.commit") != "None"  # absent, or a real commit
    assert run.data.metrics["seconds_total"] >= run.data.metrics["seconds_tune_fit_calibrate"] > 0
    assert run.data.metrics["test_pr_auc"] == pytest.approx(result.metrics["pr_auc"])
    assert run.data.metrics["oracle_share"] == pytest.approx(result.oracle_share)
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == result.tuning.trials_complete + result.tuning.trials_pruned
    assert all("learning_rate" in c.data.params for c in children)
    names = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert names == {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/lift.png"}
    local = client.download_artifacts(result.run_id, "features/features.json", str(trained_env.home / "dl"))
    features = json.loads(Path(local).read_text())
    assert [f["name"] for f in features] == result.model.features
    assert all(f["description"] for f in features)


def test_log_artifacts_and_job_runs(trained_env, tmp_path):
    from safetyml import tracking

    report = tmp_path / "report.html"
    report.write_text("<h1>report</h1>")
    run_id = trained_env.results["merchant_credit"].run_id
    tracking.log_artifacts(run_id, [report], "explanations")
    client = _client()
    assert [a.path for a in client.list_artifacts(run_id, "explanations")] == ["explanations/report.html"]

    with tracking.start_job_run("safetyml-test-jobs", "score-zones") as job:
        job.log_params({"city": "sao_paulo", "window": {"days": 7}})
        job.log_metrics({"zones": 12.0})
        job.log_artifacts([report], "maps")
    finished = client.get_run(job.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params == {"city": "sao_paulo", "window.days": "7"}
    assert finished.data.metrics == {"zones": 12.0}


def test_missing_alias_is_a_clear_lookup_error(trained_env):
    from safetyml import tracking

    with pytest.raises(LookupError, match=r"safetyml-incident-risk.*'shadow'.*safetyml train incident_risk"):
        tracking.load_model("incident_risk", "shadow")


def test_ui_command_binds_to_localhost_on_the_embedded_store(tmp_path, monkeypatch):
    from safetyml import tracking

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cmd = tracking.ui_command(5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5123"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (tmp_path / "mlartifacts").as_uri()


def test_a_sibling_workers_finished_download_is_kept_not_replaced(trained_env, monkeypatch):
    """Two serving workers may download the same version at once. The one that finishes second must keep
    the first one's copy (which that worker may be reading) and drop its own, not delete and replace it:
    replacing it pulled model.txt from under the reader, and a worker started without its challenger."""
    import shutil

    import mlflow

    from safetyml import tracking
    from safetyml.training.config import load_training_config

    name = load_training_config("incident_risk").registered_model_name
    cache = tracking._model_cache(name, "1")
    shutil.rmtree(cache, ignore_errors=True)
    real = mlflow.artifacts.download_artifacts
    sibling: dict[str, int] = {}

    def download_while_a_sibling_finishes(*args, **kwargs):
        out = real(*args, **kwargs)
        shutil.copytree(kwargs["dst_path"], cache)  # the sibling's rename landed first
        sidecar = sorted(cache.rglob(tracking.SIDECAR_FILE))[0]
        sibling["inode"] = sidecar.stat().st_ino
        return out

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download_while_a_sibling_finishes)
    model = tracking.load_model_version(name, "1")
    assert model.features
    sidecar = sorted(cache.rglob(tracking.SIDECAR_FILE))[0]
    assert sidecar.stat().st_ino == sibling["inode"]  # the sibling's copy was not swapped out
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".1-")]  # our copy was dropped
