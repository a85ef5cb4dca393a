"""Benchmark of the TRUST index on simulated platforms, where the true risk of every unit is known.

Prints, per preset (small, medium) and seed, for cities and zones:
- the Spearman rank correlation of the index with the true risk (median over periods);
- the share of units whose true rank lies in their 90% rank interval (pooled over seeds: the bar, ≥ 90%);
then the stability check (one more incident in one city moves no other city beyond the data noise) and
the speed bar (medium preset, 1,000 Monte Carlo replications at zone level, ≤ 60 s).

True risk = mean true incident probability per trip (truth/trip_probability.parquet) over the city's
trips, or the trips touching the zone (see safetyml.index.truth).

    .venv/bin/python benchmarks/bench_index.py [--presets small,medium] [--seeds 1,2,3]
        [--medium-seeds 1,2] [--replications 1000] [--work data/bench-index]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from safetyml.index import truth
from safetyml.index.build import compute_level
from safetyml.index.config import default_config_path, load_config
from safetyml.index.indicators import prepare
from safetyml.index.stability import stability
from safetyml.simulate import simulate
from safetyml.tables import load_tables


def data_dir(work: Path, preset: str, seed: int) -> Path:
    out = work / f"{preset}-{seed}"
    if not (out / "truth" / "trip_probability.parquet").exists():
        simulate(out, preset=preset, seed=seed, progress=False)
    return out


def measure(work: Path, preset: str, seed: int, replications: int, config) -> tuple[list[dict], dict]:
    data = data_dir(work, preset, seed)
    t0 = time.perf_counter()
    tables = load_tables(data)
    inputs = prepare(tables, config.period, config.experienced_days)
    prepared = time.perf_counter() - t0
    rows, timing = [], {"load_and_prepare": prepared}
    for level in ("city", "zone"):
        t1 = time.perf_counter()
        result = compute_level(inputs, config, level, replications, seed, progress=False)
        timing[level] = time.perf_counter() - t1
        table = result.table(config)
        risk = truth.true_risk(data, inputs, result.panel)
        figures = truth.agreement(table, risk)
        frame = table.assign(true_risk=risk)
        frame["true_rank"] = frame.groupby("period")["true_risk"].rank(ascending=False, method="min")
        covered = int(
            ((frame["true_rank"] >= frame["rank_low"]) & (frame["true_rank"] <= frame["rank_high"])).sum()
        )
        rows.append({"preset": preset, "seed": seed, "level": level, **figures, "covered": covered})
        single = incident_rate_only(inputs, config, level, risk, result.panel, replications, seed)
        rows.append({**single, "preset": preset})
    return rows, timing | {"tables": tables}


def incident_rate_only(inputs, config, level: str, risk: np.ndarray, panel, replications: int, seed: int):
    """Coverage of the true rank by the rank interval of the incident rate alone (its posterior draws).

    The incident rate is the one indicator whose estimand *is* the true risk, so this isolates the
    uncertainty model (shrinkage, posterior, hyperparameters) from the composite's other constructs.
    """
    from safetyml.index import aggregate, rates
    from safetyml.index.indicators import build_panel

    single = build_panel(inputs, ["incident_rate"], level, panel.units["trips"].min())
    assert single.units[["period", "city"]].equals(panel.units[["period", "city"]])
    draws = rates.draws(single, config, config.uncertainty.data, replications, np.random.default_rng(seed))
    periods = single.period_codes()[0]
    ranks = aggregate.ranks(draws[..., 0], periods)  # rank 1 = the highest rate, like the index
    low, high = (1 - config.uncertainty.interval) / 2, 1 - (1 - config.uncertainty.interval) / 2
    rank_low = np.floor(np.quantile(ranks, low, axis=0))
    rank_high = np.ceil(np.quantile(ranks, high, axis=0))
    true_rank = pd.Series(risk).groupby(periods).rank(ascending=False, method="min").to_numpy()
    covered = int(((true_rank >= rank_low) & (true_rank <= rank_high)).sum())
    from scipy.stats import spearmanr

    nominal = rates.estimate(single.num, single.den, single, config)[:, 0]
    rhos = [spearmanr(nominal[periods == p], risk[periods == p]).statistic for p in np.unique(periods)]
    return {
        "preset": "",
        "seed": seed,
        "level": f"{level}/incident_rate",
        "spearman": float(np.median(rhos)),
        "coverage": covered / len(risk),
        "units": float(len(risk)),
        "mean_interval_width": float((rank_high - rank_low + 1).mean()),
        "covered": covered,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="small,medium")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--medium-seeds", default="1,2")
    parser.add_argument("--replications", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("data/bench-index"))
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    config = load_config(args.config or default_config_path())
    args.work.mkdir(parents=True, exist_ok=True)
    print(
        f"config {config.source} (method {config.fingerprint()}); {args.replications} replications; "
        f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    rows, speeds, stabilities = [], [], []
    for preset in args.presets.split(","):
        seeds = [int(s) for s in (args.medium_seeds if preset == "medium" else args.seeds).split(",")]
        for i, seed in enumerate(seeds):
            found, timing = measure(args.work, preset, seed, args.replications, config)
            rows += found
            load = os.getloadavg()[0]
            speeds.append(
                {
                    "preset": preset,
                    "seed": seed,
                    **{k: v for k, v in timing.items() if k != "tables"},
                    "load": load,
                }
            )
            for r in found:
                print(
                    f"{preset:6s} seed {seed} {r['level']:4s}: Spearman {r['spearman']:.3f}, "
                    f"coverage {r['coverage']:.3f} ({r['covered']}/{int(r['units'])}), "
                    f"mean rank-interval width {r['mean_interval_width']:.1f}",
                    flush=True,
                )
            print(
                f"{preset:6s} seed {seed} seconds: load+prepare {timing['load_and_prepare']:.1f}, "
                f"city {timing['city']:.1f}, zone {timing['zone']:.1f} (load average {load:.1f})",
                flush=True,
            )
            if i == 0:
                for city in sorted(timing["tables"].trips["city"].unique()):
                    s = stability(timing["tables"], config, city)
                    stabilities.append({"preset": preset, "seed": seed, **s.__dict__})
                    print(
                        f"{preset:6s} seed {seed} stability, +1 incident in {city}: own score moved "
                        f"{s.moved_self:.3f}; worst other-city move = {s.worst_ratio:.3f} × its "
                        "data-noise sd "
                        f"({'within' if s.within_noise else 'BEYOND'} noise)",
                        flush=True,
                    )
    table = pd.DataFrame(rows)
    print("\n== Bars ==")
    print("True risk: mean true incident probability per trip (truth/trip_probability.parquet).")
    for (preset, level), g in table.groupby(["preset", "level"], sort=False):
        pooled = g["covered"].sum() / g["units"].sum()
        print(
            f"{preset:6s} {level:4s}: Spearman median {g['spearman'].median():.3f} "
            f"(seeds {', '.join(f'{v:.3f}' for v in g['spearman'])}); 90% rank interval holds the true rank "
            f"for {pooled:.1%} of {int(g['units'].sum())} unit-periods over {len(g)} seeds "
            f"[{'meets' if pooled >= 0.9 else 'MISSES'} ≥ 90%]"
        )
    both = table.groupby("preset")[["covered", "units"]].sum()
    for preset, row in both.iterrows():
        print(f"{preset:6s} cities and zones together: {row['covered'] / row['units']:.1%}")
    st = pd.DataFrame(stabilities)
    print(
        f"stability: {int(st['within_noise'].sum())}/{len(st)} checks within noise; "
        f"worst ratio {st['worst_ratio'].max():.3f}"
    )
    sp = pd.DataFrame(speeds)
    medium = sp[sp["preset"] == "medium"]
    if len(medium):
        verdict = "meets" if np.median(medium["zone"]) <= 60 else "MISSES"
        print(
            f"speed: medium, {args.replications} replications at zone level (panel + Monte Carlo + "
            f"decomposition): median {np.median(medium['zone']):.1f} s over {len(medium)} runs "
            f"(load average {medium['load'].median():.1f}) [{verdict} ≤ 60 s]; "
            f"loading and preparing the tables took {np.median(medium['load_and_prepare']):.1f} s more"
        )


if __name__ == "__main__":
    main()
