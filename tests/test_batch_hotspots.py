"""Gi*, FDR and empirical-Bayes rates over H3 cells, checked against esda/scipy and on planted clusters."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from safetyml.batch.hotspots import fdr_bh, getis_ord_star, h3_neighbours, h3_weights, two_way_multipliers

CENTRE = h3.latlng_to_cell(-23.5505, -46.6333, 8)


def _disk(k: int = 6) -> list[str]:
    return sorted(h3.grid_disk(CENTRE, k))


def test_neighbour_graph_is_symmetric_and_matches_h3_adjacency():
    cells = _disk(3)
    graph = h3_neighbours(cells)
    for cell, neighbours in graph.items():
        assert cell not in neighbours
        for n in neighbours:
            assert h3.are_neighbor_cells(cell, n)
            assert cell in graph[n]
    assert len(graph[CENTRE]) == 6
    w = h3_weights(cells)
    assert w.n == len(cells)
    assert w.id_order == cells


def test_duplicated_cells_are_rejected():
    with pytest.raises(ValueError, match="duplicated"):
        h3_weights([CENTRE, CENTRE])


def test_gi_star_matches_a_direct_formula():
    """Getis & Ord (1992) Gi* with binary weights, written out, equals esda's z-scores."""
    rng = np.random.default_rng(3)
    cells = _disk(4)
    y = rng.gamma(2.0, 1.0, len(cells))
    got = getis_ord_star(y, cells)
    n = len(y)
    xbar, s = y.mean(), np.sqrt((y**2).mean() - y.mean() ** 2)
    graph = h3_neighbours(cells)
    index = {c: i for i, c in enumerate(cells)}
    for i, c in enumerate(cells):
        members = [i] + [index[m] for m in graph[c]]
        wsum = len(members)
        num = y[members].sum() - xbar * wsum
        den = s * np.sqrt((n * wsum - wsum**2) / (n - 1))
        assert got["gi_z"].iloc[i] == pytest.approx(num / den, rel=1e-9)


def test_gi_star_finds_a_planted_cluster_and_not_the_background():
    rng = np.random.default_rng(11)
    cells = _disk(8)
    y = rng.normal(1.0, 0.1, len(cells))
    hot = [CENTRE, *sorted(h3.grid_disk(CENTRE, 1))[:3]]
    idx = [cells.index(c) for c in hot]
    y[idx] *= 3.0
    got = getis_ord_star(y, cells)
    q = fdr_bh(got["gi_p"].to_numpy())
    significant = set(got.loc[q < 0.05, "h3"])
    assert set(hot) <= significant
    far = set(cells) - set(h3.grid_disk(CENTRE, 2))
    assert not (significant & far)


def test_gi_star_of_a_constant_is_not_significant():
    cells = _disk(2)
    got = getis_ord_star(np.ones(len(cells)), cells)
    assert (got["gi_p"] == 1.0).all()


def test_fdr_bh_matches_the_step_up_rule():
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(0, 0.002, 10), rng.uniform(0, 1, 90)])
    q = fdr_bh(p)
    order = np.argsort(p)
    m = len(p)
    manual = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    expected = np.empty(m)
    expected[order] = np.minimum(manual, 1.0)
    np.testing.assert_allclose(q, expected, rtol=1e-12)
    assert (q >= p).all()


def test_gi_star_refuses_negative_values():
    cells = _disk(1)
    with pytest.raises(ValueError, match="non-negative"):
        getis_ord_star(np.linspace(-1, 1, len(cells)), cells)


def test_two_way_multipliers_with_one_end_are_the_gamma_posterior_mean():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 20, 5_000)
    y = rng.poisson(0.02, 5_000).astype(float)
    base = np.full(5_000, 0.02)
    theta, observed, expected = two_way_multipliers(cells, np.full(5_000, -1), y, base, 20, prior=2.0)
    np.testing.assert_allclose(observed, np.bincount(cells, y, 20))
    np.testing.assert_allclose(expected, np.bincount(cells, base, 20))
    np.testing.assert_allclose(theta, (observed + 2.0) / (expected + 2.0))


def test_two_way_multipliers_recover_planted_cells_without_blaming_the_other_end():
    rng = np.random.default_rng(4)
    n, n_cells = 400_000, 30
    a = rng.integers(0, n_cells, n)
    b = rng.integers(0, n_cells, n)
    true = np.ones(n_cells)
    true[3], true[17] = 4.0, 3.0
    base = np.full(n, 0.01)
    y = (rng.random(n) < base * true[a] * true[b]).astype(float)
    theta, _, _ = two_way_multipliers(a, b, y, base, n_cells, prior=2.0)
    assert theta[3] == pytest.approx(4.0, rel=0.15)
    assert theta[17] == pytest.approx(3.0, rel=0.15)
    ordinary = np.delete(theta, [3, 17])
    assert np.all(np.abs(ordinary - 1.0) < 0.25)
    # the naive per-cell ratio inflates every ordinary cell (their trips end in hot cells too)
    naive = (np.bincount(a, y, n_cells) + np.bincount(b, y, n_cells)) / (2 * np.bincount(a, base, n_cells))
    assert np.median(np.delete(naive, [3, 17])) > np.median(ordinary) + 0.1
