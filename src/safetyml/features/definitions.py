"""Feature definitions as data: the YAML files under ``features/`` read into pydantic models.

One YAML file per entity (rider, merchant, zone, trip). A YAML feature with windows expands into one
model column per window (``rider_incidents`` + ``[30d, 90d]`` → ``rider_incidents_30d``, ``..._90d``); a
zone feature used by the incident model expands once more into a pickup and a drop-off column. The
expanded columns are :class:`FeatureDefinition` objects; :class:`FeatureSet` holds them all with a version
hash of the files, so a model and an online store can say which definitions they were built from.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safetyml import paths
from safetyml.contract import TABLES

Entity = Literal["rider", "merchant", "zone", "trip"]
Task = Literal["incident_risk", "merchant_credit"]
Agg = Literal[
    "count",
    "sum",
    "mean",
    "ratio",
    "net",
    "trend",
    "daily_cv",
    "time_since_last",
    "tenure",
    "attribute",
    "eb_rate",
    "request",
]
Format = Literal["count", "number", "percent", "days", "money", "category", "hour", "flag", "multiple"]
Compute = Literal["local_hour", "weekday", "night", "column", "relative"]

ENTITIES: tuple[str, ...] = ("trip", "rider", "merchant", "zone")
TASKS: tuple[str, ...] = ("incident_risk", "merchant_credit")
# Event tables each entity aggregates, and the column that names the entity in them.
SOURCES: dict[str, dict[str, str]] = {
    "rider": {"trips": "rider_id", "incidents": "rider_id"},
    "merchant": {"trips": "merchant_id", "incidents": "merchant_id", "merchant_ledger": "merchant_id"},
    "zone": {"trips": "cell", "incidents": "cell"},
}
# When an event becomes known, and whether it is known *at* that instant (incidents: reported_at <= T)
# or only strictly after it (everything else: time < T).
KNOWN_TIME: dict[str, tuple[str, bool]] = {
    "trips": ("requested_at", False),
    "incidents": ("reported_at", True),
    "merchant_ledger": ("event_at", False),
}
# Columns the engine adds to the contract tables before aggregating (usable in ``where`` filters).
DERIVED_COLUMNS: dict[str, tuple[str, ...]] = {
    "trips": ("city", "local_hour", "weekday", "night", "rain"),
    "incidents": ("city", "local_hour", "night"),
    "merchant_ledger": (),
}
ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "rider": tuple(TABLES["riders"].column_names),
    "merchant": tuple(TABLES["merchants"].column_names),
}
WINDOWED_AGGS = {"count", "sum", "mean", "ratio", "net", "daily_cv", "eb_rate"}
FILTER_OPS = {"ge", "gt", "le", "lt", "ne", "in"}
_WINDOW = re.compile(r"^(\d+)([dh])$")


class FeatureDefinitionError(ValueError):
    """A feature YAML file is invalid; the message names the file, the feature and the field."""


def window_ns(window: str) -> int:
    """``"30d"`` → nanoseconds."""
    match = _WINDOW.match(window)
    if not match:
        raise ValueError(f"window {window!r} must look like 7d or 12h")
    number, unit = int(match.group(1)), match.group(2)
    return number * (86_400 if unit == "d" else 3_600) * 10**9


def window_words(window: str) -> str:
    """``"30d"`` → ``"30 days"``."""
    number, unit = int(window[:-1]), {"d": "day", "h": "hour"}[window[-1]]
    return f"{number} {unit}{'' if number == 1 else 's'}"


Condition = str | int | float | bool | list[str | int | float | bool] | dict[str, Any]


class Measure(BaseModel):
    """A filtered count (no ``value``) or sum of ``value`` over one source table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = None
    where: dict[str, Condition] = Field(default_factory=dict)
    value: str | None = None

    @field_validator("where")
    @classmethod
    def _ops(cls, where: dict[str, Condition]) -> dict[str, Condition]:
        for column, cond in where.items():
            if isinstance(cond, dict):
                unknown = set(cond) - FILTER_OPS
                if unknown:
                    raise ValueError(
                        f"filter on {column!r} uses unknown operator(s) {sorted(unknown)}; "
                        f"use {sorted(FILTER_OPS)}"
                    )
        return where


