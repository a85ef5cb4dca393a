"""The one mapping from scoring errors to HTTP status codes and JSON bodies, used by the service."""

from __future__ import annotations

from typing import Any

from safetyml.errors import SafetymlError
from safetyml.scoring.audit import AuditUnavailableError
from safetyml.scoring.scorer import AsOfError, NotReadyError, ReloadError

STATUS: dict[type[SafetymlError], int] = {
    NotReadyError: 503,  # no model or store yet: callers retry
    AsOfError: 422,  # a well-formed request the store cannot answer
    ReloadError: 409,  # the alias could not be loaded; the previous models keep serving
    AuditUnavailableError: 503,  # the decision could not be made durable: no id is handed out
}
"""Error class → HTTP status; any other SafetymlError is a 500."""


def error_response(exc: SafetymlError) -> tuple[int, dict[str, Any]]:
    """The status and JSON body for ``exc``: ``{"error": message}``, plus ``field`` if the error names one."""
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 500)
    body: dict[str, Any] = {"error": str(exc)}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    return status, body


__all__ = ["STATUS", "error_response"]
