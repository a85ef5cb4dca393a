"""The simulator's partitioned output: trips written block by block as a hive dataset by day, read by the
table loader as the same table as the single-file layout."""

from __future__ import annotations

import pandas as pd
import pytest

from safetyml.simulate import PRESETS, simulate
from safetyml.tables import load_tables

TINY = PRESETS["small"].__class__("tiny", trips=6_000, days=30, riders=150, merchants=80, block_days=7)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    simulate(root / "file", preset=TINY, seed=3, progress=False)
    simulate(root / "days", preset=TINY, seed=3, progress=False, partitioned=True)
    return root / "file", root / "days"


def test_trips_are_one_part_per_day_holding_only_that_day(both):
    _, days = both
    assert not (days / "trips.parquet").exists()
    folders = sorted((days / "trips").iterdir())
    assert 25 <= len(folders) <= 31 and all(f.name.startswith("date=") for f in folders)
    for folder in folders:
        assert [p.name for p in folder.iterdir()] == ["part-0.parquet"]  # blocks end at day boundaries
        day = pd.read_parquet(folder / "part-0.parquet")["requested_at"].dt.strftime("%Y-%m-%d")
        assert set(day) == {folder.name.removeprefix("date=")}


def test_partitioned_trips_load_as_the_single_file_table(both):
    single, days = both
    a, b = load_tables(single), load_tables(days)
    assert len(a.trips) > 4_000
    pd.testing.assert_frame_equal(b.trips, a.trips)
    pd.testing.assert_frame_equal(b.incidents, a.incidents)


def test_simulating_into_the_other_layout_is_refused(both):
    single, days = both
    with pytest.raises(FileExistsError, match="other layout"):
        simulate(single, preset=TINY, seed=3, progress=False, partitioned=True)
    with pytest.raises(FileExistsError, match="other layout"):
        simulate(days, preset=TINY, seed=3, progress=False)
