"""Everything safetyml asks of MLflow: runs, nested trial runs, models, the registry and aliases.

This is the only module that imports ``mlflow``. By default tracking and registry live in SQLite under
``SAFETYML_HOME`` (``mlflow.db``) with artifacts beside it (``mlartifacts/``); ``MLFLOW_TRACKING_URI``
points everything at a team's tracking server instead, unchanged. Models are logged as MLflow
"models from code" (``safetyml/mlflow_model.py`` plus the model folder), so nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from safetyml import envvars, paths
from safetyml.envvars import environment
from safetyml.model import SIDECAR_FILE, RiskModel
from safetyml.values import is_missing

log = logging.getLogger(__name__)

TRACKING_ENV = envvars.MLFLOW_TRACKING_URI
REGISTRY_ENV = envvars.MLFLOW_REGISTRY_URI
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MODEL_NAME_IN_RUN = "model"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
_MAX_PARAM = 6000


@dataclass(frozen=True)
class ModelRef:
    """A registered model version as the rest of safetyml sees it."""

    task: str
    name: str
    version: str
    run_id: str
    alias: str | None = None

    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


# ------------------------------------------------------------------------------------------ setup


def embedded_uri() -> str:
    return f"sqlite:///{paths.home() / DB_FILE}"


def is_embedded() -> bool:
    return not os.environ.get(TRACKING_ENV)


def configure() -> str:
    """Point MLflow's tracking and registry at ``MLFLOW_TRACKING_URI`` or the embedded SQLite store.

    Called before every MLflow use, so a changed ``SAFETYML_HOME`` (tests) takes effect. MLflow's
    ``set_tracking_uri`` also exports the URI to the environment; we undo that, so the environment keeps
    meaning "the user's choice" and child processes follow ``SAFETYML_HOME`` like this one.
    """
    import mlflow

    uri = os.environ.get(TRACKING_ENV) or embedded_uri()
    # an identity "change": environment() restores whatever set_tracking_uri exports
    with environment({name: os.environ.get(name) for name in (TRACKING_ENV, REGISTRY_ENV)}):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    return uri


def artifact_root() -> Path:
    return paths.home() / ARTIFACTS_DIR


def _client():
    from mlflow import MlflowClient

    uri = configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """The id of the experiment called ``name``, created (artifacts under SAFETYML_HOME) if needed."""
    client = _client()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (artifact_root() / name).as_uri() if is_embedded() else None
    return client.create_experiment(name, artifact_location=location)


def ui_command(port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line for the configured store, bound to 127.0.0.1."""
    uri = configure()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if is_embedded():
        cmd += ["--default-artifact-root", artifact_root().as_uri()]
    return cmd


def git_commit() -> str | None:
    """The source checkout's commit, when it is a git repository with one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.project_dir(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


# ------------------------------------------------------------------------------------------ runs


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), sub, out)
    else:
        text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
        out[prefix] = text[:_MAX_PARAM]


class RunLogger:
    """Logs to one MLflow run by id (no global active run), so jobs and trials cannot collide."""

    def __init__(self, run_id: str, experiment_id: str):
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._client = _client()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat: dict[str, str] = {}
        _flatten("", dict(params), flat)
        items = [Param(k, v) for k, v in flat.items()]
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if not is_missing(v)]
        for start in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[start : start + 500])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:_MAX_PARAM]) for k, v in tags.items() if v is not None]
        if items:
            self._client.log_batch(self.run_id, tags=items)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self._client.log_dict(self.run_id, data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_artifacts(self, files: list[Path], artifact_path: str | None = None) -> None:
        for path in files:
            path = Path(path)
            if path.is_dir():
                self._client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self._client.log_artifact(self.run_id, str(path), artifact_path)

    def child(
        self, run_name: str, params: Mapping[str, Any], metrics: Mapping[str, float], tags: Mapping[str, Any]
    ) -> str:
        """Create a finished nested run (e.g. one Optuna trial) under this run."""
        run = self._client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={"mlflow.parentRunId": self.run_id, **{k: str(v) for k, v in tags.items()}},
        )
        nested = RunLogger(run.info.run_id, self.experiment_id)
        nested.log_params(params)
        nested.log_metrics(metrics)
        self._client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def log_model(self, model_dir: Path, input_example: pd.DataFrame, output_example: Any) -> str:
        """Log a saved RiskModel folder as a pyfunc model from code (no pickle); returns the model URI."""
        import lightgbm
        import mlflow
        import numpy
        from mlflow.models import infer_signature

        signature = model_signature(model_dir, infer_signature(input_example, output_example).outputs)
        requirements = [
            f"lightgbm=={lightgbm.__version__}",
            f"numpy=={numpy.__version__}",
            f"pandas=={pd.__version__}",
            f"mlflow=={mlflow.__version__}",
        ]
        configure()
        with mlflow.start_run(run_id=self.run_id):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=str(MODEL_CODE),
                artifacts={"model_dir": str(model_dir)},
                signature=signature,
                input_example=input_example,
                pip_requirements=requirements,
            )
        return info.model_uri


def model_signature(model_dir: Path, outputs: Any = None) -> Any:
    """The pyfunc input schema from the model's sidecar: numeric features ``double``, categoricals ``Any``.

    Categorical columns are declared ``Any`` because a frame from ``safetyml features build`` holds them as
    pandas ``Categorical``, which MLflow's ``string`` type refuses (``Can not safely convert category to
    <U0``); the model itself checks them (text or missing, else an error naming the column).
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    sidecar = json.loads((Path(model_dir) / SIDECAR_FILE).read_text())
    categorical = set(sidecar.get("categories", {}))
    inputs = Schema(
        [ColSpec(AnyType() if name in categorical else DataType.double, name) for name in sidecar["features"]]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


@contextmanager
def start_run(experiment: str, run_name: str, tags: Mapping[str, Any] | None = None) -> Iterator[RunLogger]:
    """A run in ``experiment``; FINISHED when the block ends, FAILED if it raises."""
    experiment_id = ensure_experiment(experiment)
    client = _client()
    run = client.create_run(
        experiment_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items() if v is not None}
    )
    logger = RunLogger(run.info.run_id, experiment_id)
    try:
        yield logger
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def start_job_run(experiment: str, run_name: str):
    """Context manager for batch jobs (zone scoring): yields a RunLogger (log_params, log_metrics, ...)."""
    return start_run(experiment, run_name, tags={"safetyml.kind": "job"})


