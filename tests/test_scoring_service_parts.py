"""The service's non-BentoML parts without a server: bearer auth, reloads across workers, error → status."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from safetyml.envvars import ServeSettings
from safetyml.scoring.auth import BearerAuth, authorized
from safetyml.scoring.http import error_response
from safetyml.scoring.reload import ScorerHost
from safetyml.scoring.scorer import AsOfError, NotReadyError, ReloadError


def _call(middleware: BearerAuth, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware.app = app

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    asyncio.run(middleware({"type": "http", "path": path, "headers": headers}, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_bearer_auth_denies_by_default_and_accepts_the_token() -> None:
    auth = BearerAuth(None, token="s3cret")  # type: ignore[arg-type]
    assert _call(auth, "/score_trip", [])[0] == 401
    status, body = _call(auth, "/score_trip", [(b"authorization", b"Bearer wrong")])
    assert status == 401 and "SAFETYML_API_TOKEN" in body["detail"]
    assert _call(auth, "/score_trip", [(b"authorization", b"Basic s3cret")])[0] == 401
    assert _call(auth, "/score_trip", [(b"authorization", b"bearer s3cret")])[0] == 200
    assert _call(auth, "/no_such_route", [])[0] == 401
    for open_path in ("/healthz", "/readyz", "/metadata", "/metrics", "/static_content/x.js"):
        assert _call(auth, open_path, [])[0] == 200, open_path
    assert _call(BearerAuth(None, token=None), "/score_trip", [])[0] == 200  # type: ignore[arg-type]
    assert not authorized([(b"authorization", b"Bearer s3cret2")], b"s3cret")


def test_settings_stay_on_loopback_without_a_token_and_reject_bad_numbers() -> None:
    assert ServeSettings.from_env({"SAFETYML_HOST": "0.0.0.0"}).host == "127.0.0.1"
    with_token = ServeSettings.from_env({"SAFETYML_HOST": "0.0.0.0", "SAFETYML_API_TOKEN": "t"})
    assert (with_token.host, with_token.token, with_token.workers, with_token.threads) == (
        "0.0.0.0",
        "t",
        1,
        4,
    )
    assert ServeSettings.from_env({"SAFETYML_SERVE_WORKERS": "3"}).workers == 3
    with pytest.raises(ValueError, match="SAFETYML_SERVE_THREADS"):
        ServeSettings.from_env({"SAFETYML_SERVE_THREADS": "zero"})


def test_errors_map_to_one_status_each() -> None:
    assert error_response(NotReadyError("scorer not ready: loading")) == (
        503,
        {"error": "scorer not ready: loading"},
    )
    assert error_response(AsOfError("too early")) == (422, {"error": "too early", "field": "as_of"})
    assert error_response(ReloadError("no alias"))[0] == 409


class FakeScorer:
    """Stands in for Scorer: versions that change on reload, and a ready flag."""

    def __init__(self, versions: dict[str, str], fail: bool = False):
        self.model_versions = dict(versions)
        self.fail = fail
        self.reloads: list[str] = []

    def ready(self) -> tuple[bool, str]:
        return True, "ready"

    def metadata(self) -> dict[str, Any]:
        return {"model_versions": self.model_versions}

    def reload(self, alias: str) -> dict[str, str]:
        if self.fail:
            raise KeyError(f"no model under alias {alias!r}")
        self.reloads.append(alias)
        self.model_versions = {task: f"{alias}-{len(self.reloads)}" for task in self.model_versions}
        return dict(self.model_versions)


def _host(tmp_path: Path, scorer: FakeScorer, worker: int) -> ScorerHost:
    host = ScorerHost(lambda: scorer, tmp_path / "reload.json", follow_every=0.0, worker_id=worker)  # type: ignore[arg-type,return-value]
    host.load_until_ready()
    return host


def test_a_reload_on_one_worker_is_followed_by_the_others(tmp_path: Path) -> None:
    a = _host(tmp_path, FakeScorer({"incident_risk": "1"}), worker=1)
    b = _host(tmp_path, FakeScorer({"incident_risk": "1"}), worker=2)
    assert b.follow_reloads(background=False) is False  # nothing announced yet
    answer = a.reload("challenger")
    assert answer == {
        "model_versions": {"incident_risk": "challenger-1"},
        "previous_versions": {"incident_risk": "1"},
    }
    assert a.follow_reloads(background=False) is False  # its own order
    assert b.follow_reloads(background=False) is True
    assert b.scorer.reloads == ["challenger"]  # type: ignore[union-attr]
    assert b.follow_reloads(background=False) is False  # the same order is followed once


def test_a_failed_reload_keeps_the_models_and_unready_hosts_say_why(tmp_path: Path) -> None:
    failing = _host(tmp_path, FakeScorer({"incident_risk": "1"}, fail=True), worker=1)
    with pytest.raises(ReloadError, match="previous models kept"):
        failing.reload("nope")
    assert failing.scorer.model_versions == {"incident_risk": "1"}  # type: ignore[union-attr]
    assert not (tmp_path / "reload.json").exists()

    attempts = []

    def broken() -> FakeScorer:
        attempts.append(1)
        raise FileNotFoundError("no online store")

    host = ScorerHost(broken, tmp_path / "reload.json", retry_seconds=0.01)  # type: ignore[arg-type]
    loader = threading.Thread(target=host.load_until_ready)
    loader.start()
    deadline = time.monotonic() + 5
    while len(attempts) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(attempts) >= 2  # it retried
    host.stop()
    loader.join(timeout=5)
    assert not host.is_ready()
    with pytest.raises(NotReadyError, match="no online store"):
        host.ready_scorer()


def test_the_service_stays_a_thin_declaration():
    """The service holds no logic of its own (issue 10's bar: at most 100 lines)."""
    from pathlib import Path

    service = Path(__file__).resolve().parents[1] / "serving" / "service.py"
    assert len(service.read_text().splitlines()) <= 100


def test_the_worker_freezes_what_it_built_after_loading_on_its_first_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects made after the load-time freeze (BentoML's app, first-request imports) are frozen by the first
    request, so full collections do not scan them; then again on the 100th request, not in between. (Freezes
    are counted on this thread only: other tests' hosts may reload, and freeze, in background threads.)"""
    import gc

    from safetyml.scoring import reload

    host = _host(tmp_path, FakeScorer({"incident_risk": "1"}), worker=1)
    here = threading.get_ident()
    calls: list[int] = []
    real_freeze = gc.freeze

    def counting_freeze() -> None:
        if threading.get_ident() == here:
            calls.append(host.served)
        real_freeze()

    monkeypatch.setattr(reload.gc, "freeze", counting_freeze)
    try:
        built_after_loading = [[i] for i in range(1_000)]
        host.ready_scorer()
        tracked = {id(o) for o in gc.get_objects()}  # the collector's reach: frozen objects are not in it
        assert not any(id(o) in tracked for o in built_after_loading)
        for _ in range(99):
            host.ready_scorer()
        assert calls == [1, 100]
    finally:
        gc.unfreeze()
