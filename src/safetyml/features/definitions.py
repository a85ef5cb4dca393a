"""Feature definitions as data: the YAML files under ``features/`` read into pydantic models.

One YAML file per entity (rider, merchant, rider–merchant pair, zone, trip). A YAML feature with windows
expands into one model column per window (``rider_incidents`` + ``[30d, 90d]`` → ``rider_incidents_30d``,
``..._90d``); a zone feature used by the incident model expands once more into a pickup and a drop-off
column. A *family* (``families:``) is one declaration that expands over windows × aggregations of an event
table (``count, sum, mean, max, std, distinct``), generating names, groups and reason-code descriptions. A
``rate`` feature is incidents (or any filtered event) per unit of activity over an event-time window that ends
a maturity horizon before as_of (default: the task's label lag, from ``training/<task>.yaml``).
The expanded columns are :class:`FeatureDefinition` objects; :class:`FeatureSet` holds them all with a version
hash of the files, so a model and an online store can say which definitions they were built from.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from safetyml import paths
from safetyml.contract import PAIR_SEPARATOR, TABLES
from safetyml.errors import SafetymlError
from safetyml.tasks import TASKS, Task
from safetyml.values import is_missing

Entity = Literal["rider", "merchant", "pair", "zone", "trip"]
FamilyAgg = Literal["count", "sum", "mean", "max", "std", "distinct"]
Agg = Literal[
    "count",
    "sum",
    "mean",
    "max",
    "std",
    "distinct",
    "rate",
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
Compute = Literal["local_hour", "weekday", "night", "column", "relative", "zscore", "hour_affinity"]

ENTITIES: tuple[str, ...] = ("trip", "rider", "merchant", "pair", "zone")
# Event tables each entity aggregates, and the column that names the entity in them.
SOURCES: dict[str, dict[str, str]] = {
    "rider": {"trips": "rider_id", "incidents": "rider_id"},
    "merchant": {"trips": "merchant_id", "incidents": "merchant_id", "merchant_ledger": "merchant_id"},
    "zone": {"trips": "cell", "incidents": "cell"},
    "pair": {"trips": "rider_id+merchant_id", "incidents": "rider_id+merchant_id"},
}
# A pair's id in frames, the online store and requests: ``<rider_id>|<merchant_id>``.


def pair_id(rider_id: Any, merchant_id: Any) -> str:
    """The id of a rider–merchant pair in the online store and requests."""
    return f"{rider_id}{PAIR_SEPARATOR}{merchant_id}"


# When an event becomes known, and whether it is known *at* that instant (incidents: reported_at <= T)
# or only strictly after it (everything else: time < T).
KNOWN_TIME: dict[str, tuple[str, bool]] = {
    "trips": ("requested_at", False),
    "incidents": ("reported_at", True),
    "merchant_ledger": ("event_at", False),
}
# Columns the engine adds to the contract tables before aggregating (usable in ``where`` filters).
DERIVED_COLUMNS: dict[str, tuple[str, ...]] = {
    "trips": ("city", "local_hour", "weekday", "night", "rain", "hour_cos", "hour_sin"),
    "incidents": ("city", "local_hour", "night"),
    "merchant_ledger": (),
}
ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "rider": tuple(TABLES["riders"].column_names),
    "merchant": tuple(TABLES["merchants"].column_names),
}
WINDOWED_AGGS = {
    "count",
    "sum",
    "mean",
    "max",
    "std",
    "distinct",
    "rate",
    "ratio",
    "net",
    "daily_cv",
    "eb_rate",
}
VALUE_AGGS = ("sum", "mean", "max", "std")  # family aggregations of a value column
FILTER_OPS = {"ge", "gt", "le", "lt", "ne", "in"}
_WINDOW = re.compile(r"^(\d+)([dh])$")


# aggregations that do not decompose into a sum of the seven cells' values (no neighbour ring)
NO_RING_AGGS = ("max", "std", "distinct", "daily_cv")


class FeatureDefinitionError(SafetymlError, ValueError):
    """A feature YAML file is invalid; the message names the file, the feature (or family) and the field."""


def window_ns(window: str) -> int:
    """``"30d"`` → nanoseconds."""
    match = _WINDOW.match(window)
    if not match:
        raise ValueError(f"window {window!r} must look like 7d or 12h")
    number, unit = int(match.group(1)), match.group(2)
    return number * (86_400 if unit == "d" else 3_600) * 10**9


def window_words(window: str) -> str:
    """``"30d"`` → ``"30 days"``, ``"1h"`` → ``"hour"`` (as in "the last hour")."""
    number, unit = int(window[:-1]), {"d": "day", "h": "hour"}[window[-1]]
    return unit if number == 1 else f"{number} {unit}s"


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
    refs: list[str] = Field(default_factory=list)  # request features: the rider/merchant features used
    distinct: str | None = None  # agg distinct: the column whose distinct values are counted
    horizon: str | None = None  # agg rate: maturity horizon (default: the task's label lag)
    pending: bool = False  # agg rate: also a column counting the activity of the last horizon
    pending_description: str | None = None  # its reason-code sentence ({value}, {horizon})
    family: str | None = None  # set by a family's expansion (not written by hand)
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

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, horizon: str | None) -> str | None:
        if horizon is not None:
            window_ns(horizon)
        return horizon

    @property
    def references(self) -> list[str]:
        """Rider/merchant features a request feature is computed from (its relative_to and refs)."""
        return ([self.relative_to] if self.relative_to else []) + list(self.refs)

    @model_validator(mode="after")
    def _fields_per_agg(self) -> FeatureSpec:
        needs: dict[str, tuple[str, ...]] = {
            "count": ("source",),
            "sum": ("source", "value"),
            "mean": ("source", "value"),
            "max": ("source", "value"),
            "std": ("source", "value"),
            "distinct": ("source", "distinct"),
            "rate": ("source", "denominator"),
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
        if self.compute == "zscore" and not (self.column and len(self.refs) == 2):
            raise ValueError("compute 'zscore' needs 'column' and refs: [<mean feature>, <std feature>]")
        if self.compute == "hour_affinity" and len(self.refs) != 2:
            raise ValueError("compute 'hour_affinity' needs refs: [<hour_cos mean feature>, <hour_sin mean>]")
        if self.agg != "rate" and (self.horizon is not None or self.pending):
            raise ValueError("'horizon' and 'pending' belong to agg 'rate'")
        return self


class ValueSpec(BaseModel):
    """A value column a family aggregates: how reason codes name it and format it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    words: str = Field(min_length=1)
    format: Format = "number"


