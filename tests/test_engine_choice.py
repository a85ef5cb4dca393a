"""The one engine choice: flags and DASK_SCHEDULER_ADDRESS resolve in one place, a missing extra is named,
commands without a Dask path refuse it, and the LocalCluster a session starts is closed after it."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from safetyml import engine as engine_mod
from safetyml._optional import MissingExtraError
from safetyml.cli import app
from safetyml.engine import EngineChoice, EngineError, resolve, session

runner = CliRunner()


def test_pandas_is_the_default_and_ignores_the_environment_address():
    choice = resolve(None, env={"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786"})
    assert choice == EngineChoice() and not choice.is_dask


def test_dask_takes_the_flag_over_the_environment_and_the_environment_over_a_local_cluster():
    env = {"DASK_SCHEDULER_ADDRESS": "tcp://10.0.0.1:8786"}
    assert resolve("dask", env=env).scheduler == "tcp://10.0.0.1:8786"
    assert resolve("dask", "tcp://10.0.0.2:8786", env=env).scheduler == "tcp://10.0.0.2:8786"
    local = resolve("DASK", env={}, n_workers=3)
    assert local.is_dask and local.scheduler is None and local.n_workers == 3
    assert "LocalCluster of 3 processes" in local.describe()


@pytest.mark.parametrize(
    ("engine", "scheduler", "message"),
    [
        ("spark", None, "--engine must be one of pandas, dask, not 'spark'"),
        ("pandas", "tcp://x:8786", "--scheduler tcp://x:8786 needs --engine dask"),
    ],
)
def test_bad_flags_are_refused_with_the_flag_named(engine, scheduler, message):
    with pytest.raises(EngineError, match=message):
        resolve(engine, scheduler, env={})


def test_dask_without_the_extra_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"pip install 'safetyml\[dask\]'"):
        resolve("dask", env={})
    result = runner.invoke(app, ["train", "incident_risk", "--data", ".", "--engine", "dask"])
    assert result.exit_code == 2 and "safetyml[dask]" in result.output


def test_scheduler_without_dask_is_refused_by_the_commands():
    result = runner.invoke(
        app, ["score-file", "incident_risk", "--input", "x.parquet", "--out", "y.parquet", "--scheduler", "a"]
    )
    assert result.exit_code == 2 and "needs --engine dask" in result.output


def test_pandas_session_has_no_client():
    with session(EngineChoice()) as client:
        assert client is None


@pytest.mark.slow
def test_a_session_starts_a_local_cluster_of_processes_on_loopback_and_closes_it():
    choice = resolve("dask", env={}, n_workers=1, memory_limit="1GiB")
    with session(choice) as client:
        info = client.scheduler_info()
        assert len(info["workers"]) == 1
        assert all(address.startswith("tcp://127.0.0.1:") for address in info["workers"])
        pid = client.run(lambda: __import__("os").getpid())
        assert set(pid.values()) != {__import__("os").getpid()}  # a worker process, not this one
        cluster = client.cluster
    assert client.status == "closed" and cluster.status.name == "closed"


def test_default_workers_is_the_cores_we_may_use():
    assert engine_mod.default_workers() >= 1
