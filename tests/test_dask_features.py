"""Features on Dask: the incident_risk frame built by rider, merchant and city zone groups (with a halo) on
a LocalCluster of processes equals the pandas engine's frame, row for row and column for column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.cli import app
from safetyml.features.distributed import build_frame_dask, read_frame_dataset
from safetyml.features.frames import build_frame
from safetyml.tables import load_tables, load_tables_dask
from tests.test_dask_validation import _subset, _write_partitioned

# Float sums over windows are differences of cumulative sums; a group's sums start from another prefix, so
# these columns (sums, means, standard deviations and the request deviations built on them) may differ in
# the last bits. Everything else must be bit-identical.
ROUNDING = ("_sum_", "_mean_", "_std_", "order_value_vs_", "_z_", "hour_affinity", "order_value_mean")


@pytest.fixture(scope="module")
def lake(small_data_dir, tmp_path_factory) -> Path:
    return _write_partitioned(_subset(small_data_dir), tmp_path_factory.mktemp("lake") / "data")


@pytest.fixture(scope="module")
def pandas_frame(lake) -> pd.DataFrame:
    return build_frame("incident_risk", load_tables(lake))


def assert_same_frame(dask_frame: pd.DataFrame, pandas_frame: pd.DataFrame) -> None:
    assert list(dask_frame.columns) == list(pandas_frame.columns)
    assert len(dask_frame) == len(pandas_frame)
    rounding = [c for c in pandas_frame.columns if any(part in c for part in ROUNDING)]
    exact = [c for c in pandas_frame.columns if c not in rounding]
    assert len(exact) > len(pandas_frame.columns) / 2
    pd.testing.assert_frame_equal(dask_frame[exact], pandas_frame[exact], check_exact=True)
    for column in rounding:
        ours, theirs = dask_frame[column].to_numpy(float), pandas_frame[column].to_numpy(float)
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=column)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=column)


@pytest.mark.slow
def test_dask_frame_equals_the_pandas_frame(lake, pandas_frame, dask_client, tmp_path):
    tables = load_tables_dask(lake, dask_client)
    out = tmp_path / "frame"
    result = build_frame_dask("incident_risk", tables, dask_client, out, n_groups=3)
    assert result.groups["rider"] == 3 and result.groups["zone"] >= 2  # several groups of each kind
    days = sorted(p.name for p in out.iterdir())
    assert len(days) == result.days == 6 and all(d.startswith("date=") for d in days)
    assert result.rows == len(pandas_frame) and result.positives == int(pandas_frame["label"].sum())
    assert_same_frame(read_frame_dataset(out), pandas_frame)


@pytest.mark.slow
def test_features_build_command_on_dask(lake, pandas_frame, dask_client, tmp_path):
    out = tmp_path / "frame"
    args = ["features", "build", "incident_risk", "--data", str(lake), "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--engine", "dask", "--scheduler", dask_client.scheduler.address]
    )
    assert result.exit_code == 0, result.output
    assert f"{len(pandas_frame):,} rows" in result.output and "6 daily parts" in result.output
    assert_same_frame(read_frame_dataset(out), pandas_frame)
    again = CliRunner().invoke(app, [*args, "--engine", "dask", "--scheduler", dask_client.scheduler.address])
    assert again.exit_code == 2 and "not empty" in again.output


def test_merchant_credit_on_dask_is_refused_before_any_work(tmp_path):
    args = ["features", "build", "merchant_credit", "--data", str(tmp_path), "--out", str(tmp_path / "f")]
    result = CliRunner().invoke(app, [*args, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"])
    assert result.exit_code == 2 and "does not run on the Dask engine yet" in result.output
