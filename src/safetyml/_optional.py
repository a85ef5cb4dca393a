"""Importing a dependency that lives in an extra (``safetyml[dask]``, ``safetyml[serve]``) with an error
that says which extra to install, instead of a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from safetyml.errors import SafetymlError

__all__ = ["MissingExtraError", "ensure", "require"]


class MissingExtraError(SafetymlError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` and return it; if it is not installed, raise :class:`MissingExtraError` naming
    ``pip install 'safetyml[extra]'``.

    Call it inside the function that needs the module (heavy imports stay lazy), e.g.
    ``dd = require("dask.dataframe", "dask")``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the module exists but one of *its* imports is missing: not ours to rename
        raise _missing(module, extra) from exc


def ensure(module: str, extra: str) -> None:
    """Like :func:`require` without importing (a top-level module is only looked up): for a check up front,
    e.g. before ``safetyml serve`` hands over to the ``bentoml`` command."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise _missing(module, extra)


def _missing(module: str, extra: str) -> MissingExtraError:
    return MissingExtraError(
        f"{module} is not installed; it comes with the {extra!r} extra: pip install 'safetyml[{extra}]'"
    )
