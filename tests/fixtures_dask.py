"""One Dask LocalCluster per test session for the Dask engine's tests: two single-threaded worker
*processes* on loopback (as in production, not threads), closed at the end of the session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dask_client():
    from safetyml.engine import resolve, session

    with session(resolve("dask", n_workers=2, memory_limit="1GiB", env={})) as client:
        yield client
