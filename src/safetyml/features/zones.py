"""H3 helpers: the zone (cell) of a point and the ring of neighbour cells, vectorised over arrays.

Cells are handled as H3 64-bit integers inside the engine (cheap to sort and compare) and as the usual
hex strings in frames and the online store. Missing or out-of-range coordinates give cell 0 ("no zone").
"""

from __future__ import annotations

import h3
import numpy as np
import pandas as pd
from h3.api import numpy_int as h3_int

H3_RESOLUTION = 8
NO_CELL = 0


def cells_int(
    lat: np.ndarray | pd.Series, lng: np.ndarray | pd.Series, resolution: int = H3_RESOLUTION
) -> np.ndarray:
    """H3 cell (int64) of each point; 0 where a coordinate is missing or invalid."""
    lat_arr = pd.to_numeric(pd.Series(lat), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    lng_arr = pd.to_numeric(pd.Series(lng), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    out = np.zeros(len(lat_arr), dtype=np.int64)
    ok = np.isfinite(lat_arr) & np.isfinite(lng_arr) & (np.abs(lat_arr) <= 90) & (np.abs(lng_arr) <= 180)
    convert = h3_int.latlng_to_cell
    out[ok] = np.fromiter(
        (convert(a, b, resolution) for a, b in zip(lat_arr[ok].tolist(), lng_arr[ok].tolist(), strict=True)),
        dtype=np.uint64,
        count=int(ok.sum()),
    ).view(np.int64)
    return out


def to_str(cells: np.ndarray) -> pd.Series:
    """Integer cells → H3 hex strings (missing where 0)."""
    cells = np.asarray(cells, dtype=np.int64)
    uniques, inverse = np.unique(cells, return_inverse=True)
    names = np.array(
        [h3.int_to_str(int(c)) if c != NO_CELL else None for c in uniques.view(np.uint64)], dtype=object
    )
    return pd.Series(names[inverse], dtype="str")


def to_int(cells: pd.Series | np.ndarray | list) -> np.ndarray:
    """H3 hex strings → integer cells (0 where missing or not a valid cell)."""
    series = pd.Series(cells, dtype="object")
    inverse, uniques = pd.factorize(series, use_na_sentinel=True)
    values = np.array([_str_to_int(str(c)) for c in uniques], dtype=np.int64)
    out = np.zeros(len(series), dtype=np.int64)
    known = inverse >= 0
    out[known] = values[inverse[known]]
    return out


def _str_to_int(cell: str) -> int:
    try:
        if not h3.is_valid_cell(cell):
            return NO_CELL
        return int(np.uint64(h3.str_to_int(cell)).view(np.int64))
    except (ValueError, TypeError, OverflowError, h3.H3BaseException):
        return NO_CELL


def cells_of(
    lat: np.ndarray | pd.Series, lng: np.ndarray | pd.Series, resolution: int = H3_RESOLUTION
) -> pd.Series:
    """H3 cell hex string of each point (missing where a coordinate is missing)."""
    return to_str(cells_int(lat, lng, resolution))


def cell_of(lat: float | None, lng: float | None, resolution: int = H3_RESOLUTION) -> str | None:
    """:func:`cells_of` for one point (None for no zone), without building arrays: the request hot path."""
    if lat is None or lng is None or not (np.isfinite(lat) and np.isfinite(lng)):
        return None
    if abs(lat) > 90 or abs(lng) > 180:
        return None
    return h3.latlng_to_cell(float(lat), float(lng), resolution)


def neighbours(cells: np.ndarray, k: int = 1) -> np.ndarray:
    """For each cell, its grid_disk(k) cells as an (n, 3k(k+1)+1) int64 array padded with 0 (pentagons).

    One ``h3.grid_disk`` call per *distinct* cell, not per row.
    """
    cells = np.asarray(cells, dtype=np.int64)
    width = 3 * k * (k + 1) + 1
    uniques, inverse = np.unique(cells, return_inverse=True)
    table = np.zeros((len(uniques), width), dtype=np.int64)
    for i, cell in enumerate(uniques.view(np.uint64).tolist()):
        if cell == NO_CELL:
            continue
        disk = np.asarray(h3_int.grid_disk(cell, k), dtype=np.uint64).view(np.int64)
        table[i, : len(disk)] = np.sort(disk)
    return table[inverse]


def nearest_city(cells: np.ndarray) -> np.ndarray:
    """The registry city whose centre is nearest to each cell's centre (None for no cell).

    A zone's city is geography, not data: it does not change when new trips arrive, so the empirical-Bayes
    prior of a cell is the same offline, online and at every as_of.
    """
    from safetyml import cities

    registry = list(cities.registry().values())
    cells = np.asarray(cells, dtype=np.int64)
    uniques, inverse = np.unique(cells, return_inverse=True)
    out = np.full(len(uniques), None, dtype=object)
    known = uniques != NO_CELL
    if known.any() and registry:
        centres = np.array([h3_int.cell_to_latlng(int(c)) for c in uniques[known].view(np.uint64)])
        lat1, lng1 = np.radians(centres[:, :1]), np.radians(centres[:, 1:])
        lat2 = np.radians(np.array([c.lat for c in registry]))[None, :]
        lng2 = np.radians(np.array([c.lng for c in registry]))[None, :]
        hav = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
        out[known] = np.array([c.id for c in registry], dtype=object)[np.argmin(hav, axis=1)]
    return out[inverse]
