"""Hotspot statistics over H3 cells: neighbour weights, Getis-Ord Gi*, FDR, zone risk multipliers.

Gi* comes from esda (``esda.G_Local(star=True)``) over libpysal weights built from H3 ``grid_disk(k=1)``
adjacency; the FDR correction from scipy (``scipy.stats.false_discovery_control``). Written here:
:func:`two_way_multipliers`, because no library at hand fits a zone effect for *both* ends of a trip
(tests check it against the closed form when each trip has one end, and on planted multipliers).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import h3
import numpy as np
import pandas as pd
from scipy import stats


def h3_neighbours(cells: Sequence[str], k: int = 1) -> dict[str, list[str]]:
    """Each cell's neighbours within ``k`` grid steps that are also in ``cells`` (itself excluded)."""
    present = set(cells)
    return {c: sorted(n for n in h3.grid_disk(c, k) if n != c and n in present) for c in cells}


def h3_weights(cells: Sequence[str], k: int = 1):
    """Binary libpysal weights of the H3 neighbour graph, in the order of ``cells``."""
    from libpysal.weights import W

    cells = list(cells)
    if len(set(cells)) != len(cells):
        raise ValueError(f"h3_weights: {len(cells) - len(set(cells))} duplicated cell(s) in the zone list")
    neighbours = h3_neighbours(cells, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # islands and disconnected components are fine for Gi*
        return W(neighbours, id_order=cells, silence_warnings=True)


def getis_ord_star(values: np.ndarray, cells: Sequence[str], k: int = 1) -> pd.DataFrame:
    """Gi* z-score and one-sided (hot) p-value of each cell, from esda with binary weights.

    Values must be non-negative (rates, multipliers): Gi* is a share of the total, meaningless for
    values summing to about zero such as logs. The p-value tests for a *hot* spot (z large and positive),
    the only direction the safety team acts on;
    it is ``1 - Φ(z)`` under esda's normal approximation (no permutations, so results are deterministic).
    """
    from esda.getisord import G_Local

    values = np.asarray(values, dtype="float64")
    cells = list(cells)
    if len(values) != len(cells):
        raise ValueError(f"getis_ord_star: {len(values)} values for {len(cells)} cells")
    if (values < 0).any():
        raise ValueError(
            f"getis_ord_star: Gi* needs non-negative values; got {int((values < 0).sum())} negative"
        )
    n = len(cells)
    if n < 3 or np.nanstd(values) == 0 or not np.isfinite(values).all():
        return pd.DataFrame({"h3": cells, "gi_z": np.zeros(n), "gi_p": np.ones(n)})
    w = h3_weights(cells, k)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = G_Local(values, w, transform="B", star=True, permutations=0)
    z = np.nan_to_num(np.asarray(g.Zs, dtype="float64"), nan=0.0)
    return pd.DataFrame({"h3": cells, "gi_z": z, "gi_p": stats.norm.sf(z)})


def fdr_bh(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), from scipy."""
    p = np.asarray(p_values, dtype="float64")
    if p.size == 0:
        return p
    return stats.false_discovery_control(np.clip(p, 0.0, 1.0), method="bh")


def two_way_multipliers(
    cell_a: np.ndarray,
    cell_b: np.ndarray,
    observed: np.ndarray,
    base: np.ndarray,
    n_cells: int,
    prior: float = 2.0,
    iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risk multiplier of each cell when a trip's incident rate is ``base × θ[pickup] × θ[drop-off]``.

    ``cell_a``/``cell_b`` are cell codes (0..n_cells-1; -1 = no cell) of each trip's two ends, ``observed``
    its incident count and ``base`` its expected count without place effects. Fitted by backfitting
    (each θ given the others) with a Gamma(prior, prior) prior of mean 1, so θ = (O + prior) / (E + prior):
    a cell with little evidence stays near 1. Attributing each incident to both ends *jointly* stops the
    ordinary drop-off cells of a hot pickup cell from inheriting its risk (and vice versa).
    Returns (θ, O, E) per cell; E is the expected count at the cell given the other ends' θ.
    """
    a = np.asarray(cell_a, dtype=np.int64)
    b = np.asarray(cell_b, dtype=np.int64)
    y = np.asarray(observed, dtype="float64")
    e = np.asarray(base, dtype="float64")
    has_a, has_b = a >= 0, b >= 0
    a0, b0 = np.where(has_a, a, 0), np.where(has_b, b, 0)
    observed_at = np.bincount(a0, y * has_a, n_cells) + np.bincount(b0, y * has_b, n_cells)
    theta = np.ones(n_cells)
    expected_at = np.zeros(n_cells)
    for _ in range(iterations):
        other_b = np.where(has_b, theta[b0], 1.0)
        other_a = np.where(has_a, theta[a0], 1.0)
        expected_at = np.bincount(a0, e * other_b * has_a, n_cells) + np.bincount(
            b0, e * other_a * has_b, n_cells
        )
        new = (observed_at + prior) / (expected_at + prior)
        if np.max(np.abs(new - theta)) < 1e-9:
            theta = new
            break
        theta = new
    return theta, observed_at, expected_at