# Reason-code templates of each family aggregation: {of} is the family's noun phrase ("trips by this
# rider"), {words} the value's or the distinct column's words; {value} and {window} are filled later.
FAMILY_TEMPLATES: dict[str, str] = {
    "count": "{value} {of} in the last {window}",
    "sum": "the {words} of {of} in the last {window} added up to {value}",
    "mean": "the mean {words} of {of} in the last {window} was {value}",
    "max": "the highest {words} of {of} in the last {window} was {value}",
    "std": "the {words} of {of} in the last {window} varied by {value} (standard deviation)",
    "distinct": "{value} different {words} among {of} in the last {window}",
}


class FamilySpec(BaseModel):
    """One declaration expanding over windows × aggregations of an event table for the file's entity.

    Columns are named ``<family>_count_<w>``, ``<family>_<value>_<agg>_<w>`` (sum, mean, max, std of each
    value column) and ``<family>_distinct_<words>_<w>``; each aggregation (per value) is one group, so its
    windows are explained and selected together.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    source: str
    of: str = Field(min_length=3, description="what is aggregated, for descriptions: 'trips by this rider'")
    where: dict[str, Condition] = Field(default_factory=dict)
    windows: list[str] = Field(min_length=1)
    aggs: list[FamilyAgg] = Field(min_length=1)
    values: dict[str, ValueSpec] = Field(default_factory=dict)
    distinct: dict[str, str] = Field(default_factory=dict, description="column -> words ('merchants')")
    agg_windows: dict[FamilyAgg, list[str]] = Field(default_factory=dict)
    direction: dict[FamilyAgg, Literal[-1, 0, 1]] = Field(default_factory=dict)
    descriptions: dict[FamilyAgg, str] = Field(default_factory=dict)
    tasks: list[Task] = Field(default_factory=list)

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[str]) -> list[str]:
        return FeatureSpec._windows(windows)

    @field_validator("agg_windows")
    @classmethod
    def _agg_windows(cls, agg_windows: dict[str, list[str]]) -> dict[str, list[str]]:
        for windows in agg_windows.values():
            FeatureSpec._windows(windows)
        return agg_windows

    @field_validator("where")
    @classmethod
    def _where_ops(cls, where: dict[str, Condition]) -> dict[str, Condition]:
        return Measure._ops(where)


class EntityFile(BaseModel):
    """One YAML file: the entity, its features and its feature families."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: Entity
    description: str = ""
    as_of_floor: str | None = None  # zone features: computed as of T floored to this (e.g. 1h); see docs
    features: list[FeatureSpec] = Field(default_factory=list)
    families: list[FamilySpec] = Field(default_factory=list)

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
    horizon: str | None = None  # rate: the maturity horizon the window ends at
    variant: str | None = None  # rate: "pending" = the activity of the last horizon (not yet mature)
    family: str | None = None  # the family this column was expanded from
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


