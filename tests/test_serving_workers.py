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
