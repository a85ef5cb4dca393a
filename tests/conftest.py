"""Shared fixtures: one small simulated platform per test session (seed 7), reused by every area."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the small preset simulated with seed 7 (tables + truth/); do not modify it."""
    from safetyml.simulate import simulate

    out = tmp_path_factory.mktemp("small_seed7")
    simulate(out, preset="small", seed=7, progress=False)
    return out


pytest_plugins = ["tests.fixtures_training", "tests.fixtures_dask", "tests.fixtures_servers"]
