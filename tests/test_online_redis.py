"""The online store on a real redis-server (started on 127.0.0.1 for the session, always stopped):

- parity: materialized from the same tables at the same as_of, the Redis and SQLite stores return the same
  ids, bit-identical vectors (``get`` and ``get_one``), the same metadata and the same trip model inputs;
- versions: readers pinned to a version never see a mix of two as_of times while a writer switches
  versions under them, and old versions (also a crashed writer's partial one) are removed.
"""

from __future__ import annotations

import math
import threading
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from safetyml import envvars
from safetyml.envvars import environment

pytestmark = pytest.mark.slow


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return type(a) is type(b) and a == b


def test_redis_and_sqlite_stores_return_identical_vectors(redis_server: Any, small_data_dir: Any, tmp_path):
    from safetyml.features.definitions import load_feature_set
    from safetyml.features.engine import FeatureEngine
    from safetyml.features.frames import assemble_trip_features
    from safetyml.features.online import ENTITIES, OnlineStore, default_as_of, materialize
    from safetyml.features.online_redis import RedisOnlineStore
    from safetyml.tables import load_tables

    tables = load_tables(small_data_dir)
    fs = load_feature_set()
    engine = FeatureEngine(tables, fs)
    as_of = default_as_of(tables) - pd.Timedelta(days=20)
    url = redis_server.url.rsplit("/", 1)[0] + "/2"  # a database of its own
    with environment({envvars.ONLINE_STORE_URL: url}), OnlineStore.open() as on_redis:
        assert isinstance(on_redis, RedisOnlineStore)  # the one setting selects Redis
        meta_redis = materialize(tables, fs, as_of=as_of, store=on_redis, engine=engine)
        with OnlineStore.open(tmp_path / "store.sqlite") as on_sqlite:
            meta_sqlite = materialize(tables, fs, as_of=as_of, store=on_sqlite, engine=engine)
            assert {k: meta_redis[k] for k in ("as_of", "version", "rows")} == {
                k: meta_sqlite[k] for k in ("as_of", "version", "rows")
            }
            assert meta_redis["rows"]["rider"] == len(tables.riders) > 0
            rng = np.random.default_rng(7)
            for entity in ENTITIES:
                ids = on_sqlite.ids(entity)
                assert on_redis.ids(entity) == ids and ids, entity
                frames = [s.get(entity, ids, with_city=True).sort_index() for s in (on_redis, on_sqlite)]
                pd.testing.assert_frame_equal(*frames, check_exact=True, obj=entity)
                sample = [ids[i] for i in rng.choice(len(ids), size=min(200, len(ids)), replace=False)]
                keys = [(entity, i) for i in [*sample, "no-such-id"]]
                with on_redis.pinned(prefetch=keys[::2]):  # half prefetched in one round trip, half not
                    for _, entity_id in keys:
                        a, b = on_redis.get_one(entity, entity_id), on_sqlite.get_one(entity, entity_id)
                        assert (a is None) == (b is None), (entity, entity_id)
                        if a is not None:
                            assert list(a) == list(b), (entity, a, b)
                            assert all(_same_value(a[c], b[c]) for c in a), (entity, a, b)
            trips = tables.trips[tables.trips["requested_at"] >= as_of].head(300)
            pd.testing.assert_frame_equal(
                assemble_trip_features(trips, on_redis, fs),
                assemble_trip_features(trips, on_sqlite, fs),
                check_exact=True,
            )


def _version(k: int, n: int) -> dict[str, pd.DataFrame]:
    """Version ``k``: every value of every entity is ``k`` (so a mix of two versions is visible)."""
    ids = [f"id{i:06d}" for i in range(n)]
    return {
        "rider": pd.DataFrame({"x": np.full(n, float(k)), "y": np.full(n, float(k))}, index=ids),
        "merchant": pd.DataFrame({"x": np.full(n, float(k)), "city": ["city_a"] * n}, index=ids),
    }


