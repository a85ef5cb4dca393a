"""Tables kept beside the decisions in the SQLite audit store: appeals and challenger scores.

One opener for both, so they always land in the same file as the decisions they refer to. With the
decisions on PostgreSQL (``SAFETYML_AUDIT_URL``) these tables are not supported yet: the opener refuses
with a clear error rather than keep appeals in a different store than their decisions.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from safetyml.errors import SafetymlError


class SideTableError(SafetymlError, RuntimeError):
    """Appeals or challenger scores asked for while the decisions live on PostgreSQL."""


def connect_beside(path: Path | None, schema: str, what: str) -> sqlite3.Connection:
    """Open the SQLite audit store ``path`` (default SAFETYML_HOME/audit.sqlite) with ``schema`` created."""
    from safetyml import envvars
    from safetyml.scoring.audit import connect, default_path

    url_var = getattr(envvars, "AUDIT_URL", "SAFETYML_AUDIT_URL")
    if os.environ.get(url_var):
        raise SideTableError(
            f"{what} are kept in the SQLite audit store only; {url_var} points the decisions at PostgreSQL, "
            f"which {what} do not support yet (unset {url_var} or use the SQLite store)"
        )
    conn = connect(Path(path) if path is not None else default_path())
    conn.executescript(schema)
    return conn
