"""Appeals: recorded append-only next to the decisions, reviewers checked, overturn rates per grouping."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safetyml.scoring.appeals import (
    AppealError,
    all_overturn_rates,
    appeals_of,
    overturn_rates,
    read_appeals,
    record_appeal,
)
from safetyml.scoring.audit import AuditLog

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _decision(i: int, market: str = "BR", action: str = "block", version: str = "3", reasons=None) -> dict:
    return {
        "decision_id": str(uuid.uuid4()),
        "decided_at": T0 + timedelta(seconds=i),
        "task": "incident_risk",
        "subject_id": f"R{i}/M{i}",
        "market": market,
        "model_name": "safetyml-incident-risk",
        "model_version": version,
        "policy_version": f"{market}@2026.12.1",
        "probability": 0.3,
        "risk_tier": "critical",
        "action": action,
        "cold_start": False,
        "features": {"rider_incidents_30d": 2.0},
        "reasons": reasons
        if reasons is not None
        else [
            {"feature": "rider_incidents_30d", "group": "rider_incidents", "contribution_logodds": 0.9},
            {"feature": "dropoff_zone_trips_30d", "group": "dropoff_zone_trips", "contribution_logodds": 0.2},
        ],
        "request": {"rider_id": f"R{i}", "merchant_id": f"M{i}"},
    }


def _store(tmp_path: Path, decisions: list[dict]) -> Path:
    path = tmp_path / "audit.sqlite"
    log = AuditLog(path, fsync=False)
    log.record_many(decisions)
    log.close()
    return path


def test_appeal_is_recorded_with_the_decision_fields_and_cannot_be_changed(tmp_path: Path) -> None:
    d = _decision(1, market="MX", action="manual_review", version="7")
    path = _store(tmp_path, [d])
    appeal = record_appeal(
        d["decision_id"], "overturned", "ana.reviewer", "GPS glitch, not a detour", path=path
    )
    assert (appeal.market, appeal.action, appeal.model_version) == ("MX", "manual_review", "7")
    assert appeal.policy_version == "MX@2026.12.1"
    assert appeal.reason_codes == ["rider_incidents", "dropoff_zone_trips"]
    assert appeals_of(d["decision_id"], path) == [appeal]
    conn = sqlite3.connect(path)
    try:  # append-only: the store itself refuses edits and deletions
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE appeals SET outcome = 'upheld'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM appeals")
        with pytest.raises(sqlite3.IntegrityError):
            values = ("x", "y", "maybe", "r", "n", "t", "k", "BR", "a", "p", "m", "v", "[]")
            conn.execute(f"INSERT INTO appeals VALUES ({', '.join('?' * len(values))})", values)
    finally:
        conn.close()
    assert read_appeals(path)["outcome"].tolist() == ["overturned"]


def test_reviewer_on_the_decision_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    d = _decision(2)
    path = _store(tmp_path, [d])
    with pytest.raises(AppealError, match=r"reviewer 'R2' is already recorded .* rider_id"):
        record_appeal(d["decision_id"], "upheld", "R2", "self-review", path=path)
    with pytest.raises(AppealError, match="merchant_id"):
        record_appeal(d["decision_id"], "upheld", " m2 ", "case and spaces do not hide a person", path=path)
    record_appeal(d["decision_id"], "upheld", "ana", "first instance", path=path)
    with pytest.raises(AppealError, match=r"reviewer of appeal .* \(upheld\)"):
        record_appeal(d["decision_id"], "overturned", "ANA", "second instance by the same person", path=path)
    second = record_appeal(d["decision_id"], "overturned", "bruno", "second instance", path=path)
    assert [a.reviewer for a in appeals_of(d["decision_id"], path)] == ["ana", "bruno"]
    latest = read_appeals(path)  # the latest outcome stands
    assert latest["appeal_id"].tolist() == [second.appeal_id] and latest["outcome"].tolist() == ["overturned"]
    assert len(read_appeals(path, latest_only=False)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outcome": "reversed"}, "--outcome must be one of upheld, overturned"),
        ({"reviewer": "  "}, "--reviewer is required"),
        ({"note": ""}, "--note is required"),
        ({"decision_id": "no-such-id"}, "no decision 'no-such-id' in the audit log"),
    ],
)
def test_invalid_appeals_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    d = _decision(3)
    path = _store(tmp_path, [d])
    args = {"decision_id": d["decision_id"], "outcome": "upheld", "reviewer": "ana", "note": "ok"} | kwargs
    with pytest.raises(AppealError, match=message):
        record_appeal(**args, path=path)
    assert read_appeals(path).empty


def test_overturn_rates_by_market_action_reason_and_version(tmp_path: Path) -> None:
    # BR: 4 appeals, 3 overturned; MX: 2 appeals, 0 overturned. Block: 3 of 4 overturned.
    plan = [
        ("BR", "block", "3", "overturned"),
        ("BR", "block", "3", "overturned"),
        ("BR", "block", "4", "overturned"),
        ("BR", "manual_review", "4", "upheld"),
        ("MX", "block", "4", "upheld"),
        ("MX", "manual_review", "4", "upheld"),
    ]
    decisions = [
        _decision(i, m, a, v, reasons=None if i % 2 else [{"feature": "trip_rain", "group": "trip_rain"}])
        for i, (m, a, v, _) in enumerate(plan)
    ]
    path = _store(tmp_path, decisions)
    for d, (*_, outcome) in zip(decisions, plan, strict=True):
        record_appeal(d["decision_id"], outcome, "reviewer-x", "reviewed", path=path)
    rates = all_overturn_rates(path)
    market = rates["market"].set_index("market")
    assert market.loc["BR", ["appeals", "overturned"]].tolist() == [4, 3]
    assert market.loc["BR", "overturn_rate"] == 0.75 and market.loc["MX", "overturn_rate"] == 0.0
    assert market.loc["BR", "ci_low"] < 0.75 < market.loc["BR", "ci_high"] <= 1.0
    action = rates["action"].set_index("action")
    assert action.loc["block", ["appeals", "overturned"]].tolist() == [4, 3]
    version = rates["model_version"].set_index("model_version")
    assert version.loc["3", "overturn_rate"] == 1.0 and version.loc["4", "appeals"] == 4
    reason = rates["reason_code"].set_index("reason_code")  # odd i: two reasons; even i: trip_rain only
    assert reason.loc["trip_rain", ["appeals", "overturned"]].tolist() == [3, 2]
    assert reason.loc["rider_incidents", ["appeals", "overturned"]].tolist() == [3, 1]
    assert rates["policy_version"].set_index("policy_version").loc["MX@2026.12.1", "appeals"] == 2
    with pytest.raises(AppealError, match="expected one of market"):
        overturn_rates(read_appeals(path), "city")


def test_cli_appeal_appeals_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    d = _decision(5)
    _store(tmp_path, [d])
    runner = CliRunner()
    base = ["decisions", "appeal", d["decision_id"], "--outcome", "overturned", "--note", "wrong zone"]
    refused = runner.invoke(app, [*base, "--reviewer", "R5"])
    assert refused.exit_code == 2 and "already recorded on decision" in refused.output
    done = runner.invoke(app, [*base, "--reviewer", "carla"])
    assert done.exit_code == 0, done.output
    assert "overturned by carla" in done.output
    listed = runner.invoke(app, ["decisions", "appeals"])
    assert listed.exit_code == 0, listed.output
    assert (
        "1 decisions appealed, 1 overturned (100.0%)" in listed.output and "by reason_code" in listed.output
    )
    shown = runner.invoke(app, ["decisions", "show", d["decision_id"]])
    assert shown.exit_code == 0, shown.output
    assert "overturned by carla — wrong zone" in shown.output
    assert (
        "overturn rate of this decision's policy version" in shown.output and "BR@2026.12.1" in shown.output
    )


def test_an_unreachable_postgres_audit_store_is_a_clear_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetyml.cli import app

    monkeypatch.setenv("SAFETYML_AUDIT_URL", "postgresql://audit:s3cret@nowhere.invalid/audit")
    expected = r"appeals: cannot open the audit store postgresql://nowhere"
    with pytest.raises(AppealError, match=expected) as e:
        read_appeals(tmp_path / "audit.sqlite")
    assert "s3cret" not in str(e.value)
    assert not (tmp_path / "audit.sqlite").exists()  # appeals never fall back to a different store
    monkeypatch.setenv("SAFETYML_HOME", str(tmp_path))
    listed = CliRunner().invoke(app, ["decisions", "appeals"])
    assert listed.exit_code == 2 and "cannot open the audit store" in listed.output
    assert "s3cret" not in listed.output and "Traceback" not in listed.output
