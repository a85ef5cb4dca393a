"""Lazy package names: ``__getattr__ = lazy_getattr(__name__, {"Scorer": "scorer"})`` in a package's
``__init__`` makes ``package.Scorer`` import ``package.scorer`` on first use (PEP 562), so importing the
package stays cheap and the CLI starts fast."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each of ``names`` (name → submodule) from its submodule."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(import_module(f"{package}.{names[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
