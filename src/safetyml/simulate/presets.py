"""Simulation presets (sizes) and the fixed calendar every preset shares, so files are reproducible."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# Trips end here for every preset and seed (exclusive): the last simulated day is 2026-09-30 (UTC).
END = pd.Timestamp("2026-10-01", tz="UTC")
# The merchant ledger covers ~18 months ending at END, so monthly credit snapshots have mature 90-day labels.
LEDGER_DAYS = 548
DAY_NS = 86_400 * 10**9

# Share of trips (and riders, merchants) per city id of the registry; São Paulo is the largest market.
CITY_MIX: dict[str, float] = {
    "sao_paulo": 0.42,
    "mexico_city": 0.28,
    "rio_de_janeiro": 0.20,
    "belo_horizonte": 0.10,
}


@dataclass(frozen=True)
class Preset:
    """Sizes of one simulated platform."""

    name: str
    trips: int
    days: int
    riders: int
    merchants: int
    block_days: int = 10  # trips are generated (and written) in blocks of this many days

    @property
    def start(self) -> pd.Timestamp:
        return END - pd.Timedelta(days=self.days)


PRESETS: dict[str, Preset] = {
    "small": Preset("small", trips=50_000, days=90, riders=1_000, merchants=500, block_days=30),
    "medium": Preset("medium", trips=1_000_000, days=120, riders=8_000, merchants=3_000, block_days=20),
    "large": Preset("large", trips=10_000_000, days=180, riders=40_000, merchants=12_000, block_days=6),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; the error lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown simulation preset {name!r}; choose one of {', '.join(PRESETS)}") from None
