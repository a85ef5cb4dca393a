"""Zone maps on Dask: ``score-zones --engine dask`` validates the tables and builds the frame on a
LocalCluster of processes, then maps the window as the pandas engine does; the zone table is the same."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from safetyml.batch.zones import ZONE_COLUMNS, score_zones
from tests.test_dask_validation import _subset, _write_partitioned

KEYS = ["city", "band", "h3"]


@pytest.mark.slow
def test_zone_map_on_dask_equals_the_pandas_zone_map(small_data_dir, trained_home, dask_client, tmp_path):
    lake = _write_partitioned(_subset(small_data_dir), tmp_path / "data")
    model = trained_home.results["incident_risk"].model
    args = {"window": "3d", "model": model, "log_mlflow": False}
    ours = score_zones(lake, out=tmp_path / "dask", client=dask_client, **args)
    theirs = score_zones(lake, out=tmp_path / "pandas", **args)
    assert ours.as_of == theirs.as_of and ours.trips == theirs.trips > 1_000
    # the frame's dataset folder was a working file: only the map's outputs are left
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == sorted(
        ours.outputs[k].name for k in ours.outputs
    )
    a = pd.read_parquet(tmp_path / "dask" / "zones.parquet").sort_values(KEYS, ignore_index=True)
    b = pd.read_parquet(tmp_path / "pandas" / "zones.parquet").sort_values(KEYS, ignore_index=True)
    assert list(a.columns) == list(ZONE_COLUMNS) and len(a) == len(b) > 50
    numbers = [c for c in ZONE_COLUMNS if b[c].dtype.kind == "f"]
    exact = [c for c in ZONE_COLUMNS if c not in numbers]
    pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)
    # bit-identical: the frames are (per-entity window sums, see test_dask_features), and so the model's
    # probabilities and every zone aggregate of them
    pd.testing.assert_frame_equal(a[numbers], b[numbers], check_exact=True)
    diff = np.abs(a["expected_incidents"] - b["expected_incidents"]).max()
    assert diff < 0.005 and b["expected_incidents"].sum() > 0
