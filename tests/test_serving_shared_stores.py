"""The service on the shared stores of a multi-replica deployment: the online store on a real redis-server
(``SAFETYML_ONLINE_STORE_URL``) and the audit log on a real PostgreSQL (``SAFETYML_AUDIT_URL``), both on
127.0.0.1 (tests/fixtures_servers.py). Its answers equal the in-process scorer's on the embedded SQLite
store materialized at the same as_of, and every decision it returned is in PostgreSQL, none on disk."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from safetyml import envvars
from safetyml.envvars import environment
from tests.fixtures_servers import start_service, stop_service

pytestmark = pytest.mark.slow

TOKEN = "test-token-" + uuid.uuid4().hex


def _database(postgres: Any, name: str) -> str:
    """A fresh database on the session's PostgreSQL (other tests keep their decisions elsewhere)."""
    import psycopg

    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


def test_service_on_redis_and_postgresql_answers_as_on_sqlite(
    trained_home: Any, redis_server: Any, postgres: Any, tmp_path: Path
) -> None:
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.online import STORE_FILE, OnlineStore, materialize
    from safetyml.scoring.audit import read_decisions
    from safetyml.scoring.schemas import MerchantScoreRequest, TripScoreRequest
    from safetyml.scoring.scorer import Scorer
    from safetyml.tables import load_tables
    from tests.fixtures_training import safetyml_env
    from tests.test_serving_api import _trip_payload

    home = tmp_path / "home"
    skip = shutil.ignore_patterns("online_store*", "audit*", "serving_*")
    shutil.copytree(trained_home.home, home, ignore=skip)
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    audit_url = _database(postgres, "serving_shared_stores")
    tables = load_tables(trained_home.data_dir)
    fs = load_feature_set()
    trips = tables.trips.dropna(subset=["pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng"])
    trips = trips.sort_values("requested_at", kind="stable")
    as_of = trips["requested_at"].iloc[int(len(trips) * 0.8)]
    with safetyml_env(home), environment({envvars.ONLINE_STORE_URL: redis_url}):
        materialize(tables, fs, as_of=as_of)  # the default store follows the setting: Redis
    assert not (home / STORE_FILE).exists()
    reference = OnlineStore.open(tmp_path / "reference.sqlite")
    materialize(tables, fs, as_of=as_of, store=reference)
    with safetyml_env(home):
        offline = Scorer.from_registry(store_path=tmp_path / "reference.sqlite")
    later = trips[trips["requested_at"] >= as_of].head(8)
    payloads = [_trip_payload(trip) for _, trip in later.iterrows()]
    payloads.append(_trip_payload(later.iloc[0], rider_id="R_NEVER_SEEN"))
    merchant = str(tables.merchants["merchant_id"].iloc[3])

    env = {
        envvars.API_TOKEN: TOKEN,
        envvars.ONLINE_STORE_URL: redis_url,
        envvars.AUDIT_URL: audit_url,
        envvars.SERVE_POLL_SECONDS: "0",
    }
    process, url, log_path = start_service(home, tmp_path, env, workers=1)
    received = []
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        meta = httpx.get(f"{url}/metadata", timeout=30).json()
        assert meta["online_store"]["path"] == redis_url
        assert pd.Timestamp(meta["online_store"]["as_of"]) == pd.Timestamp(as_of)
        for payload in payloads:
            body = httpx.post(f"{url}/score_trip", json=payload, headers=headers, timeout=60).json()
            expected = offline.score_trip(TripScoreRequest(**payload))
            assert body["probability"] == expected.probability, payload
            assert body["cold_start"] == expected.cold_start
            assert [r["feature"] for r in body["reasons"]] == [r.feature for r in expected.reasons]
            received.append(body["decision_id"])
        assert body["cold_start"] is True  # the rider never seen
        body = httpx.post(f"{url}/score_merchant", json={"merchant_id": merchant}, headers=headers).json()
        expected = offline.score_merchant(MerchantScoreRequest(merchant_id=merchant))
        assert body["probability_of_default"] == expected.probability_of_default
        assert body["credit_score"] == expected.credit_score
        received.append(body["decision_id"])
    finally:
        stop_service(process)
        offline.store.close()
        reference.close()
    with environment({envvars.AUDIT_URL: audit_url}):
        stored = read_decisions(path=home / "audit.sqlite")
    assert set(received) <= set(stored["decision_id"]), log_path.read_text()[-3000:]
    assert not (home / "audit.sqlite").exists()  # the decisions went to PostgreSQL only
