"""The real BentoML server, started once for this module with the champions of ``trained_home``.

Covers: health/readiness/metadata, both scoring tasks, auth, validation errors, cold starts, parity of the
HTTP score with offline scoring, the audit record of a decision, a hot reload under load and a graceful
stop that loses no decision.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.fixtures_servers import free_port, start_service, stop_service

pytestmark = pytest.mark.slow

TOKEN = "test-token-" + uuid.uuid4().hex
STARTUP_TIMEOUT = 120.0


@dataclass
class Served:
    url: str
    home: Path
    process: subprocess.Popen
    log_path: Path
    trip: pd.Series
    trip_frame_row: pd.DataFrame
    known_merchant: str
    decision_ids: list[str] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def post(self, route: str, payload: Any, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(f"{self.url}{route}", json=payload, headers=headers, timeout=60, **kwargs)
        if response.status_code == 200:
            body = response.json()
            for item in body.get("items", [body]):
                if "decision_id" in item:
                    self.decision_ids.append(item["decision_id"])
        return response


_free_port = free_port  # tests/test_monitoring_prometheus.py imports it from here


def _trip_payload(trip: pd.Series, **changes: Any) -> dict[str, Any]:
    def num(value: Any) -> float | None:
        return None if pd.isna(value) else float(value)

    payload = {
        "rider_id": str(trip["rider_id"]),
        "merchant_id": str(trip["merchant_id"]),
        "requested_at": pd.Timestamp(trip["requested_at"]).isoformat(),
        "pickup_lat": num(trip["pickup_lat"]),
        "pickup_lng": num(trip["pickup_lng"]),
        "dropoff_lat": num(trip["dropoff_lat"]),
        "dropoff_lng": num(trip["dropoff_lng"]),
        "distance_km": float(trip["distance_km"]),
        "order_value": float(trip["order_value"]),
        "payment_method": str(trip["payment_method"]),
        "rain": None if pd.isna(trip.get("rain")) else bool(trip["rain"]),
    }
    payload.update(changes)
    return payload


@pytest.fixture(scope="module")
def served(trained_home: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A private copy of trained_home, its online store materialized at one trip's requested_at, served."""
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.frames import build_frame
    from safetyml.features.online import STORE_FILE, OnlineStore, materialize
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env

    root = tmp_path_factory.mktemp("served")
    home = root / "home"
    shutil.copytree(trained_home.home, home)
    tables = load_tables(trained_home.data_dir)
    fs = load_feature_set()
    trips = tables.trips.sort_values("requested_at", kind="stable").reset_index(drop=True)
    complete = trips.dropna(subset=["pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng"])
    trip = complete.iloc[int(len(complete) * 0.9)]
    frame = build_frame("incident_risk", tables, fs)
    row = frame[frame["trip_id"] == trip["trip_id"]]
    assert len(row) == 1
    with safetyml_env(home), OnlineStore.open(home / STORE_FILE) as store:
        materialize(tables, fs, as_of=trip["requested_at"], store=store)
    process, url, log_path = start_service(home, root, {"SAFETYML_API_TOKEN": TOKEN}, timeout=STARTUP_TIMEOUT)
    merchant = str(tables.merchants["merchant_id"].iloc[0])
    yield Served(url, home, process, log_path, trip, row, merchant)
    stop_service(process)


# ------------------------------------------------------------------------------------------- health


def test_health_readiness_and_metadata(served: Served, trained_home: Any) -> None:
    from safetyml.features.definitions import load_feature_set
    from safetyml.scoring.policies import load_policies

    assert httpx.get(f"{served.url}/healthz").status_code == 200
    assert httpx.get(f"{served.url}/readyz").status_code == 200
    meta = httpx.get(f"{served.url}/metadata").json()
    expected = {task: str(result.model_version) for task, result in trained_home.results.items()}
    assert meta["model_versions"] == expected
    assert meta["feature_definitions_version"] == load_feature_set().version
    assert meta["policy_versions"] == load_policies().versions()
    assert pd.Timestamp(meta["online_store"]["as_of"]) == pd.Timestamp(served.trip["requested_at"])
    assert meta["authenticated"] is True


# ------------------------------------------------------------------------------------------- scoring


