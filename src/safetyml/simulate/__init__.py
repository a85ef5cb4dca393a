"""A seeded, believable food-delivery platform: the contract tables plus the latent truth behind them.

``simulate`` writes DIR/<table>.parquet and DIR/truth/*.parquet; ``simulate_tables`` returns the same
frames in memory. Same preset and seed give byte-identical files.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from safetyml.simulate.ledger import simulate_credit
from safetyml.simulate.presets import DAY_NS, END, PRESETS, Preset, get_preset
from safetyml.simulate.trips import (
    build_calendar,
    draw_trips,
    finish_block,
    incidents_frame,
    split_trips,
    trip_counts,
)
from safetyml.simulate.world import (
    World,
    build_cities,
    build_merchants,
    build_riders,
    build_zones,
    merchants_frame,
    riders_frame,
    zones_frame,
)
from safetyml.simulate.writer import BlockWriter, SimulationSummary, write_frame

__all__ = ["PRESETS", "Preset", "SimulationSummary", "simulate", "simulate_tables"]

# Independent random streams, so changing one part of the simulation does not reshuffle the others.
_STREAMS = {
    "zones": 1,
    "riders": 2,
    "merchants": 3,
    "credit": 4,
    "calendar": 5,
    "incidents": 6,
    "blocks": 100,
}


def _rng(seed: int, stream: str, sub: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], sub])


def _run(preset: Preset, seed: int, progress: bool, out: Path | None):
    """Simulate everything; with ``out``, write all files (trips block by block) as it goes.

    Returns (tables, truth, row counts); trips and trip_probability are only kept in memory without ``out``.
    """
    from rich.progress import Progress

    n_blocks = -(-preset.days // preset.block_days)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"simulating {preset.name}", total=n_blocks + 3)
        city_list = build_cities()
        zones = build_zones(city_list, _rng(seed, "zones"), preset.start)
        riders = build_riders(preset, city_list, _rng(seed, "riders"))
        merchants = build_merchants(preset, city_list, zones, _rng(seed, "merchants"))
        world = World(preset, city_list, zones, riders, merchants, preset.start.value, END.value)
        bar.advance(task)
        credit = simulate_credit(merchants, _rng(seed, "credit"))
        merchants.closed_ns = credit.closed_ns
        bar.advance(task)
        cal = build_calendar(world, _rng(seed, "calendar"))
        counts = trip_counts(world, cal)
        id_width = max(7, len(str(preset.trips + 1)))
        writers = (
            {
                "trips": BlockWriter(out / "trips.parquet"),
                "trip_probability": BlockWriter(out / "truth" / "trip_probability.parquet"),
            }
            if out
            else {}
        )
        kept: dict[str, list[pa.Table]] = {"trips": [], "trip_probability": []}
        incident_parts = []
        number = 1
        carry = None
        rows = 0
        for b in range(n_blocks):
            lo, hi = b * preset.block_days, min((b + 1) * preset.block_days, preset.days)
            rng = _rng(seed, "blocks", b)
            drawn = draw_trips(world, cal, counts, lo, hi, rng)
            if carry is not None:
                drawn = {k: np.concatenate([carry[k], v]) for k, v in drawn.items()}
            cut = preset.start.value + hi * DAY_NS if hi < preset.days else END.value
            ready, carry = split_trips(drawn, cut)
            block = finish_block(world, ready, number, id_width, rng)
            number += block.trips.num_rows
            rows += block.trips.num_rows
            incident_parts.append(block.incidents)
            if out:
                writers["trips"].write(block.trips)
                writers["trip_probability"].write(block.truth)
            else:
                kept["trips"].append(block.trips)
                kept["trip_probability"].append(block.truth)
            bar.advance(task)
        for w in writers.values():
            w.close()
        incidents = incidents_frame(world, incident_parts, _rng(seed, "incidents"))
        tables = {
            "riders": riders_frame(world),
            "merchants": merchants_frame(world),
            "incidents": incidents,
            "merchant_ledger": credit.ledger,
            "credit_events": credit.credit_events,
        }
        truth = {"merchant_default": credit.truth, "hot_zones": zones.hot_zones, "zones": zones_frame(world)}
        if not out:
            tables["trips"] = pa.concat_tables(kept["trips"]).to_pandas()
            truth["trip_probability"] = pa.concat_tables(kept["trip_probability"]).to_pandas()
        else:
            for name, df in tables.items():
                write_frame(df, out / f"{name}.parquet")
            for name, df in truth.items():
                write_frame(df, out / "truth" / f"{name}.parquet")
        bar.advance(task)
    counts_out = {
        "trips": rows,
        **{k: len(v) for k, v in tables.items() if k != "trips"},
        **{f"truth/{k}": len(v) for k, v in truth.items() if k != "trip_probability"},
        "truth/trip_probability": rows,
    }
    return tables, truth, counts_out


def simulate(out: Path, preset: str = "small", seed: int = 0, progress: bool = True) -> SimulationSummary:
    """Simulate a platform into ``out`` (tables + truth/) and say what was written and how long it took."""
    chosen = get_preset(preset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, _, counts = _run(chosen, seed, progress, out)
    return SimulationSummary(preset, seed, out, counts, time.perf_counter() - started)


def simulate_tables(
    preset: str = "small", seed: int = 0
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The simulated tables and truth in memory (for tests and notebooks): (tables, truth)."""
    tables, truth, _ = _run(get_preset(preset), seed, False, None)
    order = ["riders", "merchants", "trips", "incidents", "merchant_ledger", "credit_events"]
    return {k: tables[k] for k in order}, truth
