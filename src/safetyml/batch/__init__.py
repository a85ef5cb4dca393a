"""Batch scoring: zone risk maps with Getis-Ord Gi* hotspots, and scoring whole files (pandas or Dask).

Names load their module on first use: ``score_zones`` and ``ZoneConfig`` (zone maps), ``score_file``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from safetyml._lazy import lazy_getattr

if TYPE_CHECKING:
    from safetyml.batch.score_file import score_file
    from safetyml.batch.zone_config import ZoneConfig
    from safetyml.batch.zones import score_zones

_NAMES = {"ZoneConfig": "zone_config", "score_zones": "zones", "score_file": "score_file"}
__all__ = ["ZoneConfig", "score_file", "score_zones"]

__getattr__ = lazy_getattr(__name__, _NAMES)
