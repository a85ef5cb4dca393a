"""Features on Dask: the incident_risk frame built by rider, merchant and city zone groups (with a halo) on
a LocalCluster of processes equals the pandas engine's frame, row for row and column for column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from safetyml.cli import app
from safetyml.features.distributed import read_frame_dataset
from safetyml.features.frames import build_frame
from safetyml.tables import load_tables
from tests.test_dask_validation import _subset, _write_partitioned


@pytest.fixture(scope="module")
def lake(small_data_dir, tmp_path_factory) -> Path:
    return _write_partitioned(_subset(small_data_dir), tmp_path_factory.mktemp("lake") / "data")


@pytest.fixture(scope="module")
def pandas_frame(lake) -> pd.DataFrame:
    return build_frame("incident_risk", load_tables(lake))


def assert_same_frame(dask_frame: pd.DataFrame, pandas_frame: pd.DataFrame) -> None:
    """Bit-identical, every column: window sums are per-entity running totals (``Stream.cum``), so how the
    events are split into groups cannot change their rounding."""
    assert list(dask_frame.columns) == list(pandas_frame.columns)
    assert len(dask_frame) == len(pandas_frame)
    pd.testing.assert_frame_equal(dask_frame, pandas_frame, check_exact=True)


@pytest.mark.slow
def test_features_build_on_dask_equals_the_pandas_frame(
    lake, pandas_frame, dask_client, tmp_path, monkeypatch
):
    """Through the command, on the session's cluster of 2 worker processes (so 2 rider and merchant
    groups, and one zone group per city with trips); days assembled in batches of >= 1,000 trips."""
    from safetyml.features import distributed

    monkeypatch.setattr(distributed, "ROW_GROUP_ROWS", 1_000)
    assert len(distributed._batches({1: 600, 2: 600, 3: 600, 4: 100}, 1_000)) == 2
    out = tmp_path / "frame"
    args = ["features", "build", "incident_risk", "--data", str(lake), "--out", str(out)]
    on_dask = ["--engine", "dask", "--scheduler", dask_client.scheduler.address]
    result = CliRunner().invoke(app, [*args, *on_dask])
    assert result.exit_code == 0, result.output
    assert f"{len(pandas_frame):,} rows" in result.output and "6 daily parts" in result.output
    assert "'rider': 2" in result.output and "'zone': 1}" not in result.output  # several groups of each
    days = sorted(p.name for p in out.iterdir())
    assert len(days) == 6 and all(d.startswith("date=") for d in days)
    assert_same_frame(read_frame_dataset(out), pandas_frame)
    again = CliRunner().invoke(app, [*args, *on_dask])
    assert again.exit_code == 2 and "not empty" in again.output


@pytest.mark.slow
def test_merchant_credit_on_dask_equals_the_pandas_frame(lake, dask_client, tmp_path):
    """Month-end snapshots built by 2 merchant groups (each with its merchants' trips, ledger and credit
    events, and the whole data set's snapshot months and label end) equal the pandas frame."""
    expected = build_frame("merchant_credit", load_tables(lake), horizon_days=60)
    out = tmp_path / "credit"
    args = ["features", "build", "merchant_credit", "--data", str(lake), "--out", str(out)]
    on_dask = ["--engine", "dask", "--scheduler", dask_client.scheduler.address, "--horizon-days", "60"]
    result = CliRunner().invoke(app, [*args, *on_dask])
    assert result.exit_code == 0, result.output
    assert f"{len(expected):,} rows" in result.output and "{'merchant': 2}" in result.output
    days = sorted(p.name for p in out.iterdir())
    assert len(days) == expected["as_of"].nunique() > 1 and all(d.endswith("-01") for d in days)
    assert expected["label"].sum() > 0 and not expected["label_mature"].all()
    assert_same_frame(read_frame_dataset(out), expected)


@pytest.mark.slow
def test_zone_groups_split_cities_by_h3_parent_with_a_halo(lake, pandas_frame, dask_client, tmp_path):
    """Zone groups of at most 300 trip ends: every city with trips is split over several H3-parent
    groups, rings at group edges read the neighbours' events from the halo and the city priors are the
    groups' counts summed, so the frame is still bit-identical. Without the halo, rings (only) go wrong."""
    from safetyml.features import zones
    from safetyml.features.distributed import build_frame_dask
    from safetyml.features.zone_groups import plan_zone_groups
    from safetyml.tables import load_tables_dask

    tables = load_tables_dask(lake, dask_client)
    result = build_frame_dask("incident_risk", tables, dask_client, tmp_path / "h", zone_trips=300)
    frame = read_frame_dataset(tmp_path / "h")
    assert_same_frame(frame, pandas_frame)
    assert not (tmp_path / "h" / "_answers").exists()

    # the plan the build used: several groups in each big city, and trips whose ring crosses a group edge
    trips = load_tables(lake).trips
    cells = zones.cells_int(trips["pickup_lat"], trips["pickup_lng"])
    ends = pd.Series(np.concatenate([cells, zones.cells_int(trips["dropoff_lat"], trips["dropoff_lng"])]))
    plan = plan_zone_groups(ends.value_counts(), 300)
    assert result.groups["zone"] >= plan.n > 2 * trips["city"].nunique()
    known = cells[cells != zones.NO_CELL]
    by_city = pd.DataFrame({"city": zones.nearest_city(known), "group": plan.of(known)})
    assert (by_city.groupby("city")["group"].nunique() > 1).sum() >= 2
    ring_groups = plan.of(zones.neighbours(known).ravel()).reshape(-1, 7)
    crosses = (ring_groups != plan.of(known)[:, None]) & (ring_groups >= 0)
    assert crosses.any(axis=1).mean() > 0.2

    build_frame_dask("incident_risk", tables, dask_client, tmp_path / "no_halo", zone_trips=300, halo=False)
    wrong = read_frame_dataset(tmp_path / "no_halo")
    differ = [c for c in pandas_frame.columns if not wrong[c].equals(pandas_frame[c])]
    assert differ and all("ring_" in c for c in differ), differ


def assert_same_vectors(ours: pd.DataFrame, theirs: pd.DataFrame, entity: str) -> None:
    assert list(ours.index) == list(theirs.index), entity
    assert list(ours.columns) == list(theirs.columns), entity
    for column in theirs.columns:
        a, b = ours[column], theirs[column]
        if a.dtype == object or b.dtype == object or str(b.dtype) in ("str", "string", "category"):
            pd.testing.assert_series_equal(a, b, check_dtype=False, obj=f"{entity}.{column}")
        else:  # bit-identical, as the frames
            np.testing.assert_array_equal(a.to_numpy(float), b.to_numpy(float), err_msg=f"{entity}.{column}")


@pytest.mark.slow
def test_materialize_on_dask_writes_the_pandas_vectors(lake, dask_client, tmp_path):
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.engine import FeatureEngine
    from safetyml.features.online import OnlineStore, default_as_of, entity_vectors, materialize

    tables, fs = load_tables(lake), load_feature_set()
    vectors = entity_vectors(FeatureEngine(tables, fs), default_as_of(tables))
    with OnlineStore.open(tmp_path / "pandas.sqlite") as store:
        expected = materialize(tables, fs, store=store)
    path = tmp_path / "dask.sqlite"
    args = ["features", "materialize", "--data", str(lake), "--store", str(path), "--all-features"]
    result = CliRunner().invoke(
        app, [*args, "--engine", "dask", "--scheduler", dask_client.scheduler.address]
    )
    assert result.exit_code == 0, result.output
    with OnlineStore.open(path) as ours, OnlineStore.open(tmp_path / "pandas.sqlite") as theirs:
        meta = ours.metadata()
        assert meta["rows"] == expected["rows"] and meta["as_of"] == expected["as_of"]
        assert set(meta["rows"]) == {"rider", "merchant", "pair", "zone", "city"}
        for entity, frame in vectors.items():
            ids = frame.index
            assert_same_vectors(ours.get(entity, ids).loc[ids], theirs.get(entity, ids).loc[ids], entity)


def test_halo_pairs_are_the_nearest_cities_of_each_ring():
    """The vectorised halo against a cell-by-cell reference (grid_disk, nearest city of each cell)."""
    import h3

    from safetyml.features import zones
    from safetyml.features.distributed import _halo_pairs

    cells = zones.cells_int(
        pd.Series([-23.55, -23.55, None, 19.43, -22.9]), pd.Series([-46.63, -46.63, None, -99.13, -43.2])
    )
    rows, cities = _halo_pairs(cells)
    got = {(int(r), c) for r, c in zip(rows, cities, strict=True)}
    expected = set()
    for row, cell in enumerate(cells):
        if cell == zones.NO_CELL:
            continue
        disk = [h3.str_to_int(c) for c in h3.grid_disk(h3.int_to_str(int(cell)), 1)]
        expected |= {(row, city) for city in zones.nearest_city(np.array(disk, dtype=np.int64))}
    assert got == expected and {r for r, _ in got} == {0, 1, 3, 4}


def test_zone_plan_is_the_coarsest_parent_that_fits_and_packs_groups_under_the_budget():
    """The plan against a direct computation: at the chosen resolution every parent holds at most the
    budget (and one resolution coarser, one does not); groups hold at most the budget of trip ends; every
    cell with trip ends has a group, a cell without has none (-1) but an owner (0)."""
    from safetyml.features import zones
    from safetyml.features.zone_groups import parents, plan_zone_groups

    rng = np.random.default_rng(7)
    lat = np.concatenate([rng.normal(-23.55, 0.08, 3_000), rng.normal(19.43, 0.05, 1_000)])
    lng = np.concatenate([rng.normal(-46.63, 0.08, 3_000), rng.normal(-99.13, 0.05, 1_000)])
    counts = pd.Series(zones.cells_int(lat, lng)).value_counts()
    plan = plan_zone_groups(counts, 500)
    per_parent = counts.groupby(parents(counts.index.to_numpy(), plan.resolution)).sum()
    coarser = counts.groupby(parents(counts.index.to_numpy(), plan.resolution - 1)).sum()
    assert per_parent.max() <= 500 < coarser.max()
    groups = plan.of(counts.index.to_numpy())
    assert (groups >= 0).all() and plan.n == groups.max() + 1 > 8
    assert counts.groupby(groups).sum().max() <= 500
    far = zones.cells_int(np.array([48.85]), np.array([2.35]))  # Paris: no trip ends there
    assert plan.of(far)[0] == -1 and plan.owner(far)[0] == 0
    assert plan.of(np.array([zones.NO_CELL]))[0] == -1 and plan.owner(np.array([zones.NO_CELL]))[0] == -1