PENDING_DESCRIPTION = "{value} {activity} in the last {horizon}, whose incidents may not be reported yet"


def _expand(spec: FeatureSpec, entity: str) -> list[FeatureDefinition]:
    """Entity-level columns of one YAML feature (windows × cell/ring), without pickup/drop-off roles."""
    windows: list[str | None] = list(spec.windows) if spec.agg in WINDOWED_AGGS and spec.windows else [None]
    variants: list[str | None] = [None, "pending"] if spec.agg == "rate" and spec.pending else [None]
    out = []
    for ring in (False, True) if spec.ring else (False,):
        base = spec.name if not ring else re.sub(r"^zone_", "ring_", spec.name)
        if base == spec.name and ring:
            base = "ring_" + spec.name
        for variant in variants:
            for window in windows if variant is None else [None]:
                name = f"{base}_{window}" if window else base
                text = spec.description
                if variant == "pending":
                    name = f"{base}_pending"
                    activity = (spec.denominator.source if spec.denominator else None) or "trips"
                    text = spec.pending_description or PENDING_DESCRIPTION.replace(
                        "{activity}", activity.replace("_", " ")
                    )
                if window:
                    text = text.replace("{window}", window_words(window))
                elif spec.agg == "trend":
                    text = text.replace("{short}", window_words(spec.windows[0]))
                    text = text.replace("{long}", window_words(spec.windows[1]))
                else:
                    text = text.replace(" in the last {window}", "").replace("{window}", "all time")
                if spec.horizon:
                    text = text.replace("{horizon}", window_words(spec.horizon))
                out.append(
                    FeatureDefinition(
                        name=name,
                        entity=entity,
                        group=spec.group or (f"{base}_pending" if variant else base),
                        kind=spec.kind,
                        categories=spec.categories,
                        direction=spec.direction if variant is None else 0,
                        description=text,
                        agg=spec.agg if variant is None else "count",
                        format=spec.format if variant is None else "count",
                        window=window,
                        ring=ring,
                        horizon=spec.horizon,
                        variant=variant,
                        family=spec.family,
                        base=name,
                        spec=spec,
                    )
                )
    return out


