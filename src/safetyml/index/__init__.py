"""The TRUST composite safety index per city and zone (OECD/JRC Handbook method; see docs/trust-index.md).

Public API: :func:`build_index`, :func:`load_config`, :func:`recompute_history`, :func:`write_report`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_index", "load_config", "recompute_history", "write_report"]

_HOMES = {
    "build_index": "safetyml.index.build",
    "load_config": "safetyml.index.config",
    "recompute_history": "safetyml.index.history",
    "write_report": "safetyml.index.report",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'safetyml.index' has no attribute {name!r}")