class FeatureSpec(BaseModel):
    """One feature as written in YAML (before expansion into windows and pickup/drop-off roles)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    agg: Agg
    description: str = Field(min_length=3)
    source: str | None = None
    where: dict[str, Condition] = Field(default_factory=dict)
    value: str | None = None
    windows: list[str] = Field(default_factory=list)
    denominator: Measure | None = None
    minus: Measure | None = None
    column: str | None = None
    compute: Compute | None = None
    relative_to: str | None = None
    per: float = Field(1.0, gt=0)
    prior_trips: float | None = Field(None, gt=0)
    ring: bool = False
    kind: Literal["numeric", "categorical"] = "numeric"
    categories: list[str] | None = None
    direction: Literal[-1, 0, 1] = 0
    format: Format = "number"
    tasks: list[Task] = Field(default_factory=list)
    group: str | None = None
    when_missing: str | None = None  # reason-code sentence when the value is missing (e.g. "never")

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        for window in windows:
            window_ns(window)
        if len(set(windows)) != len(windows):
            raise ValueError("windows must not repeat")
        return windows

    @field_validator("where")
    @classmethod
    def _where_ops(cls, where: dict[str, Condition]) -> dict[str, Condition]:
        return Measure._ops(where)

    @model_validator(mode="after")
    def _fields_per_agg(self) -> FeatureSpec:
        needs: dict[str, tuple[str, ...]] = {
            "count": ("source",),
            "sum": ("source", "value"),
            "mean": ("source", "value"),
            "ratio": ("source", "denominator"),
            "net": ("source", "value", "minus"),
            "trend": ("source", "value"),
            "daily_cv": ("source", "value"),
            "time_since_last": ("source",),
            "tenure": ("column",),
            "attribute": ("column",),
            "eb_rate": ("source", "denominator", "prior_trips"),
            "request": ("compute",),
        }
        missing = [f for f in needs[self.agg] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"agg {self.agg!r} needs field(s) {', '.join(missing)}")
        if self.agg == "trend" and len(self.windows) != 2:
            raise ValueError("agg 'trend' needs exactly two windows: [short, long]")
        if self.agg == "daily_cv" and not self.windows:
            raise ValueError("agg 'daily_cv' needs windows (whole days)")
        if self.agg not in WINDOWED_AGGS and self.agg != "trend" and self.windows:
            raise ValueError(f"agg {self.agg!r} takes no windows")
        if self.kind == "categorical" and not self.categories:
            raise ValueError("a categorical feature needs its fixed categories")
        if self.compute in ("column", "relative") and not self.column:
            raise ValueError(f"compute {self.compute!r} needs 'column'")
        if self.compute == "relative" and not self.relative_to:
            raise ValueError("compute 'relative' needs 'relative_to' (a rider or merchant feature)")
        return self


class EntityFile(BaseModel):
    """One YAML file: the entity and its features."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: Entity
    description: str = ""
    as_of_floor: str | None = None  # zone features: computed as of T floored to this (e.g. 1h); see docs
    features: list[FeatureSpec]

    @field_validator("as_of_floor")
    @classmethod
    def _floor(cls, value: str | None) -> str | None:
        if value is not None:
            window_ns(value)
        return value


class FeatureDefinition(BaseModel):
    """One model column: a YAML feature expanded to one window (and, for zones, one role)."""

    model_config = ConfigDict(frozen=True)

    name: str
    entity: str
    group: str
    kind: str
    categories: list[str] | None
    direction: int
    description: str
    agg: str
    format: str
    window: str | None = None
    role: str | None = None  # "pickup" | "dropoff" for zone features in the incident model
    ring: bool = False  # zone feature over the cell and its neighbours (grid_disk k=1)
    base: str  # the entity-level column name (the online store's column)
    spec: FeatureSpec

    @property
    def window_ns(self) -> int | None:
        return window_ns(self.window) if self.window else None

    def describe(self, value: Any) -> str:
        """The description with ``{value}`` filled with a nicely formatted value.

        A missing value (no history yet) would make most templates read wrong ("refunds were unknown of
        sales"), so it gets a sentence of its own naming the feature.
        """
        if is_missing(value):
            return self.spec.when_missing or f"{self.name.replace('_', ' ')}: not known yet (no history)"
        return self.description.replace("{value}", format_value(value, self.format))


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def format_value(value: Any, fmt: str) -> str:
    """A value as a reason code shows it."""
    if is_missing(value):
        return "unknown"
    if fmt == "category":
        return str(value).replace("_", " ")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if fmt == "count":
        return f"{number:,.0f}"
    if fmt == "percent":
        return f"{100 * number:.0f}%"
    if fmt == "days":
        return f"{number:,.0f}" if number >= 10 else f"{number:.1f}"
    if fmt == "money":
        return f"{number:,.2f}"
    if fmt == "hour":
        return f"{int(number):02d}:00"
    if fmt == "flag":
        return "yes" if number else "no"
    if fmt == "multiple":
        return f"{number:.1f}×"
    return f"{number:,.2f}" if abs(number) < 100 else f"{number:,.0f}"


