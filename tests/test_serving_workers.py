"""Worker settings and readiness without a server: the CLI honours SAFETYML_SERVE_WORKERS, the service reads
its knobs once, and /readyz counts only live, ready workers (a killed worker's lock disappears with it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from safetyml.envvars import ServeSettings
from safetyml.scoring.reload import GC_THRESHOLD, WorkerBoard, tune_gc


def _serve_env(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> dict[str, str]:
    """Run ``safetyml serve`` up to the exec of bentoml and return the environment it would hand over."""
    from safetyml.cli import app

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: dict[str, Any] = {}

    def fake_exec(path: str, argv: list[str]) -> None:
        seen.update(os.environ)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_exec)
    monkeypatch.setattr(os, "chdir", lambda _: None)
    result = CliRunner().invoke(app, ["serve", "--port", "3999", *args])
    assert result.exit_code == 0, result.output
    return seen


def test_serve_honours_the_workers_variable_and_the_flag_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SAFETYML_API_TOKEN", raising=False)
    assert _serve_env(monkeypatch, [], {"SAFETYML_SERVE_WORKERS": "2"})["SAFETYML_SERVE_WORKERS"] == "2"
    assert (
        _serve_env(monkeypatch, ["--workers", "3"], {"SAFETYML_SERVE_WORKERS": "2"})["SAFETYML_SERVE_WORKERS"]
        == "3"
    )
    monkeypatch.delenv("SAFETYML_SERVE_WORKERS")
    assert "SAFETYML_SERVE_WORKERS" not in _serve_env(monkeypatch, [], {})  # the service's default (1)


def test_settings_access_log_and_tracing_are_off_by_default() -> None:
    default = ServeSettings.from_env({})
    assert (default.access_log, default.trace_rate, default.workers) == (False, 0.0, 1)
    on = ServeSettings.from_env({"SAFETYML_SERVE_ACCESS_LOG": "1", "SAFETYML_SERVE_TRACE_RATE": "0.1"})
    assert (on.access_log, on.trace_rate) == (True, 0.1)
    with pytest.raises(ValueError, match="SAFETYML_SERVE_TRACE_RATE.*between 0 and 1"):
        ServeSettings.from_env({"SAFETYML_SERVE_TRACE_RATE": "2"})


@pytest.mark.slow
def test_the_service_declares_workers_access_log_and_tracing_from_the_environment() -> None:
    from safetyml import paths

    probe = (
        "import sys, json; sys.path.insert(0, '.'); from serving import service; "
        "c = service.SafetyScoring.config; "
        "print(json.dumps([c['workers'], c['logging']['access']['enabled'], c['tracing']['sample_rate']]))"
    )
    env = {**os.environ, "SAFETYML_SERVE_WORKERS": "2", "SAFETYML_SERVE_ACCESS_LOG": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=paths.project_dir(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[2, true, 0.0]"


HOLDER = """
import sys, time
from pathlib import Path
from safetyml.scoring.reload import WorkerBoard
WorkerBoard(Path(sys.argv[1]), 2).mark_ready()
print("ready", flush=True)
time.sleep(60)
"""


def test_readiness_counts_only_live_ready_workers(tmp_path: Path) -> None:
    board = WorkerBoard(tmp_path / "run", expected=2)
    assert board.folder.exists() is False and not board.all_ready()
    board.mark_ready()
    assert board.ready_workers() == 1 and not board.all_ready()  # the sibling is still loading
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    sibling = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(board.folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert sibling.stdout is not None and sibling.stdout.readline().strip() == "ready"
        assert board.ready_workers() == 2 and board.all_ready()
        os.kill(sibling.pid, signal.SIGKILL)  # kill -9: no clean-up ran
        sibling.wait(10)
        deadline = time.monotonic() + 5
        while board.ready_workers() != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not board.all_ready()
        assert [p.name for p in board.folder.glob("*.ready")] == [f"{os.getpid()}.ready"]  # swept
    finally:
        if sibling.poll() is None:
            sibling.kill()
    board.close()
    assert board.ready_workers() == 0


def test_tune_gc_freezes_what_is_loaded_and_raises_the_young_threshold() -> None:
    import gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 10_000  # modules, classes, functions of everything imported
        assert gc.get_threshold() == GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class _Bundle:
    names = {"incident_risk": "safetyml-incident-risk"}


class PollScorer:
    """Stands in for Scorer: registry names, versions that change on reload."""

    bundle = _Bundle()

    def __init__(self) -> None:
        self.model_versions = {"incident_risk": "1"}
        self.reloads: list[str] = []

    def ready(self) -> tuple[bool, str]:
        return True, "ready"

    def metadata(self) -> dict[str, Any]:
        return {"model_versions": self.model_versions}

    def reload(self, alias: str) -> dict[str, str]:
        self.reloads.append(alias)
        self.model_versions = {"incident_risk": registry["incident_risk"] if alias == "champion" else alias}
        return dict(self.model_versions)


registry = {"incident_risk": "1"}


def test_workers_follow_a_promotion_by_polling_the_registry_with_jitter(tmp_path: Path) -> None:
    from safetyml.scoring.reload import ScorerHost

    scorer = PollScorer()
    asked: list[dict[str, str]] = []

    def champions(names: dict[str, str]) -> dict[str, str]:
        asked.append(names)
        return dict(registry)

    host = ScorerHost(lambda: scorer, tmp_path / "r.json", champions=champions, poll_seconds=30)  # type: ignore[arg-type,return-value]
    host.load_until_ready()
    registry["incident_risk"] = "1"
    assert host.poll_champions() is False  # champion unchanged
    assert asked[-1] == {"incident_risk": "safetyml-incident-risk"}
    registry["incident_risk"] = "2"  # promotion on another machine
    assert host.poll_champions() is True and scorer.model_versions == {"incident_risk": "2"}
    assert host.poll_champions() is False  # followed once
    host.reload("challenger")  # an explicit reload of another alias stays until the next promotion
    assert host.poll_champions() is False and scorer.model_versions == {"incident_risk": "challenger"}
    registry["incident_risk"] = "3"
    assert host.poll_champions() is True and scorer.model_versions == {"incident_risk": "3"}
    waits = [host.next_poll_wait() for _ in range(200)]
    assert 24 <= min(waits) < 27 and 33 < max(waits) <= 36  # 30 s ± 20 %, spread out
    broken = ScorerHost(lambda: scorer, tmp_path / "r.json", champions=lambda _: 1 / 0, poll_seconds=30)  # type: ignore[arg-type,return-value]
    broken.load_until_ready()
    assert broken.poll_champions() is False  # a registry error leaves the models as they are


def test_poll_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from safetyml.scoring.reload import POLL_SECONDS, poll_seconds

    monkeypatch.delenv("SAFETYML_SERVE_POLL_SECONDS", raising=False)
    assert poll_seconds() == POLL_SECONDS
    monkeypatch.setenv("SAFETYML_SERVE_POLL_SECONDS", "0")
    assert poll_seconds() == 0
    monkeypatch.setenv("SAFETYML_SERVE_POLL_SECONDS", "-1")
    with pytest.raises(ValueError, match="SAFETYML_SERVE_POLL_SECONDS"):
        poll_seconds()
