"""How zone risk maps are built, tiered and flagged: the settings of ``safetyml score-zones``, from YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safetyml.errors import SafetymlError, validation_message


class ZoneConfigError(SafetymlError, ValueError):
    """A zone config file is invalid; the message names the file and each field."""


class Tier(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    min_ratio: float = Field(ge=0, description="lowest risk ratio (zone ÷ city-band rate) of this tier")


class ZoneConfig(BaseModel):
    """How zones are built, tiered and flagged. Defaults are the documented method; override via YAML."""

    model_config = ConfigDict(extra="forbid")

    zone_by: Literal["both", "pickup", "dropoff"] = "both"
    night_start_hour: int = Field(20, ge=0, le=23, description="local hour the night band starts")
    night_end_hour: int = Field(6, ge=0, le=23, description="local hour the night band ends (exclusive)")
    include_all_band: bool = True
    neighbour_k: int = Field(1, ge=1, le=3, description="grid_disk k of the Gi* neighbourhood")
    evidence: str = Field("56d", description="period before as_of whose incidents estimate the multipliers")
    prior_incidents: float = Field(2.0, gt=0, description="Gamma prior strength of a zone multiplier")
    fdr_alpha: float = Field(0.05, gt=0, lt=1)
    flag_test: Literal["own", "gi", "own_or_gi"] = Field(
        "own",
        description="significance a flag needs: the zone's own incidents, its Gi* neighbourhood, or either",
    )
    tiers: list[Tier] = Field(
        default_factory=lambda: [
            Tier(name="low", min_ratio=0.0),
            Tier(name="normal", min_ratio=0.8),
            Tier(name="elevated", min_ratio=1.3),
            Tier(name="high", min_ratio=2.0),
            Tier(name="very_high", min_ratio=3.0),
        ]
    )
    flag_tiers: list[str] = Field(default_factory=lambda: ["high", "very_high"])
    min_trips: int = Field(
        30, ge=1, description="fewest evidence trips in the zone-band for it to be flagged"
    )
    drivers_k: int = Field(3, ge=1, le=10)
    driver_tiers: list[str] = Field(
        default_factory=lambda: ["very_high"],
        description="tiers whose zones get drivers computed (flagged zones always do)",
    )
    driver_sample: int = Field(100, ge=10, description="most trips per zone whose SHAP is computed")
    baseline_sample: int = Field(1000, ge=100, description="most trips per city-band for the SHAP baseline")
    seed: int = 0

    @field_validator("tiers")
    @classmethod
    def _increasing(cls, tiers: list[Tier]) -> list[Tier]:
        ratios = [t.min_ratio for t in tiers]
        if not tiers or ratios[0] != 0.0 or any(b <= a for a, b in zip(ratios, ratios[1:], strict=False)):
            raise ValueError(f"tiers: min_ratio must start at 0 and strictly increase, got {ratios}")
        return tiers

    @classmethod
    def from_yaml(cls, path: Path) -> ZoneConfig:
        """Read a zone config YAML file (any subset of the fields)."""
        raw = yaml.safe_load(Path(path).read_text()) or {}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ZoneConfigError(validation_message(f"{path}: invalid zone config", exc)) from None

    def tier_of(self, ratio: np.ndarray) -> np.ndarray:
        bounds = np.array([t.min_ratio for t in self.tiers[1:]])
        names = np.array([t.name for t in self.tiers], dtype=object)
        return names[np.searchsorted(bounds, np.nan_to_num(np.asarray(ratio, dtype="float64")), side="right")]


__all__ = ["Tier", "ZoneConfig", "ZoneConfigError"]
