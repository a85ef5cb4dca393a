"""Monitoring configuration: one YAML file per market under ``monitoring/`` (``default.yaml`` required).

A market without its own file uses ``default.yaml``. Each file says how stability, performance and the
nowcast are computed, which indicators (KPI series) are built, and which rules raise alerts on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from safetyml.errors import SafetymlError, read_yaml_mapping, validated

DEFAULT_MARKET = "default"
MONITORING_ENV = "SAFETYML_MONITORING"  # folder of the monitoring YAML files (docs/configuration.md)

Period = Literal["day", "week", "month"]
IndicatorKind = Literal[
    "incident_rate",  # incidents per 10k trips, delay-corrected by the nowcast
    "incident_ratio",  # delay-corrected incidents ÷ the champion's expected incidents (observed/expected)
    "top_tier_share",  # share of scored trips in the policy's top tiers
    "action_rate",  # share of scored trips whose policy action is ``action``
    "cold_start_share",  # share of served decisions made without stored features (audit log)
    "hot_zones",  # count of flagged zones in the latest zone table (zones.parquet)
    "store_staleness_hours",  # hours since the online store was last materialised
    "overturn_rate",  # share of appealed decisions overturned on review (appeals beside the audit log)
]
DetectorKind = Literal["seasonal_z", "cusum", "count_cusum", "threshold"]
COUNT_INDICATORS = ("incident_rate", "incident_ratio")  # the kinds a count_cusum can watch


class ConfigError(SafetymlError, ValueError):
    """A monitoring YAML file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StabilityConfig(_Strict):
    period: Period = "week"
    bins: int = Field(10, ge=2, le=50, description="quantile bins of each numeric feature in the reference")
    slices: list[str] = Field(default_factory=lambda: ["city"], description="columns to slice by")
    fdr: float = Field(0.01, gt=0, lt=1, description="Benjamini-Hochberg level across features of a slice")
    min_psi: float = Field(
        0.02, ge=0, description="a drift is flagged only if significant AND at least this large"
    )
    bands: tuple[float, float] = Field((0.1, 0.25), description="the usual PSI bands: moderate, major")
    min_rows: int = Field(50, ge=1, description="slices with fewer rows are reported but never flagged")
    top_movers: int = Field(5, ge=1)
    exclude: list[str] = Field(
        default_factory=list, description="features not checked (e.g. ones that grow with time by design)"
    )


class PerformanceConfig(_Strict):
    maturity_days: int = Field(21, ge=1, description="labels of trips older than this are mature")
    bootstrap: int = Field(200, ge=20, description="bootstrap resamples of the realised metrics' CIs")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    ece_bins: int = Field(10, ge=2)
    min_severity: int = Field(1, ge=1, le=5, description="incidents of at least this severity are labels")
    seed: int = 0


class NowcastConfig(_Strict):
    lookback_days: int = Field(120, ge=14, description="occurrence window the delay distribution is fit on")
    max_delay_days: float = Field(60.0, gt=1, description="delays beyond this are treated as never reported")
    resolution_hours: float = Field(1.0, gt=0, le=24, description="bin width of the delay distribution")
    min_incidents: int = Field(
        150, ge=10, description="fewest incidents of a (type, market) stratum to fit its own delays"
    )
    level: float = Field(0.9, gt=0.5, lt=1, description="coverage of the corrected count's interval")
    recent_days: int = Field(28, ge=1, description="days before as_of shown in the nowcast table")


