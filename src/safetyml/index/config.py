"""The TRUST index configuration: pillars, indicators and method choices, read from YAML into pydantic.

``index/trust.yaml`` at the project top level is the default. Every error names the file and the field
(``indicators.incident_rate.weight``) and says what was expected, so a policy analyst can fix it alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from safetyml import paths
from safetyml.errors import SafetymlError, validation_message

CONFIG_FILE = "trust.yaml"
WEIGHT_TOLERANCE = 1e-6

Level = Literal["city", "zone"]
Normalisation = Literal["minmax", "zscore", "target"]
Weighting = Literal["equal", "expert", "pca"]
Aggregation = Literal["arithmetic", "geometric"]
Outliers = Literal["coinr", "none"]


class IndexConfigError(SafetymlError, ValueError):
    """The index configuration is invalid; the message names the file and the field."""


class IndexDataError(SafetymlError, ValueError):
    """The data cannot feed an indicator (for example no activity in a city); names file, field and unit."""


class IndicatorSpec(BaseModel):
    """One indicator: what it measures, which way is worse, and where it sits in the framework."""

    model_config = ConfigDict(extra="forbid")

    pillar: str
    description: str = Field(min_length=1)
    unit: str = Field(min_length=1, description="e.g. 'incidents per 10k trips'")
    direction: Literal["risk", "safety"] = Field(
        description="risk: a higher value means less safe; safety: a higher value means safer"
    )
    weight: float | None = Field(None, ge=0, le=1, description="expert weight within its pillar")
    levels: list[Level] = Field(default_factory=lambda: ["city", "zone"])
    target: float | None = Field(None, description="the value to aim for (distance-to-target normalisation)")
    required: bool = Field(True, description="false: skip it, reported as not available, when data is absent")
    shrink: bool = Field(True, description="empirical-Bayes shrinkage of the rate toward its group rate")


class PillarSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1)
    weight: float = Field(ge=0, le=1, description="expert weight of the pillar in the index")


class OutlierSpec(BaseModel):
    """COINr's default treatment: winsorise an indicator whose |skew| > 2 and kurtosis > 3.5."""

    model_config = ConfigDict(extra="forbid")

    method: Outliers = "coinr"
    skew: float = Field(2.0, gt=0)
    kurtosis: float = Field(3.5, gt=0)
    winmax: int = Field(5, ge=0, description="most points winsorised per indicator (COINr winmax)")
    log_fallback: bool = Field(True, description="log-transform when winsorising is not enough (COINr f2)")


class MethodSpec(BaseModel):
    """The nominal method: the published index uses exactly these choices."""

    model_config = ConfigDict(extra="forbid")

    normalisation: Normalisation = "minmax"
    weights: Weighting = "expert"
    aggregation: Aggregation = "arithmetic"
    outliers: OutlierSpec = Field(default_factory=OutlierSpec)


class UncertaintySpec(BaseModel):
    """The Monte Carlo: each replication draws one option of each choice and one resample of the data."""

    model_config = ConfigDict(extra="forbid")

    replications: int = Field(500, ge=0)
    seed: int = 0
    interval: float = Field(0.90, gt=0, lt=1, description="coverage of the score and rank intervals")
    normalisations: list[Normalisation] = Field(default_factory=lambda: ["minmax", "zscore", "target"])
    weights: list[Weighting] = Field(default_factory=lambda: ["equal", "expert", "pca"])
    aggregations: list[Aggregation] = Field(default_factory=lambda: ["arithmetic", "geometric"])
    outliers: list[Outliers] = Field(default_factory=lambda: ["coinr", "none"])
    weight_noise: float = Field(
        0.25, ge=0, lt=1, description="each weight times U(1 − noise, 1 + noise) per replication (COINr)"
    )
    data: Literal["posterior", "poisson", "none"] = Field(
        "posterior",
        description="posterior: each rate drawn from its Gamma-Poisson posterior; poisson: counts redrawn "
        "as Poisson(observed) and shrunk again; none: method choices only",
    )
    joint_events: bool = Field(
        True,
        description="posterior draws of indicators counting the same incidents (all, severe, violent, "
        "accidents, riders with one) share their data noise; false: independent per indicator",
    )
    joint_prior: bool = Field(
        True,
        description="the prior's part of those draws shares one uniform per unit (their true rates move "
        "together with the place's risk); false: independent per indicator",
    )


class ZoneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_trips: int = Field(100, ge=1, description="fewest trips touching a zone in a period to rank it")


