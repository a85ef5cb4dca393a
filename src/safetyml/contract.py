"""The data contract: the tables safetyml reads, their columns, types, keys, allowed values and relations.

The specs below are the single source of truth: the pandera schemas that validate a user's files and
the contract table in the README are both generated from them. pandera was chosen over hand-rolled
checks because it reports every failing row of every rule in one lazy pass (``failure_cases``), which
is exactly what a quarantine needs; pydantic validates one record at a time and would be ~100x slower
on a million-row table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

ColumnKind = Literal["id", "string", "timestamp", "float", "int", "bool"]

VEHICLE_TYPES = ("motorcycle", "bicycle", "car", "on_foot")
MERCHANT_CATEGORIES = ("restaurant", "grocery", "pharmacy", "convenience", "alcohol", "electronics")
PAYMENT_METHODS = ("card", "cash", "wallet", "voucher")
INCIDENT_TYPES = ("accident", "assault", "robbery", "harassment", "theft", "other")
LEDGER_KINDS = ("sale", "refund", "chargeback", "payout", "advance", "repayment", "missed_repayment")
CREDIT_EVENT_KINDS = ("advance_default", "chargeback_loss", "fraud_closure")
# rider and merchant ids are joined by this character into a rider-merchant pair id (features/pair.yaml)
PAIR_SEPARATOR = "|"
PAIR_PARTS = ("rider_id", "merchant_id")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a contract table."""

    name: str
    kind: ColumnKind
    description: str
    nullable: bool = False
    unique: bool = False
    allowed: tuple[str, ...] | None = None
    ge: float | None = None
    le: float | None = None
    references: str | None = None  # name of the parent table whose key this column must match
    required: bool = True  # optional columns are validated when present

    def rules(self) -> str:
        """The column's rules in words, for the README and error messages."""
        parts = [self.kind]
        if self.kind == "id" and self.name in PAIR_PARTS:
            parts.append("no vertical bar (it joins a rider-merchant pair id)")
        parts.append("nullable" if self.nullable else "not null")
        if self.unique:
            parts.append("unique")
        if self.allowed:
            parts.append("one of " + ", ".join(self.allowed))
        if self.ge is not None and self.le is not None:
            parts.append(f"in [{self.ge:g}, {self.le:g}]")
        elif self.ge is not None:
            parts.append(f"≥ {self.ge:g}")
        if self.references:
            parts.append(f"→ {self.references}")
        if not self.required:
            parts.append("optional")
        return "; ".join(parts)


@dataclass(frozen=True)
class RowRule:
    """A rule across columns of one row: ``left >= right`` where both are present."""

    name: str
    left: str
    right: str
    description: str


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    columns: tuple[ColumnSpec, ...]
    key: str | None = None
    row_rules: tuple[RowRule, ...] = field(default_factory=tuple)
    required: bool = True

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _lat(name: str, what: str) -> ColumnSpec:
    return ColumnSpec(name, "float", f"latitude of {what} (WGS84)", nullable=True, ge=-90, le=90)


