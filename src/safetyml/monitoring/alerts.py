"""Alert state, kept in the same SQLite file as the decision audit log (``SAFETYML_HOME/audit.sqlite``).

An alert is identified for deduplication by its **fingerprint**: a hash of the rule id, the market and
the series labels (e.g. city). While an alert with a fingerprint is ``open`` or ``acknowledged``, new
firings of the same condition update it (``last_seen_at``, value, ``firings``) instead of opening another.
States: ``open`` → ``acknowledged`` (a person has seen it) → ``resolved`` (the condition cleared);
``open`` → ``resolved`` directly is allowed; ``resolved`` is final — a later firing opens a new alert.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from safetyml.errors import SafetymlError

State = Literal["open", "acknowledged", "resolved"]
STATES: tuple[State, ...] = ("open", "acknowledged", "resolved")
ACTIVE_STATES: tuple[State, ...] = ("open", "acknowledged")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    market TEXT NOT NULL,
    labels TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    opened_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    resolved_at TEXT,
    firings INTEGER NOT NULL DEFAULT 1,
    value REAL,
    signal REAL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_fingerprint ON alerts (fingerprint, state);
"""
COLUMNS = (
    "alert_id",
    "fingerprint",
    "rule_id",
    "market",
    "labels",
    "severity",
    "state",
    "opened_at",
    "last_seen_at",
    "acknowledged_at",
    "acknowledged_by",
    "resolved_at",
    "firings",
    "value",
    "signal",
    "message",
)


class AlertError(SafetymlError, ValueError):
    """An alert operation that cannot be done (unknown id, a transition not allowed)."""


@dataclass(frozen=True)
class Firing:
    """One rule's condition found active (or evaluated and inactive) for one series at evaluation time."""

    rule_id: str
    market: str
    labels: Mapping[str, str]
    active: bool
    severity: str = "warning"
    since: pd.Timestamp | None = None  # when the condition became active
    value: float | None = None
    signal: float | None = None
    message: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule_id, self.market, self.labels)


def fingerprint(rule_id: str, market: str, labels: Mapping[str, str]) -> str:
    """Stable id of "this rule on this series": sha1 of rule, market and sorted labels (16 hex chars)."""
    text = json.dumps([rule_id, market, sorted((str(k), str(v)) for k, v in labels.items())])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def default_path() -> Path:
    """The audit log's SQLite file: alerts live beside the decisions."""
    from safetyml.scoring import audit

    return audit.default_path()


def connect(path: Path | None = None) -> sqlite3.Connection:
    """Open the store (creating the alerts table); the audit module sets WAL mode and its own tables."""
    from safetyml.scoring import audit

    conn = audit.connect(Path(path) if path is not None else default_path())
    conn.executescript(_SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


def _iso(moment: Any) -> str:
    ts = pd.Timestamp(moment)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.isoformat()


def apply_firings(
    firings: Iterable[Firing], now: Any = None, path: Path | None = None
) -> dict[str, list[int]]:
    """Record one evaluation: open new alerts, update (dedupe) active ones, resolve cleared ones.

    Returns the alert ids ``opened``, ``updated`` and ``resolved``.
    """
    now_iso = _iso(now if now is not None else pd.Timestamp.now(tz="UTC"))
    result: dict[str, list[int]] = {"opened": [], "updated": [], "resolved": []}
    conn = connect(path)
    try:
        with conn:
            for f in firings:
                row = conn.execute(
                    "SELECT alert_id FROM alerts WHERE fingerprint = ? AND state IN ('open', 'acknowledged') "
                    "ORDER BY alert_id DESC LIMIT 1",
                    (f.fingerprint,),
                ).fetchone()
                if f.active and row is None:
                    cur = conn.execute(
                        "INSERT INTO alerts (fingerprint, rule_id, market, labels, severity, state,"
                        " opened_at, last_seen_at, value, signal, message)"
                        " VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
                        (
                            f.fingerprint,
                            f.rule_id,
                            f.market,
                            json.dumps(dict(f.labels), sort_keys=True),
                            f.severity,
                            _iso(f.since) if f.since is not None else now_iso,
                            now_iso,
                            f.value,
                            f.signal,
                            f.message,
                        ),
                    )
                    result["opened"].append(int(cur.lastrowid))
                elif f.active:
                    conn.execute(
                        "UPDATE alerts SET last_seen_at = ?, firings = firings + 1, value = ?, signal = ?, "
                        "message = ? WHERE alert_id = ?",
                        (now_iso, f.value, f.signal, f.message, row["alert_id"]),
                    )
                    result["updated"].append(int(row["alert_id"]))
                elif row is not None:
                    conn.execute(
                        "UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE alert_id = ?",
                        (now_iso, row["alert_id"]),
                    )
                    result["resolved"].append(int(row["alert_id"]))
    finally:
        conn.close()
    return result


def acknowledge(alert_id: int, by: str = "", now: Any = None, path: Path | None = None) -> dict[str, Any]:
    """Mark an open alert as acknowledged; acknowledging twice is a no-op, a resolved one an error."""
    conn = connect(path)
    try:
        with conn:
            row = conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (int(alert_id),)).fetchone()
            if row is None:
                raise AlertError(f"no alert with id {alert_id} in {default_path() if path is None else path}")
            if row["state"] == "resolved":
                raise AlertError(
                    f"alert {alert_id} is resolved (at {row['resolved_at']}); nothing to acknowledge"
                )
            if row["state"] == "open":
                conn.execute(
                    "UPDATE alerts SET state = 'acknowledged', acknowledged_at = ?, acknowledged_by = ? "
                    "WHERE alert_id = ?",
                    (_iso(now if now is not None else pd.Timestamp.now(tz="UTC")), by or None, int(alert_id)),
                )
            return dict(conn.execute("SELECT * FROM alerts WHERE alert_id = ?", (int(alert_id),)).fetchone())
    finally:
        conn.close()


def list_alerts(state: str | None = None, path: Path | None = None) -> pd.DataFrame:
    """Alerts (newest first), optionally only those in ``state`` (``active`` = open or acknowledged)."""
    if state is not None and state not in (*STATES, "active"):
        raise AlertError(f"unknown alert state {state!r}; use one of {', '.join(STATES)} or active")
    conn = connect(path)
    try:
        query = f"SELECT {', '.join(COLUMNS)} FROM alerts"
        params: tuple[Any, ...] = ()
        if state == "active":
            query += " WHERE state IN ('open', 'acknowledged')"
        elif state is not None:
            query += " WHERE state = ?"
            params = (state,)
        return pd.read_sql_query(query + " ORDER BY alert_id DESC", conn, params=params)
    finally:
        conn.close()
