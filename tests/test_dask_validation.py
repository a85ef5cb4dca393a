"""Partitioned input and the contract on Dask: a table may be a file or a folder of (hive-partitioned)
Parquet parts, both engines read both, and validation on a LocalCluster of processes finds the same
failures, quarantines the same rows with the same reasons and keeps the same valid rows as pandas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from safetyml.contract import TABLE_ORDER, TABLES
from safetyml.tables import (
    load_tables,
    load_tables_dask,
    read_raw,
    table_parts,
    validate_dir,
    validate_dir_dask,
)


@pytest.fixture
def client(dask_client):
    return dask_client


def _subset(small_data_dir: Path) -> dict[str, pd.DataFrame]:
    """A slice of the small platform: every rider and merchant, six days of trips and what hangs on them."""
    t = {name: pd.read_parquet(small_data_dir / f"{name}.parquet") for name in TABLE_ORDER}
    first = t["trips"]["requested_at"].min().normalize()
    trips = t["trips"][t["trips"]["requested_at"] < first + pd.Timedelta(days=6)].reset_index(drop=True)
    incidents = t["incidents"][t["incidents"]["trip_id"].isin(trips["trip_id"])].reset_index(drop=True)
    ledger = t["merchant_ledger"].iloc[:3000].reset_index(drop=True)
    return {
        "riders": t["riders"],
        "merchants": t["merchants"],
        "trips": trips,
        "incidents": incidents,
        "merchant_ledger": ledger,
        "credit_events": t["credit_events"],
    }


def _break(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Rule violations of every kind, several of them across partitions."""
    f = {name: df.copy() for name, df in frames.items()}
    riders = f["riders"]
    riders.loc[3, "vehicle_type"] = "helicopter"  # allowed values; its trips lose their parent
    bad_rider = riders.loc[3, "rider_id"]
    trips = f["trips"]
    trips["requested_at"] = trips["requested_at"].dt.strftime("%Y-%m-%dT%H:%M:%S%z").astype(object)
    trips.loc[5, "requested_at"] = "not a time"  # type
    trips.loc[7, "order_value"] = -3.0  # min
    trips.loc[9, "merchant_id"] = "M_UNKNOWN"  # foreign key
    trips.loc[len(trips) - 1, "trip_id"] = trips.loc[0, "trip_id"]  # duplicate key, first and last day
    trips.loc[11, "payment_method"] = None  # not null
    incidents = f["incidents"]
    incidents.loc[0, "reported_at"] = incidents.loc[0, "occurred_at"] - pd.Timedelta(hours=1)  # row rule
    incidents.loc[1, "severity"] = 7  # max
    incidents.loc[2, "trip_id"] = "T_UNKNOWN"
    ledger = f["merchant_ledger"]
    ledger.loc[4, "amount"] = -1.0
    ledger.loc[2500, "merchant_id"] = "M_UNKNOWN"  # no key column: reported by row position
    assert (trips["rider_id"] == bad_rider).any()
    return f


def _write_partitioned(frames: dict[str, pd.DataFrame], out: Path) -> Path:
    """Each table in a different form: hive by a contract column, hive by day, row groups, plain parts."""
    out.mkdir(parents=True)
    riders = frames["riders"]
    for city, rows in riders.groupby("city", sort=True):
        folder = out / "riders" / f"city={city}"
        folder.mkdir(parents=True)
        rows.drop(columns="city").to_parquet(folder / "part-0.parquet", index=False)
    frames["merchants"].to_csv(out / "merchants.csv", index=False)
    trips = frames["trips"]
    day = pd.to_datetime(frames["trips"]["requested_at"], utc=True, errors="coerce", format="ISO8601")
    day = day.dt.strftime("%Y-%m-%d").fillna(day.dropna().dt.strftime("%Y-%m-%d").iloc[0])
    for date, rows in trips.groupby(day.to_numpy(), sort=True):
        folder = out / "trips" / f"date={date}"
        folder.mkdir(parents=True)
        half = len(rows) // 2
        rows.iloc[:half].to_parquet(folder / "part-0.parquet", index=False)
        rows.iloc[half:].to_parquet(folder / "part-1.parquet", index=False)
    (out / "trips" / "_SUCCESS").write_text("")
    folder = out / "incidents.parquet"
    folder.mkdir()
    incidents = frames["incidents"]
    for number, rows in enumerate(np.array_split(np.arange(len(incidents)), 3)):
        incidents.iloc[rows].to_parquet(folder / f"part-{number}.parquet", index=False)
    frames["merchant_ledger"].to_parquet(out / "merchant_ledger.parquet", index=False, row_group_size=700)
    frames["credit_events"].to_parquet(out / "credit_events.parquet", index=False)
    return out