def test_versions_switch_whole_and_old_versions_are_removed(redis_server: Any) -> None:
    import redis

    from safetyml.features.online_redis import RedisOnlineStore

    prefix = f"test:{uuid.uuid4().hex[:8]}"
    url = redis_server.url
    base = pd.Timestamp("2026-10-01T00:00:00Z")
    writer = RedisOnlineStore.from_url(url, prefix=prefix, refresh_seconds=0)
    reader = RedisOnlineStore.from_url(url, prefix=prefix, refresh_seconds=0)
    client = redis.Redis.from_url(url)
    with pytest.raises(KeyError, match="no 'rider' vectors"):
        reader.get_one("rider", "id000001")
    assert reader.metadata()["as_of"] is None
    n = 20_000
    writer.write_all(_version(0, n), base, "v")
    mixes: list[tuple] = []
    seen: set[int] = set()
    stop = threading.Event()

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            some = [f"id{i:06d}" for i in rng.integers(0, n, size=20)]
            with reader.pinned():
                hours = (pd.Timestamp(reader.metadata()["as_of"]) - base) / pd.Timedelta(hours=1)
                rider = reader.get_one("rider", some[0])
                merchant = reader.get_one("merchant", some[1])
                many = reader.get("rider", some)["y"].to_numpy()
            values = {rider["x"], rider["y"], merchant["x"], *many.tolist()}
            if values != {hours}:
                mixes.append((hours, sorted(values)))
            seen.add(int(hours))

    threads = [threading.Thread(target=read, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(1, 7):
            writer.write_all(_version(k, n), base + pd.Timedelta(hours=k), "v")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not mixes, f"{len(mixes)} reads saw two versions at once, e.g. {mixes[:3]}"
    assert len(seen) >= 3, f"readers saw only versions {seen}: the switches were not exercised"
    assert reader.get_one("merchant", "id000042") == {"x": 6.0, "city": "city_a"}

    def generations() -> set[str]:
        return {k.decode().split(":")[2] for k in client.scan_iter(match=f"{prefix}:g[0-9]*")}

    current = writer.metadata()["generation"]
    assert generations() == {f"g{current - 1}", f"g{current}"}  # the previous one stays for readers in flight
    # a writer that crashed half-way left a generation the pointer never named: the next write removes it
    crashed = int(client.incr(f"{prefix}:generation"))
    client.sadd(f"{prefix}:generations", crashed)
    client.hset(f"{prefix}:g{crashed}:rider", "id000001", "[99.0, 99.0]")
    assert reader.get_one("rider", "id000001")["x"] == 6.0  # never visible to a reader
    writer.write_all(_version(7, 10), base + pd.Timedelta(hours=7), "v")
    latest = writer.metadata()["generation"]
    assert generations() == {f"g{current}", f"g{latest}"}
    # one entity alone: a new version for it, the other entity kept from the version before
    writer.write("merchant", _version(8, 5)["merchant"], base + pd.Timedelta(hours=8), "v")
    assert reader.get_one("rider", "id000001")["x"] == 7.0
    assert reader.get_one("merchant", "id000001")["x"] == 8.0
    assert reader.metadata()["rows"] == {"rider": 10, "merchant": 5}
    for store in (writer, reader):
        store.close()
    client.close()


def test_an_unreachable_redis_is_a_503_naming_the_store_not_a_500() -> None:
    from safetyml.features.online_redis import RedisOnlineStore, StoreUnavailableError
    from safetyml.scoring.http import error_response
    from tests.fixtures_servers import free_port

    store = RedisOnlineStore.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens there
    with pytest.raises(StoreUnavailableError, match=r"online store redis://127\.0\.0\.1:\d+/0") as caught:
        store.get_one("rider", "R1")
    assert error_response(caught.value)[0] == 503
    with pytest.raises(StoreUnavailableError):
        store.write_all(_version(1, 3), pd.Timestamp("2026-10-01T00:00:00Z"), "v")


def test_materialize_cli_takes_a_redis_url_and_monitoring_reads_its_as_of(
    redis_server: Any, small_data_dir: Any, tmp_path, monkeypatch
) -> None:
    """``features materialize --store redis://…`` writes to Redis (a Path option would mangle the URL), and
    monitoring's store freshness reads the store the service reads (SAFETYML_ONLINE_STORE_URL)."""
    from typer.testing import CliRunner

    from safetyml.cli import app
    from safetyml.features.online import OnlineStore
    from safetyml.monitoring.run import _store_as_of

    monkeypatch.setenv(envvars.HOME, str(tmp_path / "home"))  # no SQLite store, no registered models
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    as_of = "2026-08-01T00:00:00Z"
    args = ["features", "materialize", "--data", str(small_data_dir), "--store", url, "--as-of", as_of]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "home" / "online_store.sqlite").exists()
    with OnlineStore.open(url) as store:
        assert pd.Timestamp(store.metadata()["as_of"]) == pd.Timestamp(as_of)
        assert store.ids("rider")
    assert _store_as_of() is None  # no URL set, no SQLite file: nothing to read
    with environment({envvars.ONLINE_STORE_URL: url}):
        assert _store_as_of() == pd.Timestamp(as_of)
