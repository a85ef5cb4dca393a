"""The one base exception of safetyml, and turning library errors into messages a user can act on."""

from __future__ import annotations

from pydantic import ValidationError


class SafetymlError(Exception):
    """Base of every error safetyml raises on purpose; the message names what was wrong and what was expected.

    Subclasses may also derive from a built-in (``ValueError``, ``KeyError``) so that
    callers catching those keep working.
    """


def validation_message(source: str, exc: ValidationError) -> str:
    """A pydantic error as lines naming the source (file), each field, the rule and the value given."""
    lines = [f"{source}: {exc.error_count()} invalid field(s):"]
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  field {where}: {err['msg']} (got {err.get('input')!r:.80})")
    return "\n".join(lines)
