"""The decision audit log: every score the service gives, kept in SQLite under ``SAFETYML_HOME``.

A decision is recorded with its id, time, model and policy versions, the feature values the model saw,
the score, the reasons and the action, so an appeal can be reviewed and the decision replayed. Writing
must not slow the response path: :meth:`AuditLog.record` only puts the record on a queue; a single writer
thread batches records into SQLite (WAL mode, so several server workers can share the file).
:meth:`AuditLog.close` drains the queue, so no decision is lost on a normal stop.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from safetyml.values import jsonable, utc_timestamp

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.sqlite"
_BATCH = 500
_STOP = object()

COLUMNS: tuple[str, ...] = (
    "decision_id",
    "decided_at",
    "task",
    "subject_id",
    "market",
    "model_name",
    "model_version",
    "policy_version",
    "probability",
    "credit_score",
    "grade",
    "risk_tier",
    "action",
    "cold_start",
    "features",
    "reasons",
    "request",
)
# the columns that hold nested JSON (shown as tables of their own rather than as one value)
NESTED_COLUMNS = ("features", "reasons", "request")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    decided_at TEXT NOT NULL,
    task TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    market TEXT,
    model_name TEXT,
    model_version TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    probability REAL NOT NULL,
    credit_score REAL,
    grade TEXT,
    risk_tier TEXT,
    action TEXT NOT NULL,
    cold_start INTEGER NOT NULL,
    features TEXT NOT NULL,
    reasons TEXT NOT NULL,
    request TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_decided_at ON decisions (decided_at);
"""


def default_path() -> Path:
    from safetyml import paths

    return paths.home() / AUDIT_FILE


def _dumps(value: Any) -> str:
    return json.dumps(jsonable(value), default=str, separators=(",", ":"))


def _utc_iso(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds, so text order is time order in SQLite."""
    return utc_timestamp(moment).to_pydatetime().isoformat(timespec="microseconds")


def _row(decision: dict[str, Any]) -> tuple[Any, ...]:
    decided_at = decision["decided_at"]
    if isinstance(decided_at, datetime):
        decided_at = _utc_iso(decided_at)
    credit = decision.get("credit_score")
    return (
        str(decision["decision_id"]),
        decided_at,
        decision["task"],
        str(decision["subject_id"]),
        decision.get("market"),
        decision.get("model_name"),
        str(decision["model_version"]),
        decision["policy_version"],
        float(decision["probability"]),
        None if credit is None else float(credit),
        decision.get("grade"),
        decision.get("risk_tier"),
        decision["action"],
        int(bool(decision.get("cold_start", False))),
        _dumps(decision.get("features", {})),
        _dumps(decision.get("reasons", [])),
        _dumps(decision.get("request", {})),
    )


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create) the audit database in WAL mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


class AuditLog:
    """Asynchronous writer of decisions; :meth:`record` never waits for the disk."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        connect(self.path).close()  # create the schema now, so a bad path fails at start-up
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._written = 0
        self._thread = threading.Thread(target=self._run, name="safetyml-audit-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def written(self) -> int:
        """Decisions written so far (for tests and metrics)."""
        return self._written

    def record(self, decision: dict[str, Any]) -> None:
        """Queue one decision (a dict with the keys of :data:`COLUMNS`) for writing."""
        if self._closed:
            raise RuntimeError(
                f"audit log {self.path} is closed; decision {decision.get('decision_id')} not recorded"
            )
        self._queue.put(decision)

    def record_many(self, decisions: list[dict[str, Any]]) -> None:
        for decision in decisions:
            self.record(decision)

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every decision queued so far is in the database."""
        done = threading.Event()
        self._queue.put(done)
        if not done.wait(timeout):
            raise TimeoutError(f"audit log {self.path}: flush did not finish in {timeout} s")

    def close(self, timeout: float = 30.0) -> None:
        """Write everything still queued, then stop the writer thread. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "audit log %s: writer did not stop within %s s; some decisions may be lost",
                self.path,
                timeout,
            )
        else:
            log.info("audit log %s closed: %d decisions written", self.path, self._written)

    def _run(self) -> None:
        conn = connect(self.path)
        try:
            while True:
                item = self._queue.get()
                batch, events, stop = [], [], False
                while True:
                    if item is _STOP:
                        stop = True
                    elif isinstance(item, threading.Event):
                        events.append(item)
                    else:
                        batch.append(item)
                    if len(batch) >= _BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._write(conn, batch)
                for event in events:
                    event.set()
                if stop and self._queue.empty():
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, batch: list[dict[str, Any]]) -> None:
        try:
            rows = [_row(decision) for decision in batch]
        except (KeyError, TypeError, ValueError):
            rows = []
            for decision in batch:
                try:
                    rows.append(_row(decision))
                except (KeyError, TypeError, ValueError) as exc:
                    log.error(
                        "audit log: decision %s is malformed and was not written: %s",
                        decision.get("decision_id"),
                        exc,
                    )
        placeholders = ", ".join("?" for _ in COLUMNS)
        for attempt in range(5):
            try:
                with conn:
                    conn.executemany(
                        f"INSERT OR REPLACE INTO decisions ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                        rows,
                    )
                self._written += len(rows)
                return
            except sqlite3.OperationalError as exc:  # e.g. database locked by another worker for > timeout
                log.warning("audit log %s: write failed (attempt %d): %s", self.path, attempt + 1, exc)
        log.error("audit log %s: %d decisions could not be written", self.path, len(rows))


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("features", "reasons", "request"):
        row[key] = json.loads(row[key]) if row.get(key) else None
    row["cold_start"] = bool(row["cold_start"])
    return row


def get_decision(decision_id: str, path: Path | None = None) -> dict[str, Any] | None:
    """One decision by id (features, reasons and request decoded from JSON), or None."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return None
    conn = connect(path)
    try:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
    finally:
        conn.close()
    return _decode(dict(row)) if row is not None else None


def read_decisions(since: datetime | None = None, path: Path | None = None) -> pd.DataFrame:
    """All decisions made at or after ``since`` (UTC), oldest first; JSON columns stay as text."""
    path = Path(path) if path is not None else default_path()
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    conn = connect(path)
    try:
        query = f"SELECT {', '.join(COLUMNS)} FROM decisions"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE decided_at >= ?"
            params = (_utc_iso(since),)
        frame = pd.read_sql_query(query + " ORDER BY decided_at, decision_id", conn, params=params)
    finally:
        conn.close()
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True, format="ISO8601")
    frame["cold_start"] = frame["cold_start"].astype(bool)
    return frame


def export_decisions(out: Path, since: datetime | None = None, path: Path | None = None) -> int:
    """Write decisions made since ``since`` to a Parquet file; returns how many."""
    frame = read_decisions(since, path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return len(frame)