def test_trip_score_over_http_equals_offline_score(served: Served) -> None:
    """Parity: the service's score for a trip equals the offline frame's score at the same as_of."""
    import bentoml

    from safetyml import tracking
    from safetyml.features.definitions import load_feature_set
    from safetyml.scoring.policies import load_policies
    from safetyml.scoring.scorer import Scorer
    from tests.fixtures_training import safetyml_env

    with bentoml.SyncHTTPClient(served.url, token=TOKEN) as client:
        body = client.score_trip(**_trip_payload(served.trip))
    served.decision_ids.append(body["decision_id"])
    with safetyml_env(served.home):
        model, ref = tracking.load_model("incident_risk", "champion")
    offline = Scorer(
        {"incident_risk": model},
        feature_set=load_feature_set(),
        model_versions={"incident_risk": ref.version},
    )
    expected = offline.score_features("incident_risk", served.trip_frame_row, explain=True)
    assert abs(body["probability"] - float(expected["probability"].iloc[0])) <= 1e-9
    assert body["model_version"] == ref.version and body["cold_start"] is False
    policy = load_policies().for_city(str(served.trip["city"]))
    assert body["policy_version"] == policy.label
    assert (body["risk_tier"], body["action"]) == policy.decide_one("incident_risk", body["probability"])
    assert [r["feature"] for r in body["reasons"]] == [r["feature"] for r in expected["reasons"].iloc[0]]
    assert 1 <= len(body["reasons"]) <= 3 and all(r["text"] for r in body["reasons"])
    uuid.UUID(body["decision_id"])


def test_merchant_score_has_credit_score_grade_and_action(served: Served) -> None:
    from safetyml.credit_score import credit_grade, credit_points, credit_scale
    from safetyml.scoring.policies import load_policies

    response = served.post("/score_merchant", {"merchant_id": served.known_merchant})
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 < body["probability_of_default"] < 1.0
    assert body["credit_score"] == pytest.approx(
        credit_points(body["probability_of_default"], credit_scale())
    )
    assert body["grade"] == credit_grade(body["credit_score"], credit_scale())
    policy = load_policies().for_market(body["market"])
    assert (body["risk_tier"], body["action"]) == policy.decide_one(
        "merchant_credit", body["probability_of_default"]
    )
    assert body["cold_start"] is False and body["reasons"]
    assert pd.Timestamp(body["as_of"]) == pd.Timestamp(served.trip["requested_at"])
    too_early = served.post(
        "/score_merchant", {"merchant_id": served.known_merchant, "as_of": "2020-01-01T00:00:00Z"}
    )
    assert too_early.status_code == 422 and "as_of" in too_early.text


def test_batch_endpoints_match_single_calls(served: Served) -> None:
    items = [_trip_payload(served.trip, order_value=v) for v in (5.0, 50.0, 500.0)]
    batch = served.post("/score_trips", {"items": items})
    assert batch.status_code == 200, batch.text
    singles = [served.post("/score_trip", item).json()["probability"] for item in items]
    assert [item["probability"] for item in batch.json()["items"]] == singles
    merchants = served.post(
        "/score_merchants", {"items": [{"merchant_id": served.known_merchant}, {"merchant_id": "M_NEW"}]}
    )
    assert merchants.status_code == 200
    assert [m["cold_start"] for m in merchants.json()["items"]] == [False, True]


