"""Zones as geometry: H3 hexagons as GeoJSON polygons (lng/lat order, closed rings) with their properties."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h3
import numpy as np
import pandas as pd

from safetyml.values import jsonable


def cell_ring(cell: str) -> list[list[float]]:
    """The hexagon's boundary as a closed GeoJSON ring of [lng, lat] pairs (counter-clockwise)."""
    ring = [[round(lng, 7), round(lat, 7)] for lat, lng in h3.cell_to_boundary(cell)]
    if _signed_area(ring) < 0:  # GeoJSON (RFC 7946): exterior rings are counter-clockwise
        ring.reverse()
    ring.append(ring[0])
    return ring


def svg_points(rings: Sequence[Sequence[Sequence[float]]], size: float, margin: float) -> list[str]:
    """Each ring of (lng, lat) pairs as an SVG ``points`` string, all on one ``size`` px square.

    Equirectangular around the rings' mean latitude (longitudes shrunk by its cosine), north up,
    scaled so the widest extent fills the square less ``margin`` on each side.
    """
    lat0 = float(np.mean([lat for ring in rings for _, lat in ring]))
    k = math.cos(math.radians(lat0))
    xs = [[lng * k for lng, _ in ring] for ring in rings]
    ys = [[-lat for _, lat in ring] for ring in rings]
    xmin, xmax = min(map(min, xs)), max(map(max, xs))
    ymin, ymax = min(map(min, ys)), max(map(max, ys))
    scale = (size - 2 * margin) / max(xmax - xmin, ymax - ymin, 1e-9)
    return [
        " ".join(
            f"{margin + (x - xmin) * scale:.1f},{margin + (y - ymin) * scale:.1f}"
            for x, y in zip(ring_x, ring_y, strict=True)
        )
        for ring_x, ring_y in zip(xs, ys, strict=True)
    ]


def _signed_area(ring: list[list[float]]) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1], strict=True))


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
            "properties": {k: jsonable(v) for k, v in rec.items()},
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
