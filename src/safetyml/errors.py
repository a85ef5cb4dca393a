"""Turning library errors into messages a user can act on."""

from __future__ import annotations

from pydantic import ValidationError


def validation_message(source: str, exc: ValidationError) -> str:
    """A pydantic error as lines naming the source (file), each field, the rule and the value given."""
    lines = [f"{source}: {exc.error_count()} invalid field(s):"]
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  field {where}: {err['msg']} (got {err.get('input')!r:.80})")
    return "\n".join(lines)