def test_unknown_rider_and_merchant_get_cold_start_not_an_error(served: Served) -> None:
    response = served.post(
        "/score_trip", _trip_payload(served.trip, rider_id="R_NEVER_SEEN", merchant_id="M_NEVER_SEEN")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cold_start"] is True and 0.0 < body["probability"] < 1.0
    assert body["market"] == "default"  # no merchant, no city: the default policy
    with_city = served.post(
        "/score_trip", _trip_payload(served.trip, rider_id="R_NEVER_SEEN", city="mexico_city")
    )
    assert with_city.json()["market"] == "MX" and with_city.json()["cold_start"] is True


# ------------------------------------------------------------------------------------------- security


def test_scoring_and_reload_need_the_bearer_token(served: Served) -> None:
    payload = _trip_payload(served.trip)
    for token in (None, "wrong-token", TOKEN + "x"):
        response = served.post("/score_trip", payload, token=token)
        assert response.status_code == 401
        assert "Authorization: Bearer" in response.json()["detail"]
    basic = httpx.post(f"{served.url}/score_trip", json=payload, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert served.post("/reload", {}, token=None).status_code == 401
    assert served.post("/score_merchants", {"items": [{"merchant_id": "M1"}]}, token=None).status_code == 401
    assert httpx.get(f"{served.url}/healthz").status_code == 200  # probes stay open
    # deny by default: a route nobody listed is refused without the token, not merely not found
    assert httpx.post(f"{served.url}/score_trip/", json=payload).status_code == 401
    assert httpx.get(f"{served.url}/no_such_route").status_code == 401
    assert httpx.get(f"{served.url}/no_such_route", headers=served.headers()).status_code == 404


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"pickup_lat": 95.0}, "pickup_lat", "less than or equal to 90"),
        ({"distance_km": -1}, "distance_km", "greater than or equal to 0"),
        ({"payment_method": "bitcoin"}, "payment_method", "'card', 'cash', 'wallet' or 'voucher'"),
        ({"requested_at": "2026-09-01T10:00:00"}, "requested_at", "time zone"),
        ({"requested_at": "yesterday"}, "requested_at", "RFC 3339"),
        ({"requested_at": "1700000000"}, "requested_at", "RFC 3339"),
        ({"requested_at": 1700000000}, "requested_at", "RFC 3339"),
        ({"pickup_lat": True}, "pickup_lat", "valid number"),
        ({"distance_km": False}, "distance_km", "valid number"),
        ({"rain": 0}, "rain", "valid boolean"),
        ({"explain": "true"}, "explain", "valid boolean"),
        ({"city": None}, "city", "leave the field out"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
        ({"city": "atlantis"}, "city", "unknown city"),
        ({"rider_id": ""}, "rider_id", "at least 1 character"),
        ({"order_value": "a lot"}, "order_value", "valid number"),
        ({"requested_at": "9999-12-31T23:59:59Z"}, "requested_at", "between 2000 and 2099"),
    ],
)
def test_malformed_input_is_a_4xx_naming_field_and_rule(
    served: Served, changes: dict, field: str, rule: str
) -> None:
    response = served.post("/score_trip", _trip_payload(served.trip, **changes))
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert any(field in map(str, err["loc"]) and rule in err["msg"] for err in detail), detail


def test_missing_field_oversize_batch_and_broken_json_are_4xx(served: Served) -> None:
    payload = _trip_payload(served.trip)
    del payload["merchant_id"]
    missing = served.post("/score_trip", payload)
    assert missing.status_code == 400 and missing.json()["detail"][0]["loc"] == ["merchant_id"]
    oversize = served.post("/score_trips", {"items": [_trip_payload(served.trip)] * 1001})
    assert oversize.status_code == 413
    assert "at most 1000" in oversize.json()["error"]
    broken = httpx.post(
        f"{served.url}/score_trip",
        content=b'{"rider_id": ',
        headers={**served.headers(), "content-type": "application/json"},
    )
    assert broken.status_code == 400
    not_object = served.post("/score_merchant", [1, 2, 3])
    assert not_object.status_code == 400


def _raw(
    served: Served, route: str, body: bytes, content_type: str | None = "application/json"
) -> httpx.Response:
    headers = dict(served.headers())
    if content_type is not None:
        headers["content-type"] = content_type
    return httpx.post(f"{served.url}{route}", content=body, headers=headers, timeout=60)


