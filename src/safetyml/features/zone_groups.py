"""Zone groups for the Dask engine: H3 parent cells packed into groups of bounded size, with a halo.

The zone features of a trip end are functions of its cell's events, its ring's (``grid_disk(cell, 1)``)
events and its city's events (the empirical-Bayes prior). The Dask engine answers zones in groups of
whole H3 *parent* cells (a coarser resolution than the zones'), so that a group is bounded however large
a city is:

- the parent resolution is the coarsest at which no single parent holds more than ``budget`` trip ends,
  and the parents are packed, in H3 index order (children of one coarser cell are contiguous, so
  neighbours tend to land together), into groups of at most ``budget`` trip ends;
- a trip end is *owned* by the group of its cell's parent, and is also sent, as **halo**, to the group of
  every cell of its ring: so a ring at the edge of a group sees all its events;
- the city-level quantities (all counts, see
  :func:`~safetyml.features.engine.city_counts_additive`) are computed by each group on the cells it owns
  and summed over groups, then joined back (``safetyml.features.distributed``).

Group ``n`` (one past the parent groups) answers the trip ends that have no cell: they read only their
city's quantities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from h3.api import numpy_int as h3_int

from safetyml.features import zones

__all__ = ["ZoneGroups", "halo_pairs", "parents", "plan_zone_groups"]


def parents(cells: np.ndarray, resolution: int) -> np.ndarray:
    """The H3 parent (int64) of each cell at ``resolution`` (NO_CELL stays NO_CELL); one h3 call per
    distinct cell."""
    cells = np.asarray(cells, dtype=np.int64)
    uniques, inverse = np.unique(cells, return_inverse=True)
    out = np.zeros(len(uniques), dtype=np.int64)
    for i, cell in enumerate(uniques.view(np.uint64).tolist()):
        if cell != zones.NO_CELL:
            out[i] = np.uint64(h3_int.cell_to_parent(cell, resolution)).view(np.int64)
    return out[inverse.ravel()]


@dataclass(frozen=True)
class ZoneGroups:
    """Which zone group owns a cell: parent cells at ``resolution`` and their group numbers."""

    resolution: int
    parent_cells: np.ndarray  # sorted parent cells (int64)
    parent_group: np.ndarray  # group of each parent
    n: int  # parent groups; group ``n`` answers trip ends without a cell
    halo: bool = True  # send ring neighbours' events (False only to show what the halo is for: tests)

    def of(self, cells: np.ndarray) -> np.ndarray:
        """The group owning each cell, -1 for no cell or a parent without trip ends (no group)."""
        p = parents(cells, self.resolution)
        pos = np.minimum(np.searchsorted(self.parent_cells, p), max(len(self.parent_cells) - 1, 0))
        if not len(self.parent_cells):
            return np.full(len(p), -1, dtype=np.int64)
        found = (self.parent_cells[pos] == p) & (p != zones.NO_CELL)
        return np.where(found, self.parent_group[pos], -1)

    def owner(self, cells: np.ndarray) -> np.ndarray:
        """:meth:`of`, with cells under no group's parent (an incident where no trip ends) owned by group 0,
        so that every event with a cell is counted by exactly one group."""
        groups = self.of(cells)
        return np.where((groups < 0) & (np.asarray(cells) != zones.NO_CELL), 0, groups)


def plan_zone_groups(cell_counts: pd.Series, budget: int, halo: bool = True) -> ZoneGroups:
    """Zone groups for trip ends counted by cell (``cell_counts``: int64 cell -> trip ends).

    The parent resolution is the coarsest (0 up to the zones' own) at which every parent holds at most
    ``budget`` trip ends; parents are packed in index order into groups of at most ``budget`` ends.
    """
    counts = cell_counts[cell_counts.index != zones.NO_CELL]
    cells = counts.index.to_numpy(dtype=np.int64)
    ends = counts.to_numpy(dtype=np.int64)
    per = pd.Series(ends, dtype="int64")
    for resolution in range(zones.H3_RESOLUTION + 1):
        per = pd.Series(ends).groupby(parents(cells, resolution)).sum()
        if not len(per) or per.max() <= budget:
            break
    group = np.zeros(len(per), dtype=np.int64)
    current, total = 0, 0
    for i, size in enumerate(per.to_numpy().tolist()):
        if total and total + size > budget:
            current, total = current + 1, 0
        group[i] = current
        total += size
    n = current + 1 if len(per) else 0
    return ZoneGroups(resolution, per.index.to_numpy(dtype=np.int64), group, n, halo)


def halo_pairs(cells: np.ndarray, key_of) -> tuple[np.ndarray, np.ndarray]:
    """(row, key) pairs: for each row's cell, the key (``key_of`` of a cell array: the nearest city, or a
    :class:`ZoneGroups` group) of every cell of its ring (grid_disk k=1), its own included, each once; a
    row without a cell has none, nor a cell whose key is None or -1."""
    unique, inverse = np.unique(cells, return_inverse=True)
    known = np.flatnonzero(unique != zones.NO_CELL)
    if not len(known):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    disk = zones.neighbours(unique[known])
    flat = disk.ravel()
    keys = pd.Series(key_of(flat), dtype="object")
    pairs = pd.DataFrame({"slot": np.repeat(known, disk.shape[1]), "key": keys})
    keep = (flat != zones.NO_CELL) & keys.notna().to_numpy() & (keys != -1).to_numpy()
    pairs = pairs[keep].drop_duplicates()
    joined = pd.DataFrame({"row": np.arange(len(cells)), "slot": inverse.ravel()}).merge(pairs, on="slot")
    return joined["row"].to_numpy(), joined["key"].to_numpy(dtype=object)