def expand_family(family: FamilySpec) -> list[FeatureSpec]:
    """The feature specs of one family (one per aggregation and value column), windows not yet expanded."""
    out = []
    for agg in family.aggs:
        windows = family.agg_windows.get(agg, family.windows)
        if agg == "count":
            targets: list[tuple[str, dict[str, Any]]] = [("count", {"format": "count", "words": ""})]
        elif agg == "distinct":
            targets = [
                (
                    f"distinct_{re.sub(r'[^a-z0-9]+', '_', words.lower()).strip('_')}",
                    {"format": "count", "words": words, "distinct": column},
                )
                for column, words in family.distinct.items()
            ]
        else:
            targets = [
                (f"{column}_{agg}", {"format": v.format, "words": v.words, "value": column})
                for column, v in family.values.items()
            ]
        for suffix, extra in targets:
            template = family.descriptions.get(agg, FAMILY_TEMPLATES[agg])
            name = f"{family.family}_{suffix}"
            out.append(
                FeatureSpec(
                    name=name,
                    agg=agg,
                    description=template.replace("{of}", family.of).replace("{words}", extra["words"]),
                    source=family.source,
                    where=family.where,
                    value=extra.get("value"),
                    distinct=extra.get("distinct"),
                    windows=windows,
                    format=extra["format"],
                    direction=family.direction.get(agg, 0),
                    tasks=family.tasks,
                    group=name,
                    family=family.family,
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


def _numeric_columns(table: str) -> set[str]:
    numeric = {c.name for c in TABLES[table].columns if c.kind in ("float", "int", "bool")}
    return numeric | (set(DERIVED_COLUMNS.get(table, ())) - {"city"})


def _check_family(family: FamilySpec, entity: str, path: Path) -> None:
    """Combinations pydantic cannot see: the source, its columns, and aggregations without their inputs."""

    def bad(field: str, message: str) -> FeatureDefinitionError:
        return FeatureDefinitionError(f"{path}: family {family.family!r}, field {field!r}: {message}")

    allowed = SOURCES.get(entity, {})
    if entity == "trip":
        raise bad(
            "family", "trip features are request-time; families aggregate rider/merchant/pair/zone events"
        )
    if family.source not in allowed:
        raise bad("source", f"{entity} families can aggregate {sorted(allowed)}, not {family.source!r}")
    if len(set(family.aggs)) != len(family.aggs):
        raise bad("aggs", "aggregations must not repeat")
    if entity == "zone" and "merchant_credit" in family.tasks:
        raise bad("tasks", "zone features feed the incident model only")
    columns, numeric = _source_columns(family.source), _numeric_columns(family.source)
    for column in family.where:
        if column not in columns:
            raise bad(
                f"where.{column}", f"{family.source} has no column {column!r}; it has {sorted(columns)}"
            )
    value_aggs = [a for a in family.aggs if a in VALUE_AGGS]
    if value_aggs and not family.values:
        raise bad("values", f"aggs {', '.join(value_aggs)} need at least one value column to aggregate")
    if family.values and not value_aggs:
        raise bad("values", f"value columns are used only by {', '.join(VALUE_AGGS)}; none is in aggs")
    for column in family.values:
        if column not in numeric:
            raise bad(
                f"values.{column}",
                f"{family.source} has no numeric column {column!r}; numeric columns: {sorted(numeric)}",
            )
    if "distinct" in family.aggs and not family.distinct:
        raise bad("distinct", "agg 'distinct' needs the column(s) whose distinct values to count")
    if family.distinct and "distinct" not in family.aggs:
        raise bad("distinct", "distinct columns are given but 'distinct' is not in aggs")
    for column in family.distinct:
        if column not in columns:
            raise bad(f"distinct.{column}", f"{family.source} has no column {column!r}")
    for field, mapping in (
        ("agg_windows", family.agg_windows),
        ("direction", family.direction),
        ("descriptions", family.descriptions),
    ):
        for agg in mapping:
            if agg not in family.aggs:
                raise bad(f"{field}.{agg}", f"{agg!r} is not one of the family's aggs {family.aggs}")
    for agg, template in family.descriptions.items():
        if "{value}" not in template:
            raise bad(f"descriptions.{agg}", "a description needs {value}")


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
        if spec.ring and spec.agg in NO_RING_AGGS:
            raise bad(
                spec,
                "ring",
                f"agg {spec.agg!r} has no ring: a ring feature is a sum over the seven cells "
                "(count, sum, mean, ratio, rate); maxima, deviations and distinct counts need the events",
            )
        if entity == "zone" and "merchant_credit" in spec.tasks:
            raise bad(spec, "tasks", "zone features feed the incident model only")
        if spec.agg == "eb_rate" and entity != "zone":
            raise bad(
                spec, "agg", "eb_rate (incidents per trips shrunk to the city rate) is a zone aggregation"
            )
        if spec.agg == "rate" and spec.prior_trips is not None and entity != "zone":
            raise bad(
                spec,
                "prior_trips",
                "only zone rates are shrunk (toward the city's rate); rider, merchant and pair rates are raw",
            )
        if spec.agg in ("tenure", "attribute") and entity == "pair":
            raise bad(spec, "agg", "a rider–merchant pair has no attributes of its own")
        if spec.distinct is not None and spec.source and spec.distinct not in _source_columns(spec.source):
            raise bad(spec, "distinct", f"{spec.source} has no column {spec.distinct!r}")
        if spec.agg in ("max", "std") and spec.value not in _numeric_columns(spec.source or "trips"):
            raise bad(spec, "value", f"{spec.source} has no numeric column {spec.value!r}")
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
        if spec.agg == "rate" and spec.horizon is None:
            raise bad(spec, "horizon", "no horizon and no task label lag to default to (set e.g. 7d)")
        if entity == "trip" and spec.compute == "column" and spec.column not in _source_columns("trips"):
            raise bad(spec, "column", f"trips has no column {spec.column!r}")
        for d in _expand(spec, entity):
            if d.name in all_names:
                raise bad(spec, "name", f"column {d.name!r} is also defined in {all_names[d.name]}")
            all_names[d.name] = str(path)


def _pydantic_message(path: Path, raw: dict[str, Any], exc: ValidationError) -> str:
    lines = [f"{path}: invalid feature definition(s):"]
    for error in exc.errors():
        loc = list(error["loc"])
        where = "file"
        section = raw.get(loc[0]) if isinstance(raw, dict) and loc else None
        if (
            len(loc) >= 2
            and loc[0] in ("features", "families")
            and isinstance(loc[1], int)
            and (isinstance(section, list))
        ):
            word, key = ("feature", "name") if loc[0] == "features" else ("family", "family")
            item = section[loc[1]] if loc[1] < len(section) else {}
            name = item.get(key, f"#{loc[1] + 1}") if isinstance(item, dict) else f"#{loc[1] + 1}"
            field = ".".join(str(p) for p in loc[2:]) or f"(whole {word})"
            where = f"{word} {name!r}, field {field!r}"
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


def task_label_lags(features_folder: Path) -> dict[str, int]:
    """Each task's ``split.label_lag_days`` from ``training/<task>.yaml`` (beside the features folder, else
    the project's); a task without a readable config is left out."""
    lags: dict[str, int] = {}
    for task in TASKS:
        for folder in (features_folder.parent / "training", paths.training_dir()):
            file = folder / f"{task}.yaml"
            if file.is_file():
                try:
                    raw = yaml.safe_load(file.read_text()) or {}
                    lags[task] = int((raw.get("split") or {}).get("label_lag_days", 0))
                except (yaml.YAMLError, AttributeError, TypeError, ValueError):
                    continue
                break
    return lags


def _resolve(entity_file: EntityFile, path: Path, lags: dict[str, int]) -> EntityFile:
    """The file with its families expanded into features and each rate's default horizon filled in."""
    for family in entity_file.families:
        _check_family(family, entity_file.entity, path)
    specs = []
    for spec in [*entity_file.features, *(s for f in entity_file.families for s in expand_family(f))]:
        if spec.agg == "rate" and spec.horizon is None:
            days = [lags[t] for t in spec.tasks if t in lags]
            if days:
                spec = spec.model_copy(update={"horizon": f"{max(days)}d"})
        specs.append(spec)
    return entity_file.model_copy(update={"features": specs})


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
    lags = task_label_lags(folder)
    digest.update(repr(sorted(lags.items())).encode())  # default rate horizons come from the label lags
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        entity_file = read_entity_file(file)
        if entity_file.entity in parsed:
            raise FeatureDefinitionError(f"{file}: entity {entity_file.entity!r} is defined by two files")
        entity_file = _resolve(entity_file, file, lags)
        _check_semantics(entity_file, file, all_names)
        parsed[entity_file.entity] = entity_file
        file_of[entity_file.entity] = file
    owners = {d.name: e for e, f in parsed.items() for s in f.features for d in _expand(s, e)}
    for entity_file in parsed.values():
        for spec in entity_file.features:
            for field, target in [("relative_to", spec.relative_to)] + [("refs", r) for r in spec.refs]:
                if target is not None and owners.get(target) not in ("rider", "merchant"):
                    raise FeatureDefinitionError(
                        f"{file_of[entity_file.entity]}: feature {spec.name!r}, field {field!r}: "
                        f"{target!r} is not a rider or merchant feature"
                    )
    return FeatureSet(parsed, digest.hexdigest()[:12], source=folder)
