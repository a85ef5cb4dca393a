"""Importing a dependency that lives in an extra (``safetyml[dask]``, ``safetyml[serve]``) with an error
that says which extra to install, instead of a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib
from types import ModuleType

from safetyml.errors import SafetymlError

__all__ = ["MissingExtraError", "require"]


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
        raise MissingExtraError(
            f"{module} is not installed; it comes with the {extra!r} extra: pip install 'safetyml[{extra}]'"
        ) from exc
