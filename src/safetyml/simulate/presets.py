"""Simulation presets (sizes and temporal dynamics) and the fixed calendar every preset shares."""

from __future__ import annotations

from dataclasses import dataclass, field

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
class Episode:
    """One kind of spell (of a rider) or front (of a merchant) and what it does to the entity's trips."""

    name: str
    share: float  # share of riders (merchants) that go through one such episode in the period
    min_days: int
    max_days: int  # duration drawn uniformly in [min_days, max_days]
    odds: float  # incident odds multiplier on the entity's trips during the episode
    velocity: float = 1.0  # trips per day multiplier during the episode
    value: float = 1.0  # median order value multiplier
    night: float = 0.0  # share of the episode's trips moved to night hours (22-04 local)
    cash: float = 0.0  # share of the episode's trips paid in cash (on top of the usual)
    new_merchant: float = (
        0.0  # share of a rider's spell trips at a merchant drawn uniformly, not by popularity
    )
    robbery: bool = False  # incidents lean to robbery


@dataclass(frozen=True)
class Waves:
    """Short robbery waves: a zone (odds x ``odds``) and its H3 ring (x ``ring_odds``) for a few days."""

    per_city_per_30_days: float = 1.0
    min_days: int = 3
    max_days: int = 8
    odds: float = 4.0
    ring_odds: float = 2.0


@dataclass(frozen=True)
class Dynamics:
    """The temporal dynamics of a preset; ``Dynamics.off()`` gives the old stationary platform."""

    spells: tuple[Episode, ...] = (
        Episode(
            "takeover", 0.03, 2, 10, odds=4.0, velocity=2.5, value=3.0, night=0.5, cash=0.3, new_merchant=0.6
        ),
        Episode("shared", 0.05, 4, 20, odds=1.8, velocity=1.5, value=1.3, night=0.25, new_merchant=0.3),
    )
    fronts: tuple[Episode, ...] = (
        Episode("robbery_front", 0.01, 14, 42, odds=5.0, velocity=1.3, night=0.4, cash=0.5, robbery=True),
        Episode("fraud_front", 0.015, 14, 42, odds=2.5, velocity=1.6, value=2.5, cash=0.2),
    )
    waves: Waves = field(default_factory=Waves)
    daily_sd: float = 0.3  # sd of each rider's day-to-day log-odds (AR(1) over days)
    daily_phi: float = 0.7  # day-to-day autocorrelation of that variation
    daily_velocity: float = 1.0  # on a riskier day a rider takes e^(this x log-odds) x more trips
    # habits, so that "a merchant new to this rider" means something: a share of each rider's trips go
    # to one of their few regular merchants (drawn by popularity in their city)
    regular_share: float = 0.6
    regulars: int = 8

    @classmethod
    def off(cls) -> Dynamics:
        """No episodes, no daily variation and no habits: the stationary platform of earlier versions."""
        return cls(
            spells=(), fronts=(), waves=Waves(per_city_per_30_days=0.0), daily_sd=0.0, regular_share=0.0
        )


@dataclass(frozen=True)
class Preset:
    """Sizes of one simulated platform."""

    name: str
    trips: int
    days: int
    riders: int
    merchants: int
    block_days: int = 10  # trips are generated (and written) in blocks of this many days
    partitioned: bool = False  # trips as trips/date=YYYY-MM-DD/part-N.parquet instead of trips.parquet
    dynamics: Dynamics = field(default_factory=Dynamics)  # spells, fronts, waves, daily risk

    @property
    def start(self) -> pd.Timestamp:
        return END - pd.Timedelta(days=self.days)


PRESETS: dict[str, Preset] = {
    "small": Preset("small", trips=50_000, days=90, riders=1_000, merchants=500, block_days=30),
    "medium": Preset("medium", trips=1_000_000, days=120, riders=8_000, merchants=3_000, block_days=20),
    "large": Preset("large", trips=10_000_000, days=180, riders=40_000, merchants=12_000, block_days=6),
    # ~100M trips: written day by day (a block is a day, ~275k trips), for the Dask engine's scale tests
    "xlarge": Preset(
        "xlarge",
        trips=100_000_000,
        days=365,
        riders=400_000,
        merchants=120_000,
        block_days=1,
        partitioned=True,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; the error lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown simulation preset {name!r}; choose one of {', '.join(PRESETS)}") from None