PLACES = {None: "this zone", "pickup": "the pickup zone", "dropoff": "the drop-off zone"}
RING_PLACES = {
    None: "the cells around this zone",
    "pickup": "the cells around the pickup zone",
    "dropoff": "the cells around the drop-off zone",
}


def _expand(spec: FeatureSpec, entity: str) -> list[FeatureDefinition]:
    """Entity-level columns of one YAML feature (windows × cell/ring), without pickup/drop-off roles."""
    windows: list[str | None] = list(spec.windows) if spec.agg in WINDOWED_AGGS and spec.windows else [None]
    out = []
    for ring in (False, True) if spec.ring else (False,):
        for window in windows:
            base = spec.name if not ring else re.sub(r"^zone_", "ring_", spec.name)
            if base == spec.name and ring:
                base = "ring_" + spec.name
            name = f"{base}_{window}" if window else base
            text = spec.description
            if window:
                text = text.replace("{window}", window_words(window))
            elif spec.agg == "trend":
                text = text.replace("{short}", window_words(spec.windows[0]))
                text = text.replace("{long}", window_words(spec.windows[1]))
            out.append(
                FeatureDefinition(
                    name=name,
                    entity=entity,
                    group=spec.group or base,
                    kind=spec.kind,
                    categories=spec.categories,
                    direction=spec.direction,
                    description=text,
                    agg=spec.agg,
                    format=spec.format,
                    window=window,
                    ring=ring,
                    base=name,
                    spec=spec,
                )
            )
    return out


def with_role(definition: FeatureDefinition, role: str) -> FeatureDefinition:
    """A zone column as seen from the pickup or the drop-off of a trip."""
    places = RING_PLACES if definition.ring else PLACES
    return definition.model_copy(
        update={
            "name": f"{role}_{definition.base}",
            "group": f"{role}_{definition.group}",
            "role": role,
            "description": definition.description.replace("{place}", places[role]),
        }
    )


class FeatureSet:
    """All feature definitions of a project, expanded, with the version hash of their files."""

    def __init__(self, files: dict[str, EntityFile], version: str, source: Path | None = None):
        self.files = files
        self.version = version
        self.source = source
        self._entity: dict[str, list[FeatureDefinition]] = {
            entity: [d for spec in files[entity].features for d in _expand(spec, entity)]
            for entity in ENTITIES
            if entity in files
        }
        self._by_name: dict[str, FeatureDefinition] = {}
        for defs in self._entity.values():
            for d in defs:
                self._by_name[d.name] = d
        for task in TASKS:
            for d in self.for_task(task):
                self._by_name.setdefault(d.name, d)

    @property
    def definitions(self) -> list[FeatureDefinition]:
        """Every entity-level column (zone columns without the pickup/drop-off role)."""
        return [d for entity in ENTITIES for d in self._entity.get(entity, [])]

    def entity_features(self, entity: str) -> list[FeatureDefinition]:
        """The entity's columns as the engine computes them and the online store keeps them."""
        return list(self._entity.get(entity, []))

    def entity_file(self, entity: str) -> EntityFile:
        return self.files[entity]

    def for_task(self, task: str) -> list[FeatureDefinition]:
        """The model's input columns, in a fixed order: trip, rider, merchant, pickup zone, drop-off zone."""
        if task not in TASKS:
            raise KeyError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        out: list[FeatureDefinition] = []
        for entity in ENTITIES:
            defs = [d for d in self._entity.get(entity, []) if task in d.spec.tasks]
            if entity == "zone":
                out += [with_role(d, "pickup") for d in defs] + [with_role(d, "dropoff") for d in defs]
            else:
                out += defs
        return out

    def get(self, name: str) -> FeatureDefinition:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no feature named {name!r}; see `safetyml features list`") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name


# ---------------------------------------------------------------------------------------------- loading


def _source_columns(table: str) -> set[str]:
    return set(TABLES[table].column_names) | set(DERIVED_COLUMNS.get(table, ()))


