"""Zones as geometry: H3 hexagons as GeoJSON polygons (lng/lat order, closed rings) with their properties."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd


def cell_ring(cell: str) -> list[list[float]]:
    """The hexagon's boundary as a closed GeoJSON ring of [lng, lat] pairs (counter-clockwise)."""
    ring = [[round(lng, 7), round(lat, 7)] for lat, lng in h3.cell_to_boundary(cell)]
    if _signed_area(ring) < 0:  # GeoJSON (RFC 7946): exterior rings are counter-clockwise
        ring.reverse()
    ring.append(ring[0])
    return ring


def _signed_area(ring: list[list[float]]) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True))


def _plain(value: Any) -> Any:
    """A JSON-safe version of a cell value (numpy scalars, timestamps, NaN → null, lists of dicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    return str(value) if not isinstance(value, str) else value


def zones_geojson(zones: pd.DataFrame, h3_column: str = "h3") -> dict[str, Any]:
    """A FeatureCollection with one hexagon Feature per row; every other column becomes a property."""
    if h3_column not in zones.columns:
        raise KeyError(
            f"zones_geojson: the zone table has no {h3_column!r} column; it has {list(zones.columns)}"
        )
    records = zones.to_dict(orient="records")
    features = [
        {
            "type": "Feature",
            "id": i,
            "geometry": {"type": "Polygon", "coordinates": [cell_ring(str(rec[h3_column]))]},
            "properties": {k: _plain(v) for k, v in rec.items()},
        }
        for i, rec in enumerate(records)
    ]
    return {"type": "FeatureCollection", "features": features}


def write_geojson(zones: pd.DataFrame, path: Path, h3_column: str = "h3") -> Path:
    """Write the zones as a GeoJSON file (UTF-8, compact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(zones_geojson(zones, h3_column), separators=(",", ":"), ensure_ascii=False))
    return path
