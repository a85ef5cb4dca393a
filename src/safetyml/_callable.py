"""Packages callable like their main function: ``safetyml.simulate(...)``, ``safetyml.explain(...)``.

``import safetyml.simulate`` sets the package attribute ``safetyml.simulate`` to the subpackage, so a
function of that name in ``safetyml/__init__.py`` would be replaced by the module as soon as anything
imports the subpackage. Making the subpackage module itself callable keeps both spellings working.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call runs its function of the same name (``safetyml.simulate.simulate``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(module_name: str) -> None:
    """Turn the already-imported module ``module_name`` into a :class:`CallableModule`."""
    sys.modules[module_name].__class__ = CallableModule
