"""The one base exception of safetyml, and turning library errors into messages a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


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


def read_yaml_mapping(path: Path, kind: str, error: type[Exception], not_mapping: str) -> dict:
    """The mapping a YAML file holds, or ``error`` naming the file: missing, not YAML, or not a mapping.

    ``kind`` names the file in the messages (``"policy"`` → ``policy file X does not exist``);
    ``not_mapping`` is the whole message for a file whose top level is not a mapping.
    """
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{kind} file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise error(f"{kind} file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(not_mapping)
    return raw


def validated(model: type[M], raw: object, source: str, error: type[Exception]) -> M:
    """``model`` validated from ``raw``, or ``error`` with :func:`validation_message` naming ``source``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(validation_message(source, exc)) from None
