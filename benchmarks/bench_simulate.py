"""Benchmark ``safetyml simulate``: seconds, trips/s and peak memory per preset (each in its own process).

Usage:
  python benchmarks/bench_simulate.py [small medium large ...] [--repeat N]   (default: small medium, 1 run)
  python benchmarks/bench_simulate.py --rates medium --seed 7   (incident rate overall and per episode kind)
  python benchmarks/bench_simulate.py --rates medium --seed 7 --drift city_incident_rate:sao_paulo:+30%:60
      (also: the drifted trips' incidents against the same seed without drift)

With ``--repeat`` each preset runs N times (fresh interpreter each) and the median seconds and peak are shown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
from pathlib import Path
from safetyml.simulate import simulate
preset, out = sys.argv[1], Path(sys.argv[2])
started = time.perf_counter()
summary = simulate(out, preset=preset, seed=0, progress=False)
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
peak_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
size = sum(p.stat().st_size for p in out.rglob('*.parquet'))
print(json.dumps({"preset": preset, "seconds": seconds, "trips": summary.counts["trips"],
                  "incidents": summary.counts["incidents"], "peak_mib": peak_kib / 1024, "cpu": cpu,
                  "disk_mib": size / 2**20}))
"""


def run(preset: str) -> dict:
    """Simulate one preset in a fresh interpreter so its RSS high-water mark is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, preset, tmp], check=True, capture_output=True, text=True
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def timings(presets: list[str], repeat: int) -> None:
    print(
        f"{'preset':<8} {'trips':>12} {'incidents':>10} {'seconds':>9} {'trips/s':>11} "
        f"{'CPU s':>7} {'peak MiB':>9} {'disk MiB':>9}  runs (s)"
    )
    for preset in presets:
        runs = [run(preset) for _ in range(repeat)]
        r = runs[0]
        seconds = statistics.median(x["seconds"] for x in runs)
        peak = statistics.median(x["peak_mib"] for x in runs)
        cpu = statistics.median(
            x["cpu"] for x in runs
        )  # process CPU (incl. imports): robust to a busy machine
        print(
            f"{r['preset']:<8} {r['trips']:>12,} {r['incidents']:>10,} {seconds:>9.1f} "
            f"{r['trips'] / seconds:>11,.0f} {cpu:>7.1f} {peak:>9,.0f} {r['disk_mib']:>9,.1f}  "
            + " ".join(f"{x['seconds']:.1f}" for x in runs),
            flush=True,
        )


def rates(preset: str, seed: int, drift: list[str]) -> None:
    """Incident rate and mean oracle probability overall and in each kind of spell, front and wave."""
    import numpy as np
    import pandas as pd

    from safetyml.simulate import simulate_tables
    from safetyml.simulate.dynamics import DRIFT, MERCHANT_FRONT, RIDER_SPELL, episode_rates

    tables, truth = simulate_tables(preset, seed=seed, drift=drift)
    trips, tp = tables["trips"], truth["trip_probability"]
    print(f"{preset} preset, seed {seed}: {len(trips):,} trips, {len(tables['incidents']):,} incidents")
    out = episode_rates(trips, tables["incidents"], tp)
    hit = trips["trip_id"].isin(set(tables["incidents"]["trip_id"].dropna())).to_numpy()
    p = tp["p_incident"].to_numpy()
    for name, key, bit in (
        ("rider_spells", "rider_id", RIDER_SPELL),
        ("merchant_fronts", "merchant_id", MERCHANT_FRONT),
    ):
        ep = truth[name]
        j = trips[[key, "requested_at"]].merge(ep[[key, "kind", "start", "end"]], on=key, how="left")
        inside = ((j["requested_at"] >= j["start"]) & (j["requested_at"] < j["end"])).to_numpy()
        for kind in sorted(ep["kind"].unique()):
            m = inside & (j["kind"] == kind).to_numpy() & ((tp["episode"].to_numpy() & bit) > 0)
            rows = {
                "trips": f"  {kind}",
                "n": int(m.sum()),
                "incident_rate": hit[m].mean(),
                "mean_p": p[m].mean(),
            }
            out = pd.concat([out, pd.DataFrame([rows])], ignore_index=True)
    base = out.loc[out["trips"] == "no episode", "incident_rate"].item()
    out["x no episode"] = out["incident_rate"] / base
    print(
        out.to_string(
            index=False,
            formatters={
                "n": "{:,}".format,
                "incident_rate": lambda v: "" if np.isnan(v) else f"{1e4 * v:,.0f}/10k",
                "mean_p": lambda v: "" if np.isnan(v) else f"{1e4 * v:,.0f}/10k",
                "x no episode": lambda v: "" if np.isnan(v) else f"{v:.2f}",
            },
        )
    )
    if drift:
        base, base_truth = simulate_tables(preset, seed=seed)
        on = (tp["episode"].to_numpy() & DRIFT) > 0
        hit0 = base["trips"]["trip_id"].isin(set(base["incidents"]["trip_id"].dropna())).to_numpy()
        p0 = base_truth["trip_probability"]["p_incident"].to_numpy()
        n0, n1 = hit0[on].sum(), hit[on].sum()
        print(
            f"drift {' '.join(drift)}: {on.sum():,} trips; incidents {n1:,} vs {n0:,} without drift "
            f"(x{n1 / n0:.3f}, Poisson sd of the extra ~{np.sqrt(max(n1 - n0, 1)) / n0:.3f}); "
            f"mean p x{p[on].mean() / p0[on].mean():.3f}"
        )
        for col in ("order_value", "distance_km"):
            ratio = trips.loc[on, col].median() / base["trips"].loc[on, col].median()
            print(f"  median {col} on those trips x{ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("presets", nargs="*", default=["small", "medium"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--rates", metavar="PRESET", help="print incident rates per episode kind instead")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--drift", action="append", default=[], help="a --drift spec, with --rates (repeatable)"
    )
    args = parser.parse_args()
    if args.rates:
        rates(args.rates, args.seed, args.drift)
    else:
        timings(args.presets, args.repeat)


if __name__ == "__main__":
    main()
