"""The one-point H3 helper used on the request path agrees with the vectorised one used offline."""

from __future__ import annotations

import numpy as np

from safetyml.features.zones import cell_of, cells_of


def test_cell_of_matches_cells_of_including_missing_and_out_of_range_points():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(-30, 25, 200), [np.nan, 95.0, -23.55, 10.0]])
    lng = np.concatenate([rng.uniform(-100, -40, 200), [-46.6, -46.6, np.nan, 181.0]])
    vectorised = cells_of(lat, lng)
    one_by_one = [cell_of(a, b) for a, b in zip(lat.tolist(), lng.tolist(), strict=True)]
    assert [None if v is None or v != v else v for v in vectorised.tolist()] == one_by_one
    assert one_by_one[-4:] == [None, None, None, None]
    assert cell_of(None, -46.6) is None
