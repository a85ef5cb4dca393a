"""Service configuration without starting a server: loopback binding without a token, and the bento build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from safetyml import paths

PROJECT = paths.project_dir()
PROBE = (
    "import sys; sys.path.insert(0, '.'); from serving import service; "
    "print(service.SafetyScoring.config['http']['host'])"
)


def _host(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("SAFETYML_API_TOKEN", "SAFETYML_HOST")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=PROJECT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_without_a_token_the_service_binds_loopback_only() -> None:
    assert _host({"SAFETYML_HOST": "0.0.0.0"}) == "127.0.0.1"  # a wider host needs a token
    assert _host({"SAFETYML_HOST": "0.0.0.0", "SAFETYML_API_TOKEN": "t"}) == "0.0.0.0"


def test_invalid_policy_stops_the_service_import(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "default.yaml").write_text(yaml.safe_dump({"market": "default", "version": "1", "tasks": {}}))
    env = {**os.environ, "SAFETYML_POLICIES": str(folder)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "default.yaml" in result.stderr and "missing policy for incident_risk" in result.stderr


@pytest.mark.slow
def test_bento_builds_offline_with_policies_and_source(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    result = subprocess.run(
        [str(bentoml_cli), "build", "-f", "serving/bentofile.yaml", "--output", "tag"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bentos = list((tmp_path / "bentoml" / "bentos" / "safetyml").glob("*/bento.yaml"))
    assert len(bentos) == 1
    src = bentos[0].parent / "src"
    for name in (
        "serving/service.py",
        "serving/policies/BR.yaml",
        "serving/policies/MX.yaml",
        "serving/policies/default.yaml",
        "src/safetyml/scoring/scorer.py",
        "features/trip.yaml",
    ):
        assert (src / name).is_file(), name
    bento = yaml.safe_load(bentos[0].read_text())
    routes = {route["route"] for route in bento["schema"]["routes"]}
    assert {"/score_trip", "/score_trips", "/score_merchant", "/score_merchants", "/reload"} <= routes


def test_tracing_is_bypassed_unless_sampled_and_the_access_log_is_off_by_default() -> None:
    """BentoML's OpenTelemetry middleware builds a span per request even at sampling 0: every URL is
    excluded from it then; a positive rate traces again (nothing excluded)."""
    import re

    from safetyml.envvars import ServeSettings
    from safetyml.scoring.startup import service_options

    quiet = service_options(ServeSettings.from_env({}))
    assert quiet["logging"]["access"]["enabled"] is False
    excluded = re.compile("|".join(quiet["tracing"]["excluded_urls"]))  # as OpenTelemetry's ExcludeList
    assert all(excluded.search(f"http://127.0.0.1:3000/{r}") for r in ("score_trip", "score_merchants"))
    traced = service_options(ServeSettings.from_env({"SAFETYML_SERVE_TRACE_RATE": "0.5"}))
    assert traced["tracing"] == {"sample_rate": 0.5}
    logged = service_options(ServeSettings.from_env({"SAFETYML_SERVE_ACCESS_LOG": "1"}))
    assert logged["logging"]["access"]["enabled"] is True