def log_artifacts(run_id: str, paths_: list[Path], artifact_path: str) -> None:
    """Attach files (or folders) to an existing run, e.g. an explanation report to the model's run."""
    client = _client()
    run = client.get_run(run_id)
    RunLogger(run_id, run.info.experiment_id).log_artifacts(list(paths_), artifact_path)


def run_info(run_id: str) -> dict[str, Any]:
    """Params, tags and metrics of a run (e.g. the data folder a model was trained on)."""
    run = _client().get_run(run_id)
    return {"params": dict(run.data.params), "tags": dict(run.data.tags), "metrics": dict(run.data.metrics)}


# ------------------------------------------------------------------------------------------ registry


def register(
    model_uri: str, name: str, run_id: str, tags: Mapping[str, Any], alias: str | None = "challenger"
) -> str:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it; returns the version."""
    client = _client()
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - mlflow raises a generic MlflowException when absent
        client.create_registered_model(name, description="safetyml risk model (LightGBM + calibrator)")
    version = client.create_model_version(
        name, model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()}
    )
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def get_alias(name: str, alias: str) -> ModelRef | None:
    """The version behind ``alias`` of registered model ``name``, or None."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return ModelRef(task="", name=name, version=str(mv.version), run_id=mv.run_id or "", alias=alias)


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: str, tags: Mapping[str, Any]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value)[:_MAX_PARAM])


def version_tags(name: str, version: str) -> dict[str, str]:
    return dict(_client().get_model_version(name, str(version)).tags)


def _model_cache(name: str, version: str) -> Path:
    return paths.home() / "models" / name / str(version)


def load_model_version(name: str, version: str) -> RiskModel:
    """Download (once, into SAFETYML_HOME/models) a registered version and load its RiskModel folder."""
    import mlflow

    cache = _model_cache(name, version)
    found = sorted(cache.rglob(SIDECAR_FILE)) if cache.exists() else []
    if not found:
        configure()
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{version}-"))
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(tmp))
        # Another process (a sibling worker) may have finished the same download first: keep its copy,
        # which it may be reading now, and drop ours. Replacing it pulled the files from under that
        # reader, and a serving worker then started without its challenger.
        if cache.exists() and any(cache.rglob(SIDECAR_FILE)):  # the sibling's copy is complete
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(cache, ignore_errors=True)  # an incomplete copy (a crashed download): no reader
            try:
                tmp.rename(cache)
            except OSError:  # a sibling renamed onto it just now: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        found = sorted(cache.rglob(SIDECAR_FILE))
        if not found:
            raise LookupError(f"registered model {name} version {version} holds no {SIDECAR_FILE}")
    return RiskModel.load(found[0].parent)


def load_model(task: str, alias: str = "champion") -> tuple[RiskModel, ModelRef]:
    """The RiskModel behind ``alias`` of the task's registered model (name from training/<task>.yaml)."""
    from safetyml.training.config import load_training_config

    name = load_training_config(task).registered_model_name
    ref = get_alias(name, alias)
    if ref is None:
        raise LookupError(
            f"registered model {name!r} has no version with alias {alias!r} in {configure()}; "
            f"train one with `safetyml train {task} --data DIR` (the first model becomes champion after "
            f"`safetyml promote {task}`)"
        )
    model = load_model_version(name, ref.version)
    return model, ModelRef(task=task, name=name, version=ref.version, run_id=ref.run_id, alias=alias)
