"""The TRUST composite safety index per city and zone (OECD/JRC Handbook method; see docs/trust-index.md).

Public API: :func:`build_index`, :func:`load_config`, :func:`recompute_history`, :func:`write_report`.
"""

from __future__ import annotations

from safetyml._lazy import lazy_getattr

__all__ = ["build_index", "load_config", "recompute_history", "write_report"]

__getattr__ = lazy_getattr(
    __name__,
    {
        "build_index": "build",
        "load_config": "config",
        "recompute_history": "history",
        "write_report": "report",
    },
)
