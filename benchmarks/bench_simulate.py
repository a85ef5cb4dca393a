"""Benchmark ``safetyml simulate``: seconds, trips/s and peak memory per preset (each in its own process).

Usage: python benchmarks/bench_simulate.py [small medium large ...]   (default: small medium)
"""

from __future__ import annotations

import json
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
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = sum(p.stat().st_size for p in out.rglob('*.parquet'))
print(json.dumps({"preset": preset, "seconds": seconds, "trips": summary.counts["trips"],
                  "incidents": summary.counts["incidents"], "peak_mib": peak_kib / 1024,
                  "disk_mib": size / 2**20}))
"""


def run(preset: str) -> dict:
    """Simulate one preset in a fresh interpreter so its RSS high-water mark is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, preset, tmp], check=True, capture_output=True, text=True
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(presets: list[str]) -> None:
    print(
        f"{'preset':<8} {'trips':>12} {'incidents':>10} {'seconds':>9} {'trips/s':>11} "
        f"{'peak MiB':>9} {'disk MiB':>9}"
    )
    for preset in presets:
        r = run(preset)
        print(
            f"{r['preset']:<8} {r['trips']:>12,} {r['incidents']:>10,} {r['seconds']:>9.1f} "
            f"{r['trips'] / r['seconds']:>11,.0f} {r['peak_mib']:>9,.0f} {r['disk_mib']:>9,.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:] or ["small", "medium"])
