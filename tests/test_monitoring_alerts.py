"""Alert state in the audit store: open, dedupe, acknowledge, resolve, reopen; fingerprints."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from safetyml.monitoring.alerts import (
    AlertError,
    Firing,
    acknowledge,
    apply_firings,
    fingerprint,
    list_alerts,
)


def _firing(active: bool, city: str = "sao_paulo", value: float = 1.0) -> Firing:
    return Firing(
        rule_id="incident_rate_shift",
        market="BR",
        labels={"indicator": "incident_rate_city", "city": city},
        active=active,
        severity="critical",
        since=pd.Timestamp("2026-09-01", tz="UTC"),
        value=value,
        signal=6.0,
        message="x",
    )


def test_fingerprint_is_stable_and_ignores_label_order():
    a = fingerprint("r", "BR", {"city": "x", "type": "theft"})
    assert a == fingerprint("r", "BR", {"type": "theft", "city": "x"})
    assert a != fingerprint("r", "MX", {"city": "x", "type": "theft"})
    assert len(a) == 16


def test_alert_lifecycle_is_persisted_in_the_audit_sqlite_file(tmp_path):
    from safetyml.scoring.audit import AuditLog

    path = tmp_path / "audit.sqlite"
    AuditLog(path).close()  # the audit log's file: alerts live beside its decisions table
    t0 = pd.Timestamp("2026-09-02", tz="UTC")
    first = apply_firings([_firing(True), _firing(False, city="rio")], now=t0, path=path)
    assert len(first["opened"]) == 1 and not first["resolved"]
    alert_id = first["opened"][0]
    # the same condition firing again is deduplicated into the open alert
    again = apply_firings([_firing(True, value=2.0)], now=t0 + pd.Timedelta(days=1), path=path)
    assert again == {"opened": [], "updated": [alert_id], "resolved": []}
    row = acknowledge(alert_id, by="ana", now=t0 + pd.Timedelta(days=1, hours=2), path=path)
    assert row["state"] == "acknowledged" and row["acknowledged_by"] == "ana"
    assert acknowledge(alert_id, path=path)["acknowledged_by"] == "ana"  # twice: no-op
    still = apply_firings([_firing(True, value=3.0)], now=t0 + pd.Timedelta(days=2), path=path)
    assert still["updated"] == [alert_id]
    cleared = apply_firings([_firing(False)], now=t0 + pd.Timedelta(days=3), path=path)
    assert cleared["resolved"] == [alert_id]
    with pytest.raises(AlertError, match="resolved"):
        acknowledge(alert_id, path=path)
    with pytest.raises(AlertError, match="no alert with id 999"):
        acknowledge(999, path=path)
    # a new firing after resolution opens a new alert with the same fingerprint
    reopened = apply_firings([_firing(True)], now=t0 + pd.Timedelta(days=5), path=path)
    assert reopened["opened"] and reopened["opened"][0] != alert_id
    table = list_alerts(path=path)
    assert table["state"].tolist() == ["open", "resolved"]
    old = table[table["alert_id"] == alert_id].iloc[0]
    assert old["firings"] == 3 and old["value"] == 3.0 and old["opened_at"].startswith("2026-09-01")
    assert old["resolved_at"].startswith("2026-09-05")
    assert list_alerts("active", path=path)["alert_id"].tolist() == reopened["opened"]
    with sqlite3.connect(path) as conn:  # one file, both tables
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"decisions", "alerts"} <= names
    with pytest.raises(AlertError, match="unknown alert state"):
        list_alerts("closed", path=path)
