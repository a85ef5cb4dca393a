"""pandas and Dask side by side: `features build incident_risk` time and peak memory against trips.

For each preset (small, medium; large with --large) the script
1. simulates it (or takes --data-PRESET FOLDER) and writes a data-lake copy for Dask: trips and the
   merchant ledger hive-partitioned by day (``trips/date=YYYY-MM-DD/part-0.parquet``);
2. runs the pandas engine as the command users run (``safetyml features build``, a subprocess), polling
   its RSS;
3. runs the Dask engine in this process on a LocalCluster of ``--workers`` processes with
   ``--memory-limit`` each (validation + frame build), polling the RSS of this process (the client and
   the scheduler) and of every worker, and recording every task's duration (Dask's task stream);
4. prints time, rows/s and peak memory of each, then the per-partition cost (seconds and trips per
   task kind) and an extrapolation to 1 billion trips from those per-partition figures.

    .venv/bin/python benchmarks/bench_engine.py --presets small medium --workers 2

``--train FRAME`` instead compares the two engines' final fits on a built incident_risk frame: the
training pipeline (selection, tuning on its seeded sample, final fit, depth cap) runs once on pandas;
its final parameters and features are then fitted again on all training rows by the pandas engine and
by ``lightgbm.dask`` on a LocalCluster, and both boosters score the same test rows (ROC AUC, bar:
within 0.005).

    .venv/bin/python benchmarks/bench_engine.py --train /path/frames/incident_risk.parquet --trials 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SAFETYML = [str(ROOT / ".venv" / "bin" / "safetyml")]
MB = 1024 * 1024
# pandas figures measured earlier on this machine (24 GiB, 2 cores), cited when a run skips pandas
PANDAS_MEASURED = {
    "large": "STOPPED at 20,520 MiB RSS after 282 s (bench_engine.py --pandas-limit-gib 20, seed-7 large, "
    "2026-12-01 18:21 UTC, load 1.0-2.9; the issue measured 20 GiB after 262-268 s): it cannot build the "
    "large frame on this 24 GiB machine",
}


class PeakRSS:
    """Polls the RSS of some processes every ``interval`` seconds and keeps each one's peak (MiB)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2):
        self.pids, self.interval = dict(pids), interval
        self.peak: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in list(self.pids.items()):
                try:
                    rss = psutil.Process(pid).memory_info().rss / MB
                except psutil.NoSuchProcess:
                    continue
                self.peak[name] = max(self.peak[name], rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def prepare(preset: str, given: str | None, work: Path) -> tuple[Path, Path]:
    """(data folder with one file per table, lake copy for Dask: every table rewritten in row groups of
    ``ROW_GROUP_ROWS`` rows, one Dask partition each; the trips also hive-partitioned by month)."""
    from safetyml.tables import write_parquet

    if given:
        data = Path(given)
    else:
        from safetyml.simulate import simulate

        data = work / preset
        if not (data / "trips.parquet").exists():
            simulate(data, preset=preset, seed=7, progress=False)
    if (data / "trips").is_dir():  # already a lake (simulate --partitioned): trips by day, row groups
        return data, data
    lake = work / f"{preset}-lake"
    if not lake.exists():
        lake.mkdir(parents=True)
        for table in ("riders", "merchants", "incidents", "merchant_ledger", "credit_events"):
            write_parquet(pd.read_parquet(data / f"{table}.parquet"), lake / f"{table}.parquet")
        trips = pd.read_parquet(data / "trips.parquet")
        month = trips["requested_at"].dt.strftime("%Y-%m")
        for value, rows in trips.groupby(month.to_numpy(), sort=True):
            folder = lake / "trips" / f"month={value}"
            folder.mkdir(parents=True)
            write_parquet(rows, folder / "part-0.parquet")
        del trips
    return data, lake


def run_pandas(data: Path, out: Path, limit_mb: float | None = None) -> dict:
    """The pandas build as users run it; stopped (and reported as such) if its RSS passes ``limit_mb``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [*SAFETYML, "features", "build", "incident_risk", "--data", str(data), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped = None
    with PeakRSS({"process": process.pid}) as rss:
        while process.poll() is None:
            if limit_mb and rss.peak["process"] > limit_mb:
                process.kill()
                stopped = time.perf_counter() - started
            time.sleep(0.5)
        err = process.stderr.read()
    seconds = time.perf_counter() - started
    if stopped is not None:
        return {"seconds": seconds, "rows": None, "peak_mb": rss.peak["process"], "stopped": stopped}
    if process.returncode:
        raise RuntimeError(f"pandas build failed: {err[-2000:]}")
    rows = pq.ParquetFile(out).metadata.num_rows
    return {"seconds": seconds, "rows": rows, "peak_mb": rss.peak["process"], "stopped": None}


def trip_count(data: Path) -> int:
    from safetyml.tables import table_files, table_path

    return sum(pq.ParquetFile(f).metadata.num_rows for f in table_files(table_path(data, "trips")))


def run_dask(lake: Path, out: Path, workers: int, memory_limit: str) -> dict:
    from distributed import get_task_stream

    from safetyml.engine import resolve, session
    from safetyml.features.distributed import build_frame_dask
    from safetyml.tables import load_tables_dask

    choice = resolve("dask", env={}, n_workers=workers, memory_limit=memory_limit)
    with session(choice) as client:
        pids = client.run(os.getpid)
        watched = {"client": os.getpid(), **{f"worker {i}": pid for i, pid in enumerate(pids.values())}}
        started = time.perf_counter()
        with PeakRSS(watched) as rss, get_task_stream(client) as stream:
            try:
                tables = load_tables_dask(lake, client)
                validated = time.perf_counter() - started
                result = build_frame_dask("incident_risk", tables, client, out)
            except Exception as exc:
                print(f"  dask FAILED after {time.perf_counter() - started:.0f} s: {exc!r}")
                print(f"  peak RSS MiB so far: {dict(rss.peak)}")
                for worker, lines in client.get_worker_logs(n=30).items():
                    print(f"  --- {worker}")
                    for level, line in lines:
                        if level in ("WARNING", "ERROR", "CRITICAL"):
                            print(f"    {level} {line[:300]}")
                raise
        seconds = time.perf_counter() - started
        tasks = stream.data
    per_kind: dict[str, list[float]] = defaultdict(list)
    for task in tasks:
        kind = task["key"][0] if isinstance(task["key"], tuple) else str(task["key"])
        kind = kind.split("-", 1)[0]  # function name (keys are name-token)
        compute = [s for s in task["startstops"] if s["action"] == "compute"]
        per_kind[kind].append(sum(s["stop"] - s["start"] for s in compute))
    return {
        "seconds": seconds,
        "validate_seconds": validated,
        "rows": result.rows,
        "groups": result.groups,
        "days": result.days,
        "peak_mb": dict(rss.peak),
        "tasks": {k: v for k, v in per_kind.items()},
    }


def run_train(
    frame_path: Path, trials: int, seed: int, workers: int, memory_limit: str, repeats: int = 1
) -> None:
    """Final fit on pandas vs lightgbm.dask with the same parameters and features; same test rows."""
    from sklearn.metrics import roc_auc_score

    from safetyml.engine import resolve, session
    from safetyml.features.definitions import load_feature_set
    from safetyml.training.config import load_training_config
    from safetyml.training.data import select_features, usable_rows
    from safetyml.training.distributed import fit_booster_dask, scatter_rows
    from safetyml.training.pipeline import _final_booster, fit_model
    from safetyml.training.tuning import FitData

    config = load_training_config("incident_risk")
    fs = load_feature_set()
    frame, _ = usable_rows(pd.read_parquet(frame_path), config)
    started = time.perf_counter()
    fitted = fit_model(frame, select_features(fs, config), config, seed=seed, trials=trials, fs=fs)
    print(
        f"pipeline on pandas (selection, {trials} trials, final fit): {time.perf_counter() - started:.1f} s"
    )
    model, split = fitted.model, fitted.split
    X, y = model.prepare(frame), frame["label"].to_numpy(dtype="int64")
    tr, va, te = split.mask("train"), split.mask("valid"), split.mask("test")
    full = FitData(X.loc[tr], y[tr], X.loc[va], y[va], [])
    print(f"  {len(model.features)} features; train {tr.sum():,} rows, valid {va.sum():,}, test {te.sum():,}")
    print(f"  final parameters: {fitted.params}")

    def auc(booster) -> float:
        return roc_auc_score(y[te], booster.predict(X.loc[te], raw_score=True))

    print(f"load {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    with PeakRSS({"process": os.getpid()}) as rss:
        pandas_booster, pandas_best = _final_booster(dict(fitted.params), full, config)
    pandas_s = time.perf_counter() - started
    same = pandas_booster.model_to_string() == model.booster.model_to_string()
    print(
        f"  pandas final fit: {pandas_s:.1f} s, best round {pandas_best}, test ROC AUC "
        f"{auc(pandas_booster):.4f} (same trees as the pipeline's model: {same}); "
        f"process peak RSS {rss.peak['process']:,.0f} MiB"
    )
    choice = resolve("dask", env={}, n_workers=workers, memory_limit=memory_limit)
    diffs = []
    for repeat in range(repeats):  # a fresh cluster each time: LightGBM's rank order changes between runs
        with session(choice) as client:
            pids = client.run(os.getpid)
            watched = {"client": os.getpid(), **{f"worker {i}": p for i, p in enumerate(pids.values())}}
            print(f"load {os.getloadavg()[0]:.1f}")
            with PeakRSS(watched) as rss:
                started = time.perf_counter()
                rows = scatter_rows(client, full.X_train, full.y_train)
                scattered = time.perf_counter() - started
                fit = fit_booster_dask(
                    client, dict(fitted.params), rows.X, rows.y, full.X_valid, full.y_valid,
                    config.num_boost_round, config.early_stopping_rounds,
                )  # fmt: skip
            dask_s = time.perf_counter() - started
        peaks = ", ".join(f"{k} {v:,.0f}" for k, v in rss.peak.items())
        print(
            f"  dask final fit {repeat + 1}/{repeats} ({workers} workers x {memory_limit}, rows per worker "
            f"{list(rows.rows_per_worker.values())}): {dask_s:.1f} s (scatter {scattered:.1f} s), "
            f"best round {fit.best_iteration}, test ROC AUC {auc(fit.booster):.4f}; peak RSS MiB: {peaks}"
        )
        diffs.append(auc(fit.booster) - auc(pandas_booster))
    median = float(np.median(diffs))
    verdict = "met" if max(abs(d) for d in diffs) <= 0.005 else "MISSED"
    listed = ", ".join(f"{d:+.4f}" for d in diffs)
    print(f"  difference dask - pandas: {listed} (median {median:+.4f}) ROC AUC; bar 0.005 -> {verdict}")
    print(f"load {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["small", "medium"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="4GiB", help="per Dask worker")
    for preset in ("small", "medium", "large"):
        parser.add_argument(f"--data-{preset}", help=f"an existing {preset} data folder (else simulated)")
    parser.add_argument("--work", default=None, help="folder for data and outputs (default: a temp folder)")
    parser.add_argument(
        "--pandas-limit-gib", type=float, default=20.0, help="stop the pandas build past this RSS"
    )
    parser.add_argument("--skip-pandas", action="store_true", help="only the Dask engine")
    parser.add_argument(
        "--pandas-presets",
        nargs="*",
        default=None,
        help="run the pandas engine on these presets only (default: all); on the others the script "
        "prints the pandas figure measured earlier on this machine (PANDAS_MEASURED), if any",
    )
    parser.add_argument("--train", type=Path, help="compare the final fits on this incident_risk frame")
    parser.add_argument("--trials", type=int, default=4, help="--train: Optuna trials of the pipeline run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=1, help="--train: Dask fits, each on a new cluster")
    args = parser.parse_args()
    if args.train:
        print(f"load average at start: {os.getloadavg()}; {psutil.cpu_count()} cores")
        run_train(args.train, args.trials, args.seed, args.workers, args.memory_limit, args.repeats)
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_engine_"))
    print(f"load average at start: {os.getloadavg()}; {psutil.cpu_count()} cores; work folder {work}")
    summary = []
    for preset in args.presets:
        data, lake = prepare(preset, getattr(args, f"data_{preset}"), work)
        trips = trip_count(data)
        for old in (work / f"{preset}-pandas.parquet", work / f"{preset}-dask"):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        print(f"\n[{preset}] {trips:,} trips; load {os.getloadavg()[0]:.1f}", flush=True)
        skip = args.skip_pandas or (args.pandas_presets is not None and preset not in args.pandas_presets)
        if skip:
            pandas_run = {"seconds": float("nan"), "rows": None, "peak_mb": float("nan"), "stopped": None}
            if preset in PANDAS_MEASURED:
                print(f"  pandas: not rerun; measured earlier: {PANDAS_MEASURED[preset]}")
        else:
            pandas_run = run_pandas(data, work / f"{preset}-pandas.parquet", args.pandas_limit_gib * 1024)
        peak = pandas_run["peak_mb"]
        if pandas_run["stopped"] is not None:
            stop = pandas_run["stopped"]
            print(f"  pandas: STOPPED at {peak:,.0f} MiB RSS after {stop:.0f} s (over the limit)")
        elif pandas_run["rows"] is not None:
            rate = pandas_run["rows"] / pandas_run["seconds"]
            print(f"  pandas: {pandas_run['seconds']:.1f} s, {rate:,.0f} rows/s, peak RSS {peak:,.0f} MiB")
        print(f"  load {os.getloadavg()[0]:.1f}", flush=True)
        dask_run = run_dask(lake, work / f"{preset}-dask", args.workers, args.memory_limit)
        peaks = ", ".join(f"{k} {v:,.0f}" for k, v in dask_run["peak_mb"].items())
        rate = dask_run["rows"] / dask_run["seconds"]
        head = f"  dask ({args.workers} workers x {args.memory_limit}): {dask_run['seconds']:.1f} s"
        print(f"{head} (validation {dask_run['validate_seconds']:.1f} s), {rate:,.0f} rows/s")
        print(f"    groups {dask_run['groups']}, {dask_run['days']} daily parts; peak RSS MiB: {peaks}")
        if pandas_run["rows"] is not None:
            assert dask_run["rows"] == pandas_run["rows"], "the engines wrote different row counts"
        print(f"  load {os.getloadavg()[0]:.1f}", flush=True)
        print("  per task kind (the per-partition cost): count, total s, median s, max s")
        for kind, seconds in sorted(dask_run["tasks"].items(), key=lambda kv: -sum(kv[1])):
            if sum(seconds) < 0.05:
                continue
            s = pd.Series(seconds)
            print(f"    {kind:<28} {len(s):>5} {s.sum():>8.1f} {s.median():>8.3f} {s.max():>8.3f}")
        summary.append((preset, trips, pandas_run, dask_run))

    print("\nsummary: preset, trips, pandas s, pandas peak MiB, dask s, dask max worker MiB, client MiB")
    for preset, trips, p, d in summary:
        worker_peak = max(v for k, v in d["peak_mb"].items() if k.startswith("worker"))
        print(
            f"  {preset:<7} {trips:>11,} {p['seconds']:>8.1f} {p['peak_mb']:>9,.0f} {d['seconds']:>8.1f} "
            f"{worker_peak:>9,.0f} {d['peak_mb']['client']:>7,.0f}"
            + ("  (pandas stopped at the limit)" if p["stopped"] is not None else "")
        )
    preset, trips, _, d = summary[-1]
    cpu = sum(sum(v) for v in d["tasks"].values())
    per_trip = cpu / trips
    hours = per_trip * 1e9 / 3600
    print(f"\nextrapolation from {preset} ({trips:,} trips): {cpu:.0f} task-seconds = {per_trip * 1e6:.1f} s")
    print(f"  per million trips; 1 billion trips = {hours:,.0f} core-hours = {hours / 100:,.1f} h on 100")
    print("  single-core workers (linear in trips: every task works on a bounded group of trips)")


if __name__ == "__main__":
    main()
