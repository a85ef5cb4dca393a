"""Recovery of the simulator's planted hot zones by the zone job's flags: recall and precision.

For each seed, simulates the medium preset (unless the folder exists), takes the latest window
(as_of = just after the last trip) and computes the zone flags exactly as ``safetyml score-zones`` does
(flags depend on trips and incidents only; the model adds expected risk and drivers). Matching is strict:
a flagged cell counts only if it *is* a planted cell active in the window; a flagged neighbour of a
planted cell is a false positive (``precision_within_1`` shows the lenient figure). A cell is flagged if
it is flagged in any band (day, night, all). Prints the three flag tests side by side.

    .venv/bin/python benchmarks/bench_hotspots.py --seeds 7 11 3 --root /tmp/bench_hotspots
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from safetyml.batch.recovery import recovery
from safetyml.batch.zone_config import ZoneConfig
from safetyml.batch.zones import evidence_trips, parse_window, time_band, zone_evidence


def data_for(root: Path, preset: str, seed: int) -> Path:
    folder = root / f"{preset}_seed{seed}"
    if not (folder / "trips.parquet").exists():
        from safetyml.simulate import simulate

        simulate(folder, preset=preset, seed=seed, progress=False)
    return folder


def measure(data: Path, config: ZoneConfig, window: str) -> dict[str, float]:
    trips = pd.read_parquet(data / "trips.parquet")
    incidents = pd.read_parquet(data / "incidents.parquet")
    truth = pd.read_parquet(data / "truth" / "hot_zones.parquet")
    as_of = trips["requested_at"].max() + pd.Timedelta(seconds=1)
    start = as_of - max(parse_window(config.evidence), parse_window(window))
    evidence = evidence_trips(trips, incidents, as_of, start)
    evidence["band"] = time_band(evidence["as_of"], evidence["city"], config)
    zones = zone_evidence(evidence, config)
    return recovery(zones, truth, as_of - parse_window(window), as_of)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/bench_hotspots"))
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 3])
    parser.add_argument("--window", default="7d")
    parser.add_argument("--evidence", default=ZoneConfig().evidence)
    args = parser.parse_args()
    console = Console(width=150)
    table = Table(
        title=f"planted hot-zone recovery, {args.preset} preset, window {args.window}, "
        f"evidence {args.evidence} (strict cell matching)"
    )
    for col in (
        "seed",
        "flag test",
        "planted",
        "flagged",
        "recall",
        "precision",
        "precision ≤1 cell",
        "cluster recall",
        "emerging recall",
        "s",
    ):
        table.add_column(col, justify="right")
    for seed in args.seeds:
        data = data_for(args.root, args.preset, seed)
        for test in ("own", "own_or_gi", "gi"):
            started = time.perf_counter()
            r = measure(data, ZoneConfig(evidence=args.evidence, flag_test=test), args.window)
            table.add_row(
                str(seed),
                test + (" (default)" if test == ZoneConfig().flag_test else ""),
                f"{r['planted_cells']:.0f}",
                f"{r['flagged_cells']:.0f}",
                f"{r['recall']:.2f}",
                f"{r['precision']:.2f}",
                f"{r['precision_within_1']:.2f}",
                f"{r['cluster_recall']:.2f}",
                f"{r['emerging_recall']:.2f}",
                f"{time.perf_counter() - started:.1f}",
            )
    console.print(table)


if __name__ == "__main__":
    main()
