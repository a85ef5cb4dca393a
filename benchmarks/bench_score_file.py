"""Speed and peak memory of ``score-file`` (pandas engine, no explanations) for two input sizes.

Each size runs in a fresh process, so the peak resident memory (``VmHWM``) is that run's own; the
baseline is the same process's peak after imports and model loading, before scoring. Both inputs are
rewritten with 100k-row groups, so memory bounded by the chunk shows as the same peak for both sizes.
rows/CPU-s is rows per second of the scoring process's own CPU time: on a busy machine it says what the
code costs when the wall clock does not (for the Dask engine it leaves out the workers' CPU).

    .venv/bin/python benchmarks/bench_score_file.py --features FRAME.parquet [--model-dir DIR] [--dask]

FRAME.parquet is an incident_risk frame from ``safetyml features build`` (medium preset: ~1M rows). The
model is ``--model-dir`` (a saved RiskModel folder) or the champion in SAFETYML_HOME.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB: ``VmHWM`` from /proc/self/status.

    Not ``ru_maxrss``: Linux keeps that across ``fork``/``exec``, so a child started by this script
    would report the parent's peak (the parent reads the input to write the subsets).
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def scorer_for(model_dir: Path | None, task: str):
    from safetyml.features.definitions import load_feature_set
    from safetyml.model import RiskModel
    from safetyml.scoring.policies import load_policies
    from safetyml.scoring.scorer import Scorer

    if model_dir is not None:
        model, version = RiskModel.load(model_dir), "local"
    else:
        from safetyml import tracking

        model, ref = tracking.load_model(task, "champion")
        version = str(ref.version)
    return Scorer(
        models={task: model},
        policies=load_policies(),
        feature_set=load_feature_set(),
        model_versions={task: version},
    )


def child(args: argparse.Namespace) -> None:
    import resource

    from safetyml.batch.score_file import score_file

    scorer = scorer_for(args.model_dir, args.task)
    baseline = peak_rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = score_file(
            args.task,
            args.input,
            Path(tmp) / "out.parquet",
            scorer=scorer,
            engine=args.engine,
            batch_size=args.batch_rows,
            progress=False,
            n_workers=2,
        )
        seconds = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(
        json.dumps(
            {
                "rows": result.rows,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "peak_mb": peak_rss_mb(),
                "baseline_mb": baseline,
            }
        )
    )


def subset(source: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` rows of ``source``, written in 100k-row groups, streamed."""
    reader = pq.ParquetFile(source)
    written = 0
    with pq.ParquetWriter(out, reader.schema_arrow) as writer:
        for batch in reader.iter_batches(batch_size=100_000):
            take = min(batch.num_rows, rows - written)
            writer.write_batch(batch.slice(0, take), row_group_size=100_000)
            written += take
            if written >= rows:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--task", default="incident_risk")
    parser.add_argument("--sizes", type=int, nargs=2, default=[250_000, 0], help="rows; 0 = the whole file")
    parser.add_argument("--batch-rows", type=int, default=131_072)
    parser.add_argument(
        "--dask", action="store_true", help="also time the Dask engine (LocalCluster, 2 workers)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="pandas", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    total = pq.ParquetFile(args.features).metadata.num_rows
    engines = ["pandas", "dask"] if args.dask else ["pandas"]
    print(f"score-file benchmark: {args.features} ({total:,} rows), batch {args.batch_rows:,} rows")
    print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores)")
    print(
        f"{'engine':<8}{'rows':>12}{'seconds':>10}{'rows/s':>12}{'rows/CPU-s':>12}{'peak MiB':>11}"
        f"{'baseline MiB':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rows = total if size == 0 or size >= total else size
            path = subset(args.features, rows, Path(tmp) / f"in_{rows}.parquet")  # same 100k-row groups
            for engine in engines:
                command = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--input",
                    str(path),
                    "--task",
                    args.task,
                    "--engine",
                    engine,
                    "--batch-rows",
                    str(args.batch_rows),
                    "--features",
                    str(path),
                ]
                if args.model_dir:
                    command += ["--model-dir", str(args.model_dir)]
                out = (
                    subprocess.run(command, check=True, capture_output=True, text=True)
                    .stdout.strip()
                    .splitlines()
                )
                r = json.loads(out[-1])
                print(
                    f"{engine:<8}{r['rows']:>12,}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>12,.0f}"
                    f"{r['rows'] / max(r['cpu_seconds'], 1e-9):>12,.0f}{r['peak_mb']:>11,.0f}"
                    f"{r['baseline_mb']:>14,.0f}"
                )


if __name__ == "__main__":
    main()
