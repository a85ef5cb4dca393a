"""A seeded, believable food-delivery platform: the contract tables plus the latent truth behind them.

``simulate`` writes DIR/<table>.parquet and DIR/truth/*.parquet (+ truth/dynamics.json, truth/drift.json);
``simulate_tables`` returns the same frames in memory. Same preset, seed and drift give byte-identical files.
Temporal dynamics (rider spells, merchant fronts, zone waves, daily rider risk) are on by default: see
``safetyml.simulate.dynamics`` and the ``dynamics`` field of each preset.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from safetyml.simulate.dynamics import (
    Drift,
    build_state,
    drift_json,
    dynamics_json,
    episodes_frame,
    parse_drift,
    waves_frame,
    write_json,
)
from safetyml.simulate.ledger import simulate_credit
from safetyml.simulate.presets import (
    CITY_MIX,
    DAY_NS,
    END,
    PRESETS,
    Dynamics,
    Episode,
    Preset,
    Waves,
    get_preset,
)
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
from safetyml.simulate.writer import BlockWriter, DayPartitionWriter, SimulationSummary, write_frame

__all__ = [
    "PRESETS",
    "Drift",
    "Dynamics",
    "Episode",
    "Preset",
    "SimulationSummary",
    "Waves",
    "parse_drifts",
    "simulate",
    "simulate_tables",
]

# Independent random streams, so changing one part of the simulation does not reshuffle the others.
_STREAMS = {
    "zones": 1,
    "riders": 2,
    "merchants": 3,
    "credit": 4,
    "calendar": 5,
    "incidents": 6,
    "dynamics": 7,
    "blocks": 100,
}


def _rng(seed: int, stream: str, sub: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], sub])


def parse_drifts(preset: Preset, drift: Sequence[str | Drift]) -> tuple[Drift, ...]:
    """``Drift`` objects from ``--drift`` strings (see ``parse_drift``); a bad one raises a ValueError."""
    city_ids = list(CITY_MIX)
    return tuple(
        d if isinstance(d, Drift) else parse_drift(d, city_ids, preset.start, preset.days) for d in drift
    )


def _run(preset: Preset, seed: int, progress: bool, out: Path | None, drifts: tuple[Drift, ...] = ()):
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
        world.dynamics = build_state(world, cal.midnight_ns, preset.dynamics, drifts, _rng(seed, "dynamics"))
        id_width = max(7, len(str(preset.trips + 1)))
        writers = (
            {
                "trips": (
                    DayPartitionWriter(out / "trips")
                    if preset.partitioned
                    else BlockWriter(out / "trips.parquet")
                ),
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
        city_ids = [c.id for c in city_list]
        state = world.dynamics
        truth = {
            "merchant_default": credit.truth,
            "hot_zones": zones.hot_zones,
            "zones": zones_frame(world),
            "rider_spells": episodes_frame(
                state.spells, riders.id, riders.city, "rider_id", city_ids, cal.midnight_ns
            ),
            "merchant_fronts": episodes_frame(
                state.fronts, merchants.id, merchants.city, "merchant_id", city_ids, cal.midnight_ns
            ),
            "zone_waves": waves_frame(state.wave_rows, city_ids, cal.midnight_ns),
        }
        settings = {
            "dynamics": dynamics_json(preset.dynamics),
            "drift": drift_json(drifts, city_ids, cal.midnight_ns),
        }
        if not out:
            tables["trips"] = pa.concat_tables(kept["trips"]).to_pandas()
            truth["trip_probability"] = pa.concat_tables(kept["trip_probability"]).to_pandas()
        else:
            for name, df in tables.items():
                write_frame(df, out / f"{name}.parquet")
            for name, df in truth.items():
                write_frame(df, out / "truth" / f"{name}.parquet")
            for name, obj in settings.items():
                write_json(obj, out / "truth" / f"{name}.json")
        if not out:
            truth.update(settings)
        bar.advance(task)
    counts_out = {
        "trips": rows,
        **{k: len(v) for k, v in tables.items() if k != "trips"},
        **{f"truth/{k}": len(v) for k, v in truth.items() if k not in ("trip_probability", *settings)},
        "truth/trip_probability": rows,
    }
    return tables, truth, counts_out


def _choose(preset: str | Preset, dynamics: Dynamics | None) -> Preset:
    chosen = preset if isinstance(preset, Preset) else get_preset(preset)
    return chosen if dynamics is None else dataclasses.replace(chosen, dynamics=dynamics)


def simulate(
    out: Path,
    preset: str | Preset = "small",
    seed: int = 0,
    progress: bool = True,
    drift: Sequence[str | Drift] = (),
    dynamics: Dynamics | None = None,
    partitioned: bool | None = None,
) -> SimulationSummary:
    """Simulate a platform into ``out`` (tables + truth/) and say what was written and how long it took.

    ``drift``: changes injected from a day on, as ``Drift`` objects or ``--drift`` strings such as
    ``city_incident_rate:sao_paulo:+30%:2026-09-01`` (recorded in truth/drift.json). ``dynamics``
    replaces the preset's temporal dynamics (``Dynamics.off()`` for a stationary platform).
    ``partitioned`` writes the trips as ``trips/date=YYYY-MM-DD/part-N.parquet``, block by block
    (default: the preset's choice; ``xlarge`` is partitioned).
    """
    chosen = _choose(preset, dynamics)
    if partitioned is not None:
        chosen = dataclasses.replace(chosen, partitioned=partitioned)
    out = Path(out)
    other = out / ("trips.parquet" if chosen.partitioned else "trips")
    if other.exists():
        raise FileExistsError(f"{other} holds trips in the other layout; simulate into an empty folder")
    drifts = parse_drifts(chosen, drift)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, _, counts = _run(chosen, seed, progress, out, drifts)
    return SimulationSummary(chosen.name, seed, out, counts, time.perf_counter() - started)


def simulate_tables(
    preset: str | Preset = "small",
    seed: int = 0,
    drift: Sequence[str | Drift] = (),
    dynamics: Dynamics | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The simulated tables and truth in memory (for tests and notebooks): (tables, truth)."""
    chosen = _choose(preset, dynamics)
    tables, truth, _ = _run(chosen, seed, False, None, parse_drifts(chosen, drift))
    order = ["riders", "merchants", "trips", "incidents", "merchant_ledger", "credit_events"]
    return {k: tables[k] for k in order}, truth


from safetyml._callable import make_callable  # noqa: E402  (safetyml.simulate(...) runs simulate())

make_callable(__name__)
