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
