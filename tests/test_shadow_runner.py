"""The shadow runner: challengers scored out of the serving process, from the decisions' stored snapshots.

A zone-less incident challenger (a real second training: it needs four features the champion does not
use) runs in shadow in BR (every decision) and MX (half the riders, by the sticky hash); the default market
has none. The real Scorer decides with the audit log; the runner runs as its own process, is killed with
SIGKILL mid-way and restarted, and must then have scored exactly the decisions the policies send to the
challenger — each one exactly as the challenger scores the live request's row — and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from safetyml import paths

pytestmark = pytest.mark.slow
NAME = "safetyml-incident-risk"
SPEC = f"{NAME}@challenger"


def _policies(folder: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """The shipped policies with ``entries[market]`` as each market's only challenger (others: none)."""
    shutil.copytree(paths.project_dir() / "serving" / "policies", folder)
    for path in folder.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["challengers"] = [entries[path.stem]] if path.stem in entries else []
        path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return folder


@pytest.fixture(scope="module")
def zoneless(trained_home: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A copy of the trained home with a zone-less incident model registered as v2 (alias challenger)."""
    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env, train_fast

    root = tmp_path_factory.mktemp("shadow_runner")
    home = root / "home"
    shutil.copytree(trained_home.home, home, ignore=shutil.ignore_patterns("audit*", "shadow", "serving_*"))
    tables = load_tables(trained_home.data_dir)
    with safetyml_env(home):
        train_fast(
            "incident_risk",
            trained_home.data_dir,
            tables=tables,
            trials=1,
            config_overrides={"features": {"exclude_entities": ["zone"]}},
        )
        assert tracking.get_alias(NAME, "challenger").version == "2"
        assert tracking.get_alias(NAME, "champion").version == "1"
        materialize(tables, load_feature_set(), store=OnlineStore.open())
    policies = _policies(
        root / "policies",
        {
            "BR": {"model": SPEC, "mode": "shadow"},
            "MX": {"model": SPEC, "mode": "shadow", "share": 0.5, "sticky_key": "rider_id"},
        },
    )
    return {"root": root, "home": home, "tables": tables, "policies": policies}


def _runner(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "safetyml.scoring.shadow", *args])  # noqa: S603


def _status(home: Path) -> dict[str, Any]:
    try:
        return json.loads((home / "shadow" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait(predicate: Any, timeout: float = 120.0, what: str = "", every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)


def _cursor(home: Path) -> int:
    """The runner's committed cursor, read from the audit database."""
    with contextlib.closing(sqlite3.connect(home / "audit.sqlite")) as conn:
        found = conn.execute("SELECT position FROM challenger_cursor").fetchone()
    return int(found[0]) if found else -1


def test_runner_killed_mid_way_scores_exactly_the_shadow_decisions(
    zoneless: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetyml import tracking
    from safetyml.scoring.audit import AuditLog, get_decision, read_decisions
    from safetyml.scoring.challenger_report import challenger_report, trip_requests
    from safetyml.scoring.challengers import read_challenger_scores, sticky_bucket
    from safetyml.scoring.model_inputs import fast_matrix, predict_matrix
    from safetyml.scoring.scorer import Scorer

    home = tmp_path / "home"
    shutil.copytree(zoneless["home"], home)
    monkeypatch.setenv("SAFETYML_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SAFETYML_POLICIES", str(zoneless["policies"]))
    requests = trip_requests(zoneless["tables"].trips.sample(700, random_state=3))
    audit = AuditLog(fsync=False)
    before = Scorer.from_registry(audit=audit, policies_dir=_policies(tmp_path / "none", {}))
    early = before.score_trips(requests[:40])  # decided before any shadow was declared: not in scope
    scorer = Scorer.from_registry(audit=audit)  # declares the shadows: starts the cursor here
    responses = scorer.score_trips(requests[40:300]) + [scorer.score_trip(r) for r in requests[300:]]
    rows = scorer.trip_rows(requests[40:])[0]
    audit.flush()
    challenger = tracking.load_model_version(NAME, "2")
    extra = [f for f in challenger.features if f not in scorer.bundle.models["incident_risk"].features]
    assert extra  # the snapshots must carry features the champion does not use
    # one BR decision whose snapshot lacks one of them (as when the worker could not load the challenger)
    lacking = next(r for r in responses if r.market == "BR")
    record = get_decision(lacking.decision_id)
    assert set(extra) <= set(record["features"])
    record["decision_id"] = str(uuid.uuid4())
    record["features"] = {k: v for k, v in record["features"].items() if k != extra[0]}
    audit.record(record)
    audit.flush()
    audit.close()
    expected = {  # the challenger on each live row, and whether the policy sends the decision to it
        response.decision_id: float(p)
        for response, p in zip(
            responses, predict_matrix(challenger, fast_matrix(challenger, rows)), strict=True
        )
        if response.market == "BR"
        or (response.market == "MX" and sticky_bucket(f"incident_risk|{SPEC}", response.rider_id) < 0.5)
    }
    assert (
        0
        < sum(r.market == "MX" for r in responses if r.decision_id in expected)
        < sum(r.market == "MX" for r in responses)
    )

    start = _cursor(home)
    first = _runner("--batch", "1")  # one decision per transaction: slow enough to be killed mid-way
    try:  # SIGKILL once it has committed some transactions but not all
        _wait(lambda: start + 50 < _cursor(home), what="runner progress", every=0.005)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert _cursor(home) < start + len(responses)
    partial = read_challenger_scores()
    assert 0 < len(partial) < len(expected)
    watched = subprocess.Popen(["sleep", "600"])  # noqa: S607 - the "service" the runner follows
    second = _runner("--batch", "20", "--watch", str(watched.pid))
    try:
        _wait(
            lambda: _status(home).get("lag") == 0 and _status(home).get("pid") == second.pid, what="catch-up"
        )
    finally:
        watched.kill()
        watched.wait()
    assert second.wait(60) == 0  # the watched process is gone: it drained and stopped

    scores = read_challenger_scores().set_index("decision_id")
    assert scores.index.is_unique and set(scores.index) == set(expected)  # exactly the shadow decisions
    assert (scores["model_version"] == "2").all() and (scores["role"] == "challenger").all()
    assert all(scores.loc[d, "probability"] == p for d, p in expected.items())  # bit for bit, live rows
    assert not scores.index.isin([r.decision_id for r in early]).any()
    status = _status(home)  # the restarted runner wrote what the killed one had not committed, no more
    assert status["scores_written"] == len(expected) - len(partial) and status["unscoreable"] == 1
    decisions = read_decisions()
    assert len(decisions) == len(early) + len(responses) + 1
    report = challenger_report("incident_risk", spec=SPEC)
    assert report.missing == 1  # the decision whose snapshot lacked a feature is counted, not hidden


def test_service_host_keeps_a_runner_and_restarts_it(
    zoneless: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ScorerHost (what each BentoML worker runs) starts the runner; a runner killed with SIGKILL is started
    again by the host's background loop, and no decision is left without its challenger score."""
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.challenger_report import trip_requests
    from safetyml.scoring.challengers import read_challenger_scores
    from safetyml.scoring.reload import ScorerHost
    from safetyml.scoring.scorer import Scorer
    from safetyml.scoring.shadow import RunnerKeeper, runner_running

    home = tmp_path / "home"
    shutil.copytree(zoneless["home"], home)
    monkeypatch.setenv("SAFETYML_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SAFETYML_POLICIES", str(zoneless["policies"]))
    br = zoneless["tables"].trips
    br = br[br["city"] != "mexico_city"]
    requests = trip_requests(br.sample(min(300, len(br)), random_state=4))
    watched = subprocess.Popen(["sleep", "600"])  # noqa: S607
    audit = AuditLog(fsync=False)
    keeper = RunnerKeeper(watched.pid)
    host = ScorerHost(
        lambda: Scorer.from_registry(audit=audit),
        home / "serving_reload.json",
        audit=audit,
        keeper=keeper,
        retry_seconds=0.3,
    ).start(handle_sighup=False)
    try:
        assert keeper.started == 1
        answered = host.ready_scorer().score_trips(requests[:150])
        ids = [r.decision_id for r in answered]
        audit.flush()
        _wait(lambda: set(ids) <= set(read_challenger_scores()["decision_id"]), what="first scores")
        assert _status(home)["pid"] == keeper._child.pid  # the status is this runner's, not a copied one
        os.kill(keeper._child.pid, signal.SIGKILL)
        answered += [host.ready_scorer().score_trip(r) for r in requests[150:]]
        ids = [r.decision_id for r in answered]
        audit.flush()
        _wait(lambda: keeper.started == 2, what="restart")
        _wait(lambda: set(ids) <= set(read_challenger_scores()["decision_id"]), what="all scores")
        assert host.scorer.metadata()["shadow_runner"]["running"]
    finally:
        host.close()
        watched.kill()
        watched.wait()
    _wait(lambda: not runner_running(), timeout=60, what="the runner stops after the watched process")
    assert {r.market for r in answered} == {"BR"}  # every decision goes to the shadow
    assert len(set(ids)) == len(requests) == len(read_challenger_scores())


def test_a_challenger_that_fails_to_load_is_retried_and_shown(
    zoneless: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A canary alias that does not exist yet: the worker serves the champion, /metadata says the challenger
    is not loaded and being retried; once the alias exists the background loop loads it and it serves."""
    from safetyml import tracking
    from safetyml.envvars import ServeSettings
    from safetyml.scoring.audit import AuditLog
    from safetyml.scoring.challenger_report import trip_requests
    from safetyml.scoring.reload import ScorerHost
    from safetyml.scoring.scorer import Scorer
    from safetyml.scoring.startup import metadata_answer

    home = tmp_path / "home"
    shutil.copytree(zoneless["home"], home)
    monkeypatch.setenv("SAFETYML_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = f"{NAME}@next"
    policies = _policies(
        tmp_path / "policies",
        {"MX": {"model": spec, "mode": "canary", "share": 0.5, "sticky_key": "rider_id"}},
    )
    audit = AuditLog(fsync=False)
    host = ScorerHost(
        lambda: Scorer.from_registry(audit=audit, policies_dir=policies),
        home / "serving_reload.json",
        audit=audit,
        retry_seconds=0.2,
    ).start(handle_sighup=False)
    settings = ServeSettings.from_env()
    try:
        status, body = metadata_answer(host, settings)
        assert status == 200 and body["challengers"][spec].startswith("not loaded:")
        assert (
            "retrying every" in body["challengers"][spec] and "no alias 'next'" in body["challengers"][spec]
        )
        mx = zoneless["tables"].trips
        mx = mx[mx["city"] == "mexico_city"]
        requests = trip_requests(mx.sample(min(60, len(mx)), random_state=5))
        assert {r.model_version for r in host.ready_scorer().score_trips(requests)} == {"1"}
        tracking.set_alias(NAME, "next", "2")
        _wait(lambda: metadata_answer(host, settings)[1]["challengers"][spec] == "v2", timeout=30)
        served = {r.model_version for r in host.ready_scorer().score_trips(requests)}
        assert served == {"1", "2"}  # the canary now serves its half of the riders
    finally:
        host.close()


def test_the_runner_waits_for_a_quiet_moment_but_not_forever() -> None:
    """The pacer defers scoring while decisions pour in, and works anyway once too far or too long behind."""
    from safetyml.scoring.shadow import Pacer

    pacer = Pacer(busy_rate=20.0, max_lag=1000, max_delay=60.0)
    assert not pacer.work_now(0.0, 100, 100)  # nothing to score
    assert not pacer.work_now(1.0, 600, 100)  # 500 new in a second: busy, 500 behind
    assert not pacer.work_now(2.0, 1000, 100)
    assert pacer.work_now(3.0, 1200, 100)  # 1,100 behind: works although the service is busy
    assert pacer.work_now(4.0, 1210, 1150)  # 10 a second: quiet, works
    assert not pacer.work_now(5.0, 1210, 1210)  # caught up
    pacer = Pacer(busy_rate=20.0, max_lag=10**6, max_delay=60.0)
    pacer.work_now(0.0, 0, 0)
    assert not pacer.work_now(1.0, 100, 0)  # 100 a second from now on: busy
    assert not pacer.work_now(30.0, 3000, 0)
    assert pacer.work_now(61.5, 6150, 0)  # behind since 1.0: 60.5 s > max_delay


def test_a_keeper_does_not_start_a_second_runner_while_its_own_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner takes its lock only after its imports; a keeper asked again meanwhile (every few seconds,
    sooner under load) must not start another one."""
    from safetyml.scoring.shadow import RunnerKeeper

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path / "home"))
    watched = subprocess.Popen(["sleep", "60"])  # noqa: S607
    keeper = RunnerKeeper(watched.pid)
    try:
        assert keeper.ensure() is True
        assert keeper.ensure() is False  # before the child can have taken the lock
        assert keeper.started == 1
    finally:
        watched.kill()
        watched.wait()
        if keeper._child is not None:
            keeper._child.kill()
            keeper._child.wait()
