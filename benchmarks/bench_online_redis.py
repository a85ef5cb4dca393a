"""The online store on Redis against the embedded SQLite store, on the same tables and as_of.

Starts a throw-away ``redis-server`` on a free loopback port (or uses ``--redis-url``), computes the entity
vectors once, writes them to a fresh SQLite file and to Redis (each one whole version), then prints:

- write time of the whole version on each store, and Redis memory used;
- parity: every id of every entity read back from both (``get``), compared exactly (0 differences expected),
  and a sample of ``get_one`` answers;
- lookup latency (``get_one``, p50/p99 in µs) per entity on each store;
- ``Scorer.score_trip`` with reasons in process (no audit) with each store: p50/p99 in ms;
- a second version written while a reader scores: the switch time and what the cleaning left.

Usage: ``python benchmarks/bench_online_redis.py --data DATA [--home HOME] [--all-features]``: without
``--all-features`` the columns are those of the registered champions (as ``safetyml features materialize``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


def _lookup_us(store: Any, entity: str, ids: list[str]) -> tuple[float, float]:
    times = []
    for entity_id in ids:
        started = time.perf_counter()
        store.get_one(entity, entity_id)
        times.append(time.perf_counter() - started)
    us = np.asarray(times) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def _score_ms(scorer: Any, requests: list[Any], seconds: float) -> tuple[float, float, int]:
    for request in requests[:20]:
        scorer.score_trip(request)
    times, end, i = [], time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        started = time.perf_counter()
        scorer.score_trip(requests[i % len(requests)])
        times.append(time.perf_counter() - started)
        i += 1
    ms = np.asarray(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="simulated data folder")
    parser.add_argument("--home", type=Path, default=None, help="SAFETYML_HOME with the champions")
    parser.add_argument("--redis-url", default=None, help="an existing Redis (default: start one)")
    parser.add_argument("--all-features", action="store_true", help="store every definition")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of scoring per store")
    args = parser.parse_args()
    if args.home is not None:
        os.environ["SAFETYML_HOME"] = str(args.home)
    sys.path.insert(0, str(REPO))
    import redis
    from tests.fixtures_servers import RedisServer

    from safetyml.features.definitions import load_feature_set
    from safetyml.features.engine import FeatureEngine
    from safetyml.features.online import ENTITIES, OnlineStore, default_as_of, entity_vectors, store_columns
    from safetyml.features.online_redis import RedisOnlineStore
    from safetyml.scoring.examples import example_trip_requests
    from safetyml.scoring.schemas import TripScoreRequest
    from safetyml.scoring.scorer import Scorer
    from safetyml.tables import load_tables
    from safetyml.training.selection import registered_features

    server = None
    url = args.redis_url
    if url is None:
        server = RedisServer()
        server.start()
        url = server.url
    work = Path(tempfile.mkdtemp(prefix="bench_online_redis_"))
    try:
        tables = load_tables(args.data)
        fs = load_feature_set()
        used = None if args.all_features else registered_features()
        stamp = default_as_of(tables)
        started = time.perf_counter()
        vectors = entity_vectors(
            FeatureEngine(tables, fs), stamp, None if used is None else store_columns(fs, used)
        )
        print(
            f"vectors computed in {time.perf_counter() - started:.1f} s (as_of {stamp}); "
            f"load {os.getloadavg()[0]:.1f}"
        )
        rows = {e: len(f) for e, f in vectors.items()}
        print("rows per entity:", rows, "columns:", {e: f.shape[1] for e, f in vectors.items()})

        sqlite = OnlineStore.open(work / "store.sqlite")
        started = time.perf_counter()
        sqlite.write_all(vectors, stamp, fs.version)
        sqlite_s = time.perf_counter() - started
        client = redis.Redis.from_url(url)
        client.flushdb()
        on_redis = RedisOnlineStore.from_url(url)  # the pointer re-read at most once a second, as served
        started = time.perf_counter()
        on_redis.write_all(vectors, stamp, fs.version)
        redis_s = time.perf_counter() - started
        memory = client.info("memory")["used_memory"] / 2**20
        print(
            f"write a whole version: SQLite {sqlite_s:.1f} s, Redis {redis_s:.1f} s "
            f"(Redis memory {memory:.0f} MiB)"
        )

        differences, compared, one_checked = 0, 0, 0
        rng = np.random.default_rng(7)
        for entity in ENTITIES:
            ids = sqlite.ids(entity)
            if on_redis.ids(entity) != ids:
                differences += 1
                print(f"  {entity}: the id lists differ")
                continue
            a = on_redis.get(entity, ids, with_city=True).sort_index()
            b = sqlite.get(entity, ids, with_city=True).sort_index()
            try:
                pd.testing.assert_frame_equal(a, b, check_exact=True)
            except AssertionError as exc:
                differences += 1
                print(f"  {entity}: {exc}")
            compared += len(ids)
            for i in rng.choice(len(ids), size=min(500, len(ids)), replace=False):
                x, y = on_redis.get_one(entity, ids[i]), sqlite.get_one(entity, ids[i])
                if list(x) != list(y) or not all(_same(x[c], y[c]) for c in x):
                    differences += 1
                one_checked += 1
        print(
            f"parity: {compared:,} vectors compared exactly with get(), {one_checked:,} with get_one(); "
            f"{differences} differences"
        )

        print(f"get_one latency (µs, 1,000 lookups of known ids), load {os.getloadavg()[0]:.1f}:")
        for entity in ENTITIES:
            ids = sqlite.ids(entity)
            sample = [ids[i] for i in rng.integers(0, len(ids), size=1000)]
            s50, s99 = _lookup_us(sqlite, entity, sample)
            r50, r99 = _lookup_us(on_redis, entity, sample)
            print(f"  {entity:<9} SQLite p50 {s50:6.1f} p99 {s99:6.1f}   Redis p50 {r50:6.1f} p99 {r99:6.1f}")

        requests = [TripScoreRequest.model_validate(r) for r in example_trip_requests(sqlite, 300, seed=1)]
        for label, store in (("SQLite", sqlite), ("Redis", on_redis)):
            scorer = Scorer.from_registry()
            scorer.store = store
            p50, p99, n = _score_ms(scorer, requests, args.seconds)
            print(
                f"score_trip with reasons in process, {label} store: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                f"({n:,} calls, load {os.getloadavg()[0]:.1f})"
            )

        started = time.perf_counter()
        on_redis.write_all(vectors, stamp + pd.Timedelta(minutes=1), fs.version)
        second = time.perf_counter() - started
        generations = sorted(
            {k.decode().split(":")[2] for k in client.scan_iter(match=f"{on_redis.prefix}:g[0-9]*")}
        )
        print(
            f"second version written and switched in {second:.1f} s; generations kept: {generations} "
            f"(current {on_redis.metadata()['generation']}); Redis memory now "
            f"{client.info('memory')['used_memory'] / 2**20:.0f} MiB"
        )
        sqlite.close()
        on_redis.close()
    finally:
        if server is not None:
            server.stop()
    print(f"load average now: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} cpus")


if __name__ == "__main__":
    main()
