"""Speed and memory of the feature engine: the incident_risk frame of the small and medium presets.

Usage: ``python benchmarks/bench_features.py [--sizes small,medium] [--data-small DIR] [--data-medium DIR]``.
Data folders not given are simulated (seed 7) under ``tmp/data/<preset>`` first. Each size runs in its own
subprocess so its peak memory (max RSS, which includes loading the tables) is its own. Prints seconds
(wall and CPU), rows/s and peak memory, plus the merchant_credit frame, materialize and a store lookup.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def worker(data: Path) -> dict:
    """Run inside the subprocess: load, build both frames, materialize, time a lookup."""
    import tempfile

    import numpy as np

    from safetyml.features.definitions import load_feature_set
    from safetyml.features.engine import FeatureEngine
    from safetyml.features.frames import build_frame
    from safetyml.features.online import OnlineStore, materialize
    from safetyml.tables import load_tables

    out: dict = {}
    start = time.perf_counter()
    tables = load_tables(data)
    out["load_s"] = time.perf_counter() - start
    out["trips"] = len(tables.trips)
    fs = load_feature_set()
    wall, cpu = time.perf_counter(), time.process_time()
    frame = build_frame("incident_risk", tables, fs)
    out["build_s"] = time.perf_counter() - wall
    out["build_cpu_s"] = time.process_time() - cpu
    out["rows"] = len(frame)
    out["features"] = len(fs.for_task("incident_risk"))
    out["peak_build_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del frame
    start = time.perf_counter()
    engine = FeatureEngine(tables, fs)
    credit = build_frame("merchant_credit", tables, fs, engine=engine)
    out["credit_s"] = time.perf_counter() - start
    out["credit_rows"] = len(credit)
    with tempfile.TemporaryDirectory() as tmp, OnlineStore.open(Path(tmp) / "store.sqlite") as store:
        start = time.perf_counter()
        meta = materialize(tables, fs, store=store, engine=engine)
        out["materialize_s"] = time.perf_counter() - start
        out["store_rows"] = meta["rows"]
        ids = tables.riders["rider_id"].astype(str).tolist()[:500]
        timings = []
        for rider in ids * 4:
            t0 = time.perf_counter()
            store.get_one("rider", rider)
            timings.append(time.perf_counter() - t0)
        out["lookup_median_us"] = float(np.median(timings) * 1e6)
        out["lookup_p99_us"] = float(np.percentile(timings, 99) * 1e6)
        out["trip_row_median_us"], out["trip_row_p99_us"] = trip_row_timings(tables, store, fs)
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_average"] = os.getloadavg()[0]
    return out


def trip_row_timings(tables, store, fs, n: int = 500) -> tuple[float, float]:
    """The whole online lookup of one trip request (rider, merchant, pair, pickup and drop-off zone and city
    vectors from the store, plus the request-time features and deviations): median and p99 in µs."""
    from types import SimpleNamespace

    import numpy as np

    from safetyml.features.online_rows import TripPlan, assemble_trip_rows

    plan = TripPlan.build(fs)
    trips = tables.trips.sample(n, random_state=7)
    requests = []
    for trip in trips.to_dict("records"):
        fields = {k: trip.get(k) for k in ("rider_id", "merchant_id", "distance_km", "order_value")}
        fields |= {k: float(trip[k]) for k in ("pickup_lat", "pickup_lng", "dropoff_lat", "dropoff_lng")}
        fields |= {
            "requested_at": trip["requested_at"].to_pydatetime(),
            "payment_method": str(trip["payment_method"]),
            "rain": None,
            "city": trip.get("city"),
        }
        requests.append(SimpleNamespace(**fields))
    timings = []
    for request in requests * 2:
        t0 = time.perf_counter()
        assemble_trip_rows([request], store, fs, plan)
        timings.append(time.perf_counter() - t0)
    return float(np.median(timings) * 1e6), float(np.percentile(timings, 99) * 1e6)


def ensure_data(preset: str, given: Path | None, root: Path) -> Path:
    if given is not None:
        return given
    folder = root / preset
    if not (folder / "trips.parquet").exists():
        from safetyml.simulate import simulate

        print(f"simulating {preset} (seed 7) into {folder} …", flush=True)
        simulate(folder, preset=preset, seed=7, progress=False)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--data-small", type=Path)
    parser.add_argument("--data-medium", type=Path)
    parser.add_argument("--root", type=Path, default=Path("tmp/data"), help="where to simulate missing data")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    results = {}
    for size in args.sizes.split(","):
        data = ensure_data(size, getattr(args, f"data_{size}", None), args.root)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", str(data)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"{size}: benchmark worker failed")
        results[size] = json.loads(proc.stdout.strip().splitlines()[-1])
    header = (
        f"{'preset':8} {'trips':>10} {'features':>8} {'load s':>7} {'build s':>8} {'cpu s':>7} {'rows/s':>9} "
        f"{'peak GiB':>9} {'credit s':>9} {'mat. s':>7} {'lookup µs':>10} {'trip row µs':>12} {'load':>5}"
    )
    print(header)
    for size, r in results.items():
        print(
            f"{size:8} {r['trips']:>10,} {r['features']:>8} {r['load_s']:>7.1f} {r['build_s']:>8.1f} "
            f"{r['build_cpu_s']:>7.1f} {r['rows'] / r['build_s']:>9,.0f} {r['peak_mib'] / 1024:>9.2f} "
            f"{r['credit_s']:>9.1f} {r['materialize_s']:>7.1f} {r['lookup_median_us']:>10.0f} "
            f"{r['trip_row_median_us']:>12.0f} {r['load_average']:>5.1f}"
        )
    print(
        "build = incident_risk frame from loaded tables (wall clock; cpu = process CPU time); "
        "peak = max RSS of the run incl. loading; lookup = median OnlineStore.get_one; trip row = median "
        "of the whole online lookup of one trip (rider, merchant, pair, zones, city + request features, "
        "features.online_rows.assemble_trip_rows); load = 1-min load average at the end of the run."
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
