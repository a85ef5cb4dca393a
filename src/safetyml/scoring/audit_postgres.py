"""The decision audit store on PostgreSQL (``SAFETYML_AUDIT_URL=postgresql://…``), for replicas on several
machines; the same contract as :class:`safetyml.scoring.audit.SQLiteAuditStore`.

Each worker still makes its decisions durable in its local journal first (see :mod:`safetyml.scoring.audit`);
this store is where the shipper puts them: plain ``INSERT`` (an id already stored is refused), the journal
offset updated in the same transaction, and "down" (connection refused, server restarting) meaning the
decisions wait in the journal. Column types are those of the SQLite store (timestamps as ISO text, nested
JSON as text), so the two hold identical records.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from safetyml._optional import require
from safetyml.scoring.audit import COLUMNS, CONFLICT_COLUMNS, TABLES_DDL, DuplicateDecisionError, SQLStore

_SCHEMA = (
    TABLES_DDL
    + """
CREATE TABLE IF NOT EXISTS decision_conflicts (
    id BIGSERIAL PRIMARY KEY,
    decision_id TEXT NOT NULL,
    journal TEXT NOT NULL,
    journal_offset BIGINT NOT NULL,
    reason TEXT NOT NULL,
    record TEXT NOT NULL,
    detected_at TEXT NOT NULL
);
"""
)
_INSERT = f"INSERT INTO decisions ({', '.join(COLUMNS)}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
_CONFLICT = (
    f"INSERT INTO decision_conflicts ({', '.join(CONFLICT_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in CONFLICT_COLUMNS)})"
)


class PostgresAuditStore(SQLStore):
    """Shipped decisions in PostgreSQL; one connection, reopened after the server went away."""

    placeholder = "%s"
    # COLLATE "C": byte order, as SQLite sorts text, so both stores list decisions in the same order
    order = ' ORDER BY decided_at COLLATE "C", decision_id COLLATE "C"'
    conflict_order = "id"

    def __init__(self, url: str, timeout: float = 30.0):
        psycopg = require("psycopg", "postgres")
        self._psycopg = psycopg
        self._unique = psycopg.errors.UniqueViolation
        self.errors: tuple[type[BaseException], ...] = (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            OSError,
        )
        """What "the store is down" looks like: the shipper retries on these."""
        self.url = url
        self.timeout = timeout
        self._conn: Any = None

    def _db(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(1, int(self.timeout))
            )
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(4242013)")  # one schema creator at a time
                self._conn.execute(_SCHEMA)
        return self._conn

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert decisions; raises DuplicateDecisionError (nothing inserted) if an id is already stored."""
        conn = self._db()
        try:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(_INSERT, rows)
        except self._unique as exc:
            raise DuplicateDecisionError(f"audit store {self._where()}: {exc}") from None

    def ship(self, journal: str, rows: list[tuple[int, tuple[Any, ...]]], new_offset: int) -> int:
        """Insert journal rows and move ``journal``'s offset in one transaction; an id already stored goes to
        ``decision_conflicts``. Returns how many did."""
        conn = self._db()
        conflicts = 0
        with conn.transaction(), conn.cursor() as cursor:
            try:
                with conn.transaction():  # a savepoint: a duplicate undoes only the batch insert
                    cursor.executemany(_INSERT, [row for _, row in rows])
            except self._unique:
                now = datetime.now().astimezone().isoformat()
                for offset, row in rows:
                    try:
                        with conn.transaction():
                            cursor.execute(_INSERT, row)
                    except self._unique as exc:
                        conflicts += 1
                        reason = str(exc).splitlines()[0]
                        cursor.execute(_CONFLICT, (row[0], journal, offset, reason, json.dumps(row), now))
            cursor.execute(
                "INSERT INTO audit_journal_offsets VALUES (%s, %s) "
                "ON CONFLICT (journal) DO UPDATE SET shipped_offset = excluded.shipped_offset",
                (journal, new_offset),
            )
        return conflicts

    def _where(self) -> str:
        info = self._conn.info if self._conn is not None else None
        return f"postgresql://{info.host}:{info.port}/{info.dbname}" if info else "postgresql"


__all__ = ["PostgresAuditStore"]