@pytest.fixture(scope="module")
def broken_dir(small_data_dir, tmp_path_factory) -> Path:
    return _write_partitioned(_break(_subset(small_data_dir)), tmp_path_factory.mktemp("lake") / "data")


def test_a_folder_of_hive_parts_reads_as_the_table(small_data_dir, tmp_path):
    frames = _subset(small_data_dir)
    lake = _write_partitioned(frames, tmp_path / "lake")
    assert len(table_parts(lake, TABLES["trips"])) == 12  # 6 days x 2 parts; _SUCCESS is skipped
    trips = read_raw(lake, TABLES["trips"])
    assert "date" not in trips.columns  # a layout-only hive key is not a column
    pd.testing.assert_frame_equal(trips, frames["trips"], check_dtype=False)
    riders = read_raw(lake, TABLES["riders"])  # the hive key is the contract column city
    expected = frames["riders"].sort_values("city", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(riders[expected.columns], expected, check_dtype=False)
    tables = load_tables(lake)
    assert len(tables.trips) == len(frames["trips"]) and tables.quarantined == {}


@pytest.mark.slow
def test_validation_on_dask_equals_pandas_report_and_quarantine(broken_dir, client, tmp_path):
    pandas_report = validate_dir(broken_dir)
    dask_report = validate_dir_dask(broken_dir, client)
    assert not pandas_report.ok
    rules = set(zip(pandas_report.failures["table"], pandas_report.failures["rule"], strict=True))
    for expected in [
        ("riders", "allowed_values"),
        ("trips", "type_timestamp"),
        ("trips", "min_0"),
        ("trips", "exists_in_merchants"),
        ("trips", "exists_in_riders"),
        ("trips", "unique"),
        ("trips", "not_null"),
        ("incidents", "reported_after_occurred"),
        ("incidents", "max_5"),
        ("incidents", "exists_in_trips"),
        ("merchant_ledger", "min_0"),
        ("merchant_ledger", "exists_in_merchants"),
    ]:
        assert expected in rules, expected
    pd.testing.assert_frame_equal(dask_report.failures, pandas_report.failures)
    assert dask_report.row_counts == pandas_report.row_counts
    assert dask_report.message() == pandas_report.message()

    pq_dir, dq_dir = tmp_path / "pandas_q", tmp_path / "dask_q"
    by_pandas = load_tables(broken_dir, on_invalid="quarantine", quarantine_dir=pq_dir)
    by_dask = load_tables_dask(broken_dir, client, on_invalid="quarantine", quarantine_dir=dq_dir)
    assert by_dask.quarantined == by_pandas.quarantined
    assert sorted(p.name for p in dq_dir.iterdir()) == sorted(p.name for p in pq_dir.iterdir())
    for file in pq_dir.iterdir():
        pd.testing.assert_frame_equal(pd.read_parquet(dq_dir / file.name), pd.read_parquet(file))
    trips_q = pd.read_parquet(dq_dir / "trips.parquet")
    assert trips_q["_reasons"].str.contains("trip_id:unique").sum() == 2
    gathered = by_dask.compute()
    assert by_dask.get("trips").npartitions == 12
    for name in TABLE_ORDER:
        pd.testing.assert_frame_equal(gathered.get(name), by_pandas.get(name), check_index_type=False)


@pytest.mark.slow
def test_validate_command_on_a_dask_scheduler(broken_dir, client, tmp_path):
    from typer.testing import CliRunner

    from safetyml.cli import app

    runner = CliRunner()
    address = client.scheduler.address
    failed = runner.invoke(app, ["validate", str(broken_dir), "--engine", "dask", "--scheduler", address])
    assert failed.exit_code == 1 and "rule unique failed for 2 row(s)" in failed.output
    quarantine = tmp_path / "q"
    args = ["validate", str(broken_dir), "--on-invalid", "quarantine", "--quarantine-dir", str(quarantine)]
    result = runner.invoke(app, [*args, "--engine", "dask", "--scheduler", address])
    assert result.exit_code == 0, result.output
    by_pandas = load_tables(broken_dir, on_invalid="quarantine", quarantine_dir=tmp_path / "pq")
    assert f"{len(by_pandas.trips):,}" in result.output
    assert {p.name for p in quarantine.iterdir()} == {f"{n}.parquet" for n in by_pandas.quarantined}