def _check_semantics(entity_file: EntityFile, path: Path, all_names: dict[str, str]) -> None:
    """Cross-field rules pydantic cannot see alone: sources, columns and references exist."""
    entity = entity_file.entity

    def bad(spec: FeatureSpec, field: str, message: str) -> FeatureDefinitionError:
        return FeatureDefinitionError(f"{path}: feature {spec.name!r}, field {field!r}: {message}")

    for spec in entity_file.features:
        if entity == "trip" and spec.agg != "request":
            raise bad(spec, "agg", "trip features are request-time: use agg 'request'")
        if entity != "trip" and spec.agg == "request":
            raise bad(spec, "agg", f"agg 'request' is only for trip.yaml, not {entity}")
        if spec.ring and entity != "zone":
            raise bad(spec, "ring", "only zone features have a neighbour ring")
        if entity == "zone" and "merchant_credit" in spec.tasks:
            raise bad(spec, "tasks", "zone features feed the incident model only")
        if spec.agg == "eb_rate" and entity != "zone":
            raise bad(
                spec, "agg", "eb_rate (incidents per trips shrunk to the city rate) is a zone aggregation"
            )
        if spec.agg in ("tenure", "attribute"):
            columns = ENTITY_COLUMNS.get(entity, ())
            if spec.column not in columns:
                raise bad(
                    spec, "column", f"{spec.column!r} is not a column of the {entity} table ({columns})"
                )
        if spec.source is not None:
            allowed = SOURCES.get(entity, {})
            measures = [("", Measure(source=spec.source, where=spec.where, value=spec.value))]
            measures += [
                (name, m) for name, m in (("denominator", spec.denominator), ("minus", spec.minus)) if m
            ]
            for prefix, measure in measures:
                source = measure.source or spec.source
                field = f"{prefix}.source" if prefix else "source"
                if source not in allowed:
                    raise bad(
                        spec, field, f"{entity} features can aggregate {sorted(allowed)}, not {source!r}"
                    )
                columns = _source_columns(source)
                for column in measure.where:
                    if column not in columns:
                        where = f"{prefix}.where" if prefix else "where"
                        raise bad(
                            spec,
                            f"{where}.{column}",
                            f"{source} has no column {column!r}; it has {sorted(columns)}",
                        )
                if measure.value is not None and measure.value not in columns:
                    value = f"{prefix}.value" if prefix else "value"
                    raise bad(spec, value, f"{source} has no column {measure.value!r}")
        if spec.agg == "daily_cv":
            for window in spec.windows:
                if not window.endswith("d"):
                    raise bad(spec, "windows", "daily_cv windows are whole days (e.g. 30d)")
        if entity == "trip" and spec.compute == "column" and spec.column not in _source_columns("trips"):
            raise bad(spec, "column", f"trips has no column {spec.column!r}")
        for d in _expand(spec, entity):
            if d.name in all_names:
                raise bad(spec, "name", f"column {d.name!r} is also defined in {all_names[d.name]}")
            all_names[d.name] = str(path)


def _pydantic_message(path: Path, raw: dict[str, Any], exc: ValidationError) -> str:
    lines = [f"{path}: invalid feature definition(s):"]
    features = raw.get("features") if isinstance(raw, dict) else None
    for error in exc.errors():
        loc = list(error["loc"])
        where = "file"
        if len(loc) >= 2 and loc[0] == "features" and isinstance(loc[1], int) and isinstance(features, list):
            item = features[loc[1]] if loc[1] < len(features) else {}
            name = item.get("name", f"#{loc[1] + 1}") if isinstance(item, dict) else f"#{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:]) or "(whole feature)"
            where = f"feature {name!r}, field {field!r}"
        elif loc:
            where = f"field {'.'.join(str(p) for p in loc)!r}"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def read_entity_file(path: Path) -> EntityFile:
    """Parse and validate one YAML file; errors name the file, the feature and the field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FeatureDefinitionError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise FeatureDefinitionError(f"{path}: expected a mapping with 'entity' and 'features'")
    try:
        return EntityFile.model_validate(raw)
    except ValidationError as exc:
        raise FeatureDefinitionError(_pydantic_message(path, raw, exc)) from None


def load_feature_set(path: Path | str | None = None) -> FeatureSet:
    """Read every ``*.yaml`` of the features folder (default: the project's ``features/``)."""
    folder = Path(path) if path is not None else paths.features_dir()
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise FeatureDefinitionError(f"no feature definitions (*.yaml) in {folder}")
    digest = hashlib.sha256()
    parsed: dict[str, EntityFile] = {}
    file_of: dict[str, Path] = {}
    all_names: dict[str, str] = {}
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        entity_file = read_entity_file(file)
        if entity_file.entity in parsed:
            raise FeatureDefinitionError(f"{file}: entity {entity_file.entity!r} is defined by two files")
        _check_semantics(entity_file, file, all_names)
        parsed[entity_file.entity] = entity_file
        file_of[entity_file.entity] = file
    owners = {d.name: e for e, f in parsed.items() for s in f.features for d in _expand(s, e)}
    for entity_file in parsed.values():
        for spec in entity_file.features:
            if spec.relative_to is not None and owners.get(spec.relative_to) not in ("rider", "merchant"):
                raise FeatureDefinitionError(
                    f"{file_of[entity_file.entity]}: feature {spec.name!r}, field 'relative_to': "
                    f"{spec.relative_to!r} is not a rider or merchant feature"
                )
    return FeatureSet(parsed, digest.hexdigest()[:12], source=folder)