class Detector(_Strict):
    kind: DetectorKind
    direction: Literal["up", "down", "both"] = "up"
    enter: float = Field(description="signal level that opens an alert (z, CUSUM sum or raw value)")
    exit: float = Field(description="signal level below which an open alert may resolve (hysteresis)")
    min_duration: int = Field(1, ge=1, description="consecutive periods above enter before opening")
    baseline_weeks: int = Field(6, ge=2, description="seasonal_z/cusum: weeks of history for the baseline")
    k: float = Field(0.5, ge=0, description="cusum: allowance (in standard deviations)")
    shift: float = Field(0.3, gt=0, lt=1, description="count_cusum: relative change of the rate to detect")
    arl0: float = Field(
        1000.0, ge=20, description="count_cusum: in-control periods per false alarm (nominal rate 1/arl0)"
    )
    min_events: int = Field(
        10, ge=0, description="count_cusum: fewest incidents in the baseline to evaluate a series"
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> Detector:
        if self.kind != "threshold" and self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not exceed enter ({self.enter})")
        return self


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    indicator: str
    detector: Detector
    severity: Literal["info", "warning", "critical"] = "warning"
    description: str = ""


class Indicator(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    kind: IndicatorKind
    by: list[str] = Field(default_factory=lambda: ["city"], description="columns each series is split by")
    period: Literal["hour", "day"] = "day"
    types: list[str] | None = Field(None, description="incident_rate: only these incident types")
    min_severity: int = Field(1, ge=1, le=5)
    action: str | None = Field(None, description="action_rate: the policy action counted")
    tiers: list[str] = Field(default_factory=lambda: ["very_high", "critical"])
    description: str = ""


class MonitoringConfig(_Strict):
    """One market's monitoring file."""

    market: str = Field(pattern=r"^([A-Z]{2}|default)$")
    version: str = "1"
    description: str = ""
    task: Literal["incident_risk"] = "incident_risk"
    history_days: int = Field(84, ge=14, description="days of trips before as_of that are monitored")
    stability: StabilityConfig = Field(default_factory=StabilityConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    nowcast: NowcastConfig = Field(default_factory=NowcastConfig)
    indicators: list[Indicator] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_indicators(self) -> MonitoringConfig:
        known = {i.id for i in self.indicators}
        unknown = [r.indicator for r in self.rules if r.indicator not in known]
        if unknown:
            raise ValueError(f"rules refer to unknown indicator(s) {unknown}; defined: {sorted(known)}")
        kinds = {i.id: i.kind for i in self.indicators}
        wrong = [
            r.id
            for r in self.rules
            if r.detector.kind == "count_cusum" and kinds[r.indicator] not in COUNT_INDICATORS
        ]
        if wrong:
            raise ValueError(
                f"rules {wrong}: a count_cusum detector needs an indicator of kind {list(COUNT_INDICATORS)}"
            )
        return self

    def indicator(self, indicator_id: str) -> Indicator:
        return next(i for i in self.indicators if i.id == indicator_id)


def monitoring_dir() -> Path:
    """``$SAFETYML_MONITORING`` or the project's ``monitoring/`` folder (``--config DIR`` picks another)."""
    import os

    from safetyml import paths

    env = os.environ.get(MONITORING_ENV)
    return Path(env) if env else paths.project_dir() / "monitoring"


def _merge(base: dict, override: dict) -> dict:
    """``override`` over ``base``: mappings merge recursively, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def _read_yaml(path: Path) -> dict:
    return read_yaml_mapping(
        path,
        "monitoring",
        ConfigError,
        f"monitoring file {path}: expected a mapping with market, indicators, rules",
    )


MARKET_ONLY_KEYS = ("add_indicators", "add_rules", "disable_rules")


def load_config(path: Path, base: dict | None = None) -> MonitoringConfig:
    """Read one market file over ``base`` (default.yaml's content for a market file).

    A market file holds only what differs: any field of default.yaml (mappings merge, lists replace),
    plus ``add_indicators``, ``add_rules`` and ``disable_rules`` (rule ids). The market must match the
    file name (``BR.yaml`` → ``BR``).
    """
    path = Path(path)
    raw = _read_yaml(path)
    extra = {key: raw.pop(key) for key in MARKET_ONLY_KEYS if key in raw}
    merged = _merge(base or {}, raw)
    merged["indicators"] = [*merged.get("indicators", []), *extra.get("add_indicators", [])]
    disabled = set(extra.get("disable_rules", []))
    unknown = disabled - {r.get("id") for r in merged.get("rules", []) if isinstance(r, dict)}
    if unknown:
        raise ConfigError(f"monitoring file {path}: disable_rules names unknown rule(s) {sorted(unknown)}")
    merged["rules"] = [r for r in merged.get("rules", []) if r.get("id") not in disabled]
    merged["rules"] += extra.get("add_rules", [])
    config = validated(MonitoringConfig, merged, f"invalid monitoring file {path}", ConfigError)
    if config.market != path.stem:
        raise ConfigError(
            f"monitoring file {path}: field market is {config.market!r} but the file is named {path.stem!r}"
        )
    return config


def load_configs(folder: Path | None = None) -> dict[str, MonitoringConfig]:
    """Every market's config: ``default.yaml``, and each ``<MARKET>.yaml`` read over it."""
    folder = Path(folder) if folder is not None else monitoring_dir()
    if not folder.is_dir():
        raise ConfigError(f"monitoring folder {folder} does not exist")
    default_path = folder / f"{DEFAULT_MARKET}.yaml"
    if not default_path.exists():
        raise ConfigError(f"monitoring folder {folder} has no default.yaml (used for markets without a file)")
    base = _read_yaml(default_path)
    configs = {DEFAULT_MARKET: load_config(default_path)}
    for path in sorted(folder.glob("*.yaml")):
        if path.stem != DEFAULT_MARKET:
            config = load_config(path, base)
            configs[config.market] = config
    return configs


def for_market(configs: dict[str, MonitoringConfig], market: str | None) -> MonitoringConfig:
    return configs.get(market or DEFAULT_MARKET) or configs[DEFAULT_MARKET]
