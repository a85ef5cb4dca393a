"""Tables kept beside the decisions in the audit store: appeals and challenger scores.

One opener for both, so they always land in the **same store as the decisions they refer to**: the store
:func:`safetyml.scoring.audit.open_store` chooses (PostgreSQL when ``SAFETYML_AUDIT_URL`` is set, else the
SQLite file ``SAFETYML_HOME/audit.sqlite``). The connection is the audit store's own; this module only adds
the side tables' schema and the few differences between the two databases (placeholders, explicit
transactions, how a trigger refuses a change).

Column types are chosen so both databases read them the same way (TEXT, DOUBLE PRECISION, ISO timestamps
as text), so the same records read back as identical frames from either store (tested).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetyml.errors import SafetymlError


class SideTableError(SafetymlError, RuntimeError):
    """A side table (appeals, challenger scores) could not be opened in the audit store."""


@dataclass(frozen=True)
class SideSchema:
    """A side table's DDL for each database (``sqlite``/``postgres``), and the name used in errors."""

    what: str
    sqlite: str
    postgres: str


class SideTables:
    """The audit store's connection with ``schema`` created; queries are written with ``?`` placeholders.

    ``postgres`` tells which database it is (a few queries differ: ``INSERT OR IGNORE`` vs ``ON CONFLICT
    DO NOTHING``, ``rowid`` vs a ``seq`` column). Safe to share with one other thread only if the caller
    serialises use (the shadow writer owns its own instance).
    """

    def __init__(self, path: Path | None, schema: SideSchema):
        from safetyml.scoring.audit import default_path, open_store

        self.schema = schema
        self._store = open_store(Path(path) if path is not None else default_path())
        self.postgres = self._store.placeholder == "%s"
        self.where = getattr(self._store, "url", None) or str(getattr(self._store, "path", ""))
        try:
            conn = self._store._db()
            if self.postgres:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(4242014)")  # one schema creator at a time
                    conn.execute(schema.postgres)
            else:
                conn.executescript(schema.sqlite)
        except Exception as exc:
            self._store.close()
            raise SideTableError(f"{schema.what}: cannot open the audit store {self.shown()}: {exc}") from exc

    def shown(self) -> str:
        """The store's address without a password."""
        if not self.postgres:
            return self.where
        from urllib.parse import urlsplit

        parts = urlsplit(self.where)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def sql(self, query: str) -> str:
        return query.replace("?", "%s") if self.postgres else query

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._store._db()
        found = conn.execute(self.sql(query), params) if params else conn.execute(self.sql(query))
        return [tuple(r) for r in found.fetchall()]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction; yields an object with ``execute``/``executemany`` taking ``?`` queries."""
        conn = self._store._db()
        if self.postgres:
            with conn.transaction(), conn.cursor() as cursor:
                yield _Cursor(cursor, self)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _Cursor(conn, self)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> SideTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Cursor:
    def __init__(self, target: Any, tables: SideTables):
        self._target, self._tables = target, tables

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> None:
        if params:
            self._target.execute(self._tables.sql(query), params)
        else:
            self._target.execute(self._tables.sql(query))

    def executemany(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self._target.executemany(self._tables.sql(query), rows)


def append_only_postgres(table: str, message: str) -> str:
    """PostgreSQL DDL refusing UPDATE, DELETE and TRUNCATE on ``table`` with ``message`` (what SQLite's
    ``RAISE(ABORT, …)`` triggers do)."""
    function = f"safetyml_{table}_append_only"
    return f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION '{message}'; END $$;
CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table}
FOR EACH ROW EXECUTE FUNCTION {function}();
CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
FOR EACH STATEMENT EXECUTE FUNCTION {function}();
"""