def _lng(name: str, what: str) -> ColumnSpec:
    return ColumnSpec(name, "float", f"longitude of {what} (WGS84)", nullable=True, ge=-180, le=180)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "riders",
            "Couriers on the platform.",
            (
                ColumnSpec("rider_id", "id", "rider key", unique=True),
                ColumnSpec("city", "string", "city id; must be a known city (it sets the time zone)"),
                ColumnSpec("signup_at", "timestamp", "when the rider signed up (UTC)"),
                ColumnSpec("vehicle_type", "string", "vehicle the rider uses", allowed=VEHICLE_TYPES),
            ),
            key="rider_id",
        ),
        TableSpec(
            "merchants",
            "Restaurants and shops that sell through the platform.",
            (
                ColumnSpec("merchant_id", "id", "merchant key", unique=True),
                ColumnSpec("city", "string", "city id; must be a known city"),
                ColumnSpec("category", "string", "merchant category", allowed=MERCHANT_CATEGORIES),
                ColumnSpec("onboarded_at", "timestamp", "when the merchant joined (UTC)"),
                _lat("lat", "the store"),
                _lng("lng", "the store"),
            ),
            key="merchant_id",
        ),
        TableSpec(
            "trips",
            "Delivery trips: pickup at the merchant, drop-off at the customer.",
            (
                ColumnSpec("trip_id", "id", "trip key", unique=True),
                ColumnSpec("rider_id", "id", "rider who took the trip", references="riders"),
                ColumnSpec("merchant_id", "id", "merchant of the order", references="merchants"),
                ColumnSpec("requested_at", "timestamp", "when the trip was requested (dispatch time, UTC)"),
                _lat("pickup_lat", "the pickup"),
                _lng("pickup_lng", "the pickup"),
                _lat("dropoff_lat", "the drop-off"),
                _lng("dropoff_lng", "the drop-off"),
                ColumnSpec("distance_km", "float", "route distance in km", ge=0, le=200),
                ColumnSpec("order_value", "float", "order value in local currency", ge=0),
                ColumnSpec("payment_method", "string", "how the customer paid", allowed=PAYMENT_METHODS),
                ColumnSpec(
                    "rain", "bool", "raining in the city at request time", nullable=True, required=False
                ),
            ),
            key="trip_id",
        ),
        TableSpec(
            "incidents",
            "Safety incidents, each linked to a trip, a rider and/or a merchant where known.",
            (
                ColumnSpec("incident_id", "id", "incident key", unique=True),
                ColumnSpec(
                    "trip_id", "id", "trip the incident happened on", nullable=True, references="trips"
                ),
                ColumnSpec("rider_id", "id", "rider involved", nullable=True, references="riders"),
                ColumnSpec("merchant_id", "id", "merchant involved", nullable=True, references="merchants"),
                ColumnSpec("occurred_at", "timestamp", "when it happened (UTC)"),
                ColumnSpec("reported_at", "timestamp", "when it was reported; it is known only from then"),
                ColumnSpec("type", "string", "incident type", allowed=INCIDENT_TYPES),
                ColumnSpec("severity", "int", "1 (minor) to 5 (fatal or critical)", ge=1, le=5),
                _lat("lat", "the incident"),
                _lng("lng", "the incident"),
            ),
            key="incident_id",
            row_rules=(
                RowRule(
                    "reported_after_occurred",
                    "reported_at",
                    "occurred_at",
                    "reported_at must not be before occurred_at",
                ),
            ),
        ),
        TableSpec(
            "merchant_ledger",
            "Money movements of each merchant; amounts are positive, the kind gives the direction.",
            (
                ColumnSpec("merchant_id", "id", "merchant", references="merchants"),
                ColumnSpec("event_at", "timestamp", "when the movement happened (UTC)"),
                ColumnSpec("kind", "string", "kind of movement", allowed=LEDGER_KINDS),
                ColumnSpec("amount", "float", "amount in local currency", ge=0),
            ),
            required=False,
        ),
        TableSpec(
            "credit_events",
            "Credit losses: the label of the merchant credit model.",
            (
                ColumnSpec("merchant_id", "id", "merchant", references="merchants"),
                ColumnSpec("event_at", "timestamp", "when the loss was recognised (UTC)"),
                ColumnSpec("kind", "string", "kind of credit event", allowed=CREDIT_EVENT_KINDS),
            ),
            required=False,
        ),
    )
}

# Parents before children, so foreign keys are checked against already-validated parents.
TABLE_ORDER: tuple[str, ...] = (
    "riders",
    "merchants",
    "trips",
    "incidents",
    "merchant_ledger",
    "credit_events",
)


def contract_markdown(tables: Iterable[TableSpec] | None = None) -> str:
    """The contract as Markdown tables (used in the README and by ``safetyml validate --describe``)."""
    out: list[str] = []
    for spec in tables or TABLES.values():
        key = f" Key: `{spec.key}`." if spec.key else ""
        optional = "" if spec.required else " Optional table (empty when the file is absent)."
        out.append(f"#### `{spec.name}`\n{spec.description}{key}{optional}\n")
        out.append("| column | rules | meaning |\n| --- | --- | --- |")
        for col in spec.columns:
            out.append(f"| `{col.name}` | {col.rules()} | {col.description} |")
        for rule in spec.row_rules:
            out.append(f"| *row* | {rule.name} | {rule.description} |")
        out.append("")
    return "\n".join(out)


__all__ = [
    "CREDIT_EVENT_KINDS",
    "INCIDENT_TYPES",
    "LEDGER_KINDS",
    "MERCHANT_CATEGORIES",
    "PAYMENT_METHODS",
    "TABLES",
    "TABLE_ORDER",
    "VEHICLE_TYPES",
    "ColumnKind",
    "ColumnSpec",
    "RowRule",
    "TableSpec",
    "contract_markdown",
]