def test_body_limits_content_type_duplicate_keys_and_nulls(served: Served) -> None:
    payload = _trip_payload(served.trip)
    body = json.dumps(payload).encode()
    assert _raw(served, "/score_trip", body).status_code == 200
    assert _raw(served, "/score_trip", body, "application/json; charset=utf-8").status_code == 200
    for media in ("text/plain", None, "application/x-www-form-urlencoded"):
        refused = _raw(served, "/score_trip", body, media)
        assert refused.status_code == 415 and "application/json" in refused.json()["error"], media
    # duplicate keys: the first would be scored as one rider, the second logged as another
    duplicated = body[:-1] + b', "rider_id": "R_OTHER"}'
    answer = _raw(served, "/score_trip", duplicated)
    assert answer.status_code == 400 and "duplicate JSON key 'rider_id'" in answer.json()["error"]
    nan = _raw(served, "/score_trip", body.replace(b'"order_value": ', b'"order_value": NaN, "x": '))
    assert nan.status_code == 400
    # /reload with a multipart body (no boundary) is refused, not a 500
    multipart = _raw(served, "/reload", b"--x--", "multipart/form-data")
    assert multipart.status_code == 415
    # as_of: null is declared nullable and means "now"; the OpenAPI document says so
    merchant = served.post("/score_merchant", {"merchant_id": served.known_merchant, "as_of": None})
    assert merchant.status_code == 200, merchant.text
    spec = httpx.get(f"{served.url}/docs.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    trip, merchant_schema = (
        schemas["TripScoreRequestIODescriptor"],
        schemas["MerchantScoreRequestIODescriptor"],
    )
    assert merchant_schema["properties"]["as_of"]["nullable"] is True
    assert trip["properties"]["pickup_lat"]["nullable"] is True
    assert "nullable" not in trip["properties"]["city"] and "sao_paulo" in trip["properties"]["city"]["enum"]
    assert trip["properties"]["explain"]["type"] == "boolean"


def test_oversize_body_is_refused_before_it_is_read(served: Served) -> None:
    """A 50 MB Content-Length gets its 413 at once, although only a few bytes were sent."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /score_trips HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 50000000\r\n\r\n".encode()
            + b'{"items": ['
        )
        started = time.monotonic()
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert time.monotonic() - started < 5
    # a chunked body (no Content-Length) is cut off as soon as it passes 1 MiB
    chunks = (b'{"items": [' + b" " * 65536 for _ in range(40))
    chunked = httpx.post(
        f"{served.url}/score_trips",
        content=chunks,
        headers={**served.headers(), "content-type": "application/json"},
        timeout=60,
    )
    assert chunked.status_code == 413 and "1,048,576" in chunked.json()["error"]


def test_fuzzing_the_openapi_document_finds_no_server_error_and_no_accepted_invalid_input(
    served: Served, tmp_path: Path
) -> None:
    """schemathesis against the live service, bounded: every answer < 500, and every request that breaks
    the published schema is refused."""
    report = tmp_path / "junit.xml"
    config = tmp_path / "schemathesis.toml"  # 413 (body or batch over the cap) is a refusal too
    config.write_text(
        "[checks.negative_data_rejection]\nexpected-statuses = "
        '["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]\n'
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(config),
            "run",
            f"{served.url}/docs.json",
            "--checks",
            "not_a_server_error,negative_data_rejection",
            "--max-time",
            "45",
            "--seed",
            "13",
            "--request-timeout",
            "20",
            "--exclude-path",
            "/reload",  # each valid call reloads the champions (1-2 s); its body rules are tested above
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "<testcase" in report.read_text()


def test_the_champion_poll_reads_the_registry_aliases(served: Served) -> None:
    from safetyml.scoring.reload import registry_champions
    from tests.fixtures_training import safetyml_env

    meta = httpx.get(f"{served.url}/metadata", timeout=30).json()
    names = {**meta["model_names"], "nothing": "no-such-model"}
    with safetyml_env(served.home):
        assert registry_champions(names) == meta["model_versions"]  # unknown names are left out


# ------------------------------------------------------------------------------------------- audit, reload


def test_a_decision_is_in_the_audit_log(served: Served) -> None:
    from safetyml.scoring.audit import get_decision

    payload = _trip_payload(served.trip, order_value=123.45)
    body = served.post("/score_trip", payload).json()
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        record = get_decision(body["decision_id"], served.home / "audit.sqlite")
        time.sleep(0.1)
    assert record is not None
    assert record["probability"] == body["probability"]
    assert (record["model_version"], record["policy_version"], record["action"]) == (
        body["model_version"],
        body["policy_version"],
        body["action"],
    )
    # the snapshot holds exactly the champion's (selected) features; the request is kept as sent
    from safetyml.tracking import load_model
    from tests.fixtures_training import safetyml_env

    with safetyml_env(served.home):
        model, _ = load_model("incident_risk")
    assert set(record["features"]) == set(model.features)
    assert record["request"]["order_value"] == 123.45
    if "trip_order_value" in model.features:  # selection decides whether the model reads it
        assert record["features"]["trip_order_value"] == 123.45
    assert [r["feature"] for r in record["reasons"]] == [r["feature"] for r in body["reasons"]]
    assert record["request"]["rider_id"] == payload["rider_id"]


def _wait_all_workers_on(served: Served, version: str, timeout: float = 20.0) -> None:
    """Until 12 consecutive fresh connections (spread over the workers) all answer with ``version``."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {
            served.post("/score_trip", _trip_payload(served.trip)).json()["model_version"] for _ in range(12)
        }
        if seen == {version}:
            return
        assert time.monotonic() < deadline, f"workers still on {seen}, expected {version}"
        time.sleep(0.5)


