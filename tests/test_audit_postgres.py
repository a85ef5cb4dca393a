"""The audit log on a real PostgreSQL (SAFETYML_AUDIT_URL), started on 127.0.0.1 for the session and always
stopped (tests/fixtures_servers.py): same records as SQLite for the same decisions, ids refused the same
way, and a server that is down then back loses nothing (the decisions wait in the journal)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from safetyml.envvars import environment
from tests.fixtures_servers import PG_BIN, Postgres

pytestmark = pytest.mark.slow

# the server helper moved to tests/fixtures_servers.py (session fixture ``postgres``); re-exported for
# tests/conftest.py's ``postgres_server``
BIN = PG_BIN


def _decisions(n: int) -> list[dict]:
    base = datetime(2026, 11, 1, 12, tzinfo=UTC)
    return [
        {
            "decision_id": str(uuid.uuid4()),
            "decided_at": base + timedelta(seconds=i),
            "task": "merchant_credit" if i % 3 == 0 else "incident_risk",
            "subject_id": f"r{i}/m{i}",
            "market": "BR" if i % 2 else None,
            "model_name": "m",
            "model_version": "3",
            "policy_version": "BR@1",
            "probability": i / 997,
            "credit_score": 600.5 + i if i % 3 == 0 else None,
            "grade": "B" if i % 3 == 0 else None,
            "risk_tier": "low",
            "action": "allow",
            "cold_start": i % 4 == 0,
            "features": {"x": i, "missing": float("nan"), "text": "é ✓"},
            "reasons": [{"feature": "x", "value": i}],
            "request": {"rider_id": f"r{i}"},
        }
        for i in range(n)
    ]


def _record_all(decisions: list[dict], home: Path, url: str | None) -> tuple[pd.DataFrame, list, dict]:
    from safetyml.scoring.audit import AuditLog, get_decision, read_decisions

    with environment({"SAFETYML_AUDIT_URL": url}):
        log = AuditLog(home / "audit.sqlite")
        with log.batch():
            for d in decisions:
                log.record(d)
        log.record({**decisions[0], "action": "block"})  # a duplicate id: refused, kept aside
        log.flush()
        conflicts = [(c["decision_id"], c["journal_offset"] > 0) for c in log.conflicts()]
        log.close()
        frame = read_decisions(since=datetime(2026, 11, 1, 12, 0, 5, tzinfo=UTC), path=home / "audit.sqlite")
        one = get_decision(decisions[3]["decision_id"], home / "audit.sqlite")
    return frame, conflicts, one


def test_postgres_and_sqlite_hold_identical_records(postgres: Postgres, tmp_path: Path) -> None:
    decisions = _decisions(120)
    on_sqlite = _record_all(decisions, tmp_path / "sqlite", None)
    on_postgres = _record_all(decisions, tmp_path / "pg", postgres.url)
    assert len(on_sqlite[0]) == 115
    pd.testing.assert_frame_equal(on_sqlite[0], on_postgres[0])
    assert on_sqlite[1] == on_postgres[1] == [(decisions[0]["decision_id"], True)]
    assert on_sqlite[2] == on_postgres[2] and on_postgres[2]["features"]["text"] == "é ✓"
    assert not (tmp_path / "pg" / "audit.sqlite").exists()  # the one setting moved the store entirely


def test_postgres_down_keeps_decisions_in_the_journal_until_it_is_back(
    postgres: Postgres, tmp_path: Path
) -> None:
    from safetyml.scoring.audit import AuditLog, read_decisions

    decisions = _decisions(60)
    with environment({"SAFETYML_AUDIT_URL": postgres.url}):
        log = AuditLog(tmp_path / "audit.sqlite", store_timeout=1.0)
        postgres.stop()
        try:
            with log.batch():
                for d in decisions:
                    log.record(d)  # durable in the journal although the database is down
            deadline = time.monotonic() + 20
            while log.store_error is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert log.store_error is not None and log.queue_depth() == 60
        finally:
            postgres.start()
        log.flush(timeout=60)
        assert log.queue_depth() == 0
        log.close()
        stored = set(read_decisions(path=tmp_path / "audit.sqlite")["decision_id"])
    assert {d["decision_id"] for d in decisions} <= stored