class IndexConfig(BaseModel):
    """The whole index definition (see docs/trust-index.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "TRUST"
    period: Literal["month", "week"] = "month"
    experienced_days: int = Field(90, ge=1, description="tenure from which a rider counts as experienced")
    min_group_units: int = Field(
        5, ge=1, description="fewest units a market (or city) needs to be its own shrinkage group"
    )
    pool_periods: bool = Field(
        True, description="estimate a group's between-unit spread over all periods (as a squared CV)"
    )
    prior: Literal["gamma", "mixture"] = Field(
        "gamma",
        description="empirical-Bayes prior of the shrunk rates: one Gamma, or a two-Gamma scale mixture "
        "(a hot population with r times the others' rate; safetyml.index.shrink)",
    )
    impute_cities: Literal["error", "group_rate"] = Field(
        "error", description="a city with no data for a required indicator: stop, or use its market's rate"
    )
    pillars: dict[str, PillarSpec]
    indicators: dict[str, IndicatorSpec]
    method: MethodSpec = Field(default_factory=MethodSpec)
    uncertainty: UncertaintySpec = Field(default_factory=UncertaintySpec)
    zones: ZoneSpec = Field(default_factory=ZoneSpec)
    source: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _framework(self) -> IndexConfig:
        if self.prior == "mixture" and self.uncertainty.data == "poisson":
            raise ValueError(
                "prior: the mixture prior draws rates from its posterior; use uncertainty.data: posterior "
                "(or none), or prior: gamma with uncertainty.data: poisson"
            )
        for name, spec in self.indicators.items():
            if spec.pillar not in self.pillars:
                raise ValueError(
                    f"indicators.{name}.pillar: unknown pillar {spec.pillar!r}; "
                    f"pillars: {', '.join(self.pillars)}"
                )
        empty = [p for p in self.pillars if not self.pillar_indicators(p)]
        if empty:
            raise ValueError(f"pillars.{empty[0]}: no indicator belongs to this pillar")
        total = sum(p.weight for p in self.pillars.values())
        if abs(total - 1) > WEIGHT_TOLERANCE:
            raise ValueError(f"pillars.*.weight: pillar weights sum to {total:.6g}, expected 1")
        for pillar in self.pillars:
            members = self.pillar_indicators(pillar)
            given = [self.indicators[m].weight for m in members]
            if all(w is None for w in given):
                continue
            if any(w is None for w in given):
                missing = [m for m, w in zip(members, given, strict=True) if w is None]
                raise ValueError(
                    f"indicators.{missing[0]}.weight: give every indicator of pillar {pillar!r} "
                    "a weight, or none"
                )
            total = sum(w for w in given if w is not None)
            if abs(total - 1) > WEIGHT_TOLERANCE:
                raise ValueError(
                    f"indicators.*.weight: weights of pillar {pillar!r} ({', '.join(members)}) sum to "
                    f"{total:.6g}, expected 1"
                )
        return self

    def pillar_indicators(self, pillar: str, level: Level | None = None) -> list[str]:
        return [
            n
            for n, s in self.indicators.items()
            if s.pillar == pillar and (level is None or level in s.levels)
        ]

    def fingerprint(self) -> str:
        """A short hash of the method (what history records to say which method computed a period)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_config_path() -> Path:
    return paths.project_dir() / "index" / CONFIG_FILE


def parse_config(data: dict, source: str) -> IndexConfig:
    """Validate a config mapping; errors name ``source`` and each field."""
    from safetyml.index.indicators import INDICATORS

    try:
        config = IndexConfig.model_validate(data)
    except ValidationError as exc:
        raise IndexConfigError(validation_message(source, exc)) from None
    unknown = [name for name in config.indicators if name not in INDICATORS]
    if unknown:
        raise IndexConfigError(
            f"{source}: field indicators.{unknown[0]}: unknown indicator {unknown[0]!r}; "
            f"known indicators: {', '.join(sorted(INDICATORS))}"
        )
    config.source = source
    return config


def load_config(path: Path | None = None) -> IndexConfig:
    """Read ``index/trust.yaml`` (or ``path``) into an :class:`IndexConfig`."""
    path = Path(path) if path is not None else default_config_path()
    if not path.exists():
        raise IndexConfigError(
            f"index configuration {path} not found; copy index/trust.yaml from the repository"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise IndexConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise IndexConfigError(f"{path}: expected a mapping at the top level")
    return parse_config(data, str(path))