def test_reload_swaps_models_without_failing_requests_in_flight(served: Served) -> None:
    from safetyml import tracking
    from tests.fixtures_training import safetyml_env

    with safetyml_env(served.home):  # a second registered version under a test alias (this home is a copy)
        for task in ("incident_risk", "merchant_credit"):
            ref = tracking.get_alias(tracking.load_model(task, "champion")[1].name, "champion")
            source = tracking._client().get_model_version(ref.name, ref.version).source
            tracking.register(source, ref.name, ref.run_id, {"purpose": "reload test"}, alias="reload_test")
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = served.post("/score_trip", _trip_payload(served.trip))
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.add(response.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    swapped = served.post("/reload", {"alias": "reload_test"})
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert swapped.status_code == 200, swapped.text
    new = swapped.json()["model_versions"]["incident_risk"]
    assert new != swapped.json()["previous_versions"]["incident_risk"]
    assert statuses and set(statuses) == {200}
    assert new in versions
    _wait_all_workers_on(served, new)  # the other worker follows within a few seconds
    refused = served.post("/reload", {"alias": "no_such_alias"})
    assert refused.status_code == 409 and "previous models kept" in refused.text
    back = served.post("/reload", {"alias": "champion"})
    assert back.status_code == 200 and back.json()["model_versions"]["incident_risk"] != new
    _wait_all_workers_on(served, back.json()["model_versions"]["incident_risk"])
    bad_alias = served.post("/reload", {"alias": "../etc"})
    assert bad_alias.status_code == 400


def test_sighup_reloads_the_worker(served: Served) -> None:
    import psutil

    workers = [p for p in psutil.Process(served.process.pid).children(recursive=True) if "python" in p.name()]
    assert workers
    before = served.log_path.read_text().count("models reloaded")
    for worker in workers:
        worker.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while served.log_path.read_text().count("models reloaded") <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served.log_path.read_text().count("models reloaded") > before
    assert served.post("/score_trip", _trip_payload(served.trip)).status_code == 200


def test_example_curl_works_against_the_server(served: Served) -> None:
    """The demo's ready-to-paste curl (real rider and merchant from the store) gets a 200 and a decision."""
    from safetyml.scoring.examples import example_curl

    command = example_curl(
        port=int(served.url.rsplit(":", 1)[1]), store_path=served.home / "online_store.sqlite"
    )
    result = subprocess.run(
        ["bash", "-c", command + " -w '\\n%{http_code}'"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SAFETYML_API_TOKEN": TOKEN},
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "200", result.stdout + result.stderr
    decision = json.loads(body)
    served.decision_ids.append(decision["decision_id"])
    assert decision["cold_start"] is False and decision["model_version"]


def test_graceful_stop_loses_no_decision(served: Served) -> None:
    """Last test of the module: score more, SIGTERM the server, every decision returned is in the log."""
    from safetyml.scoring.audit import read_decisions

    items = [_trip_payload(served.trip, order_value=float(v)) for v in range(1, 201)]
    assert served.post("/score_trips", {"items": items}).status_code == 200
    for value in range(20):
        assert (
            served.post("/score_trip", _trip_payload(served.trip, distance_km=float(value))).status_code
            == 200
        )
    import psutil

    workers = psutil.Process(served.process.pid).children(recursive=True)
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(60)
    psutil.wait_procs(workers, timeout=30)
    assert not [w for w in workers if w.is_running()], "a worker outlived the server"
    stored = set(read_decisions(path=served.home / "audit.sqlite")["decision_id"])
    assert len(served.decision_ids) > 220
    missing = set(served.decision_ids) - stored
    assert not missing, f"{len(missing)} decisions missing from the audit log"
    log = served.log_path.read_text()
    assert "audit log" in log and "closed" in log, log[-2000:]
