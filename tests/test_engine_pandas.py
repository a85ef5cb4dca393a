"""The pandas engine's leaner outputs: frames and tables written in bounded Parquet row groups, and a
features build that shows each of its stages."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from safetyml import tables as tables_mod
from safetyml.cli import app
from safetyml.tables import write_parquet


def test_write_parquet_bounds_every_row_group(tmp_path):
    df = pd.DataFrame({"a": range(250), "b": [str(i) for i in range(250)]})
    write_parquet(df, tmp_path / "x.parquet", row_group_rows=100)
    meta = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [100, 100, 50]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "x.parquet"), df)


def test_features_build_writes_bounded_row_groups_and_shows_its_stages(small_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tables_mod, "ROW_GROUP_ROWS", 20_000)
    out = tmp_path / "frame.parquet"
    result = CliRunner().invoke(
        app, ["features", "build", "incident_risk", "--data", str(small_data_dir), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    for stage in ("reading and validating", "building the incident_risk frame", "writing"):
        assert stage in result.output
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert len(sizes) > 1 and max(sizes) <= 20_000 and sum(sizes) == meta.num_rows


def test_ring_counts_are_the_sums_of_the_seven_cells_counts(small_data_dir):
    """The ring is answered from the per-cell stream (RingQueries), not from events repeated per disk
    cell: a ring count equals the sum of its seven cells' own counts at the same as_of."""
    import numpy as np

    from safetyml.features import zones
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.engine import FeatureEngine
    from safetyml.tables import load_tables

    tables = load_tables(small_data_dir)
    engine = FeatureEngine(tables, load_feature_set())
    trips = tables.trips.sample(300, random_state=7)
    cells = zones.cells_of(trips["pickup_lat"], trips["pickup_lng"]).to_numpy()
    as_of = trips["requested_at"].to_numpy()
    counts = ["trips_30d", "trips_90d", "incidents_7d"]
    ring = engine.compute("zone", cells, as_of, names=[f"ring_{c}" for c in counts])
    disk = zones.neighbours(zones.to_int(cells))
    total = {c: np.zeros(len(cells)) for c in counts}
    for slot in range(disk.shape[1]):
        own = engine.compute("zone", disk[:, slot], as_of, names=[f"zone_{c}" for c in counts])
        for c in counts:
            total[c] += np.nan_to_num(own[f"zone_{c}"].to_numpy(dtype=float))  # padding slot: no cell
    for c in counts:
        np.testing.assert_array_equal(ring[f"ring_{c}"].to_numpy(dtype=float), total[c], err_msg=c)
    assert (total["trips_90d"] > 0).mean() > 0.9 and (total["trips_90d"] > ring["ring_trips_30d"]).any()
