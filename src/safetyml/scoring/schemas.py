"""Request and response models of the scoring API (pydantic), shared by the scorer and the BentoML service.

Requests are strict, and the published OpenAPI document says exactly what is accepted: unknown fields,
NaN/inf, out-of-range coordinates, a JSON ``true`` for a number or ``0`` for a boolean, ``null`` where the
schema does not declare ``nullable``, and timestamps that are not RFC 3339 with a time zone between 2000 and
2099 are refused with an error that names the field and the rule, so a caller's bug never becomes a score.
Limits on the body itself (size, JSON duplicate keys, Content-Type, batch size) are checked before this, in
:mod:`safetyml.scoring.http`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator

from safetyml.contract import PAYMENT_METHODS
from safetyml.scoring.policies import Action

MAX_BATCH = 1000
# Timestamps outside these bounds are refused (a typo, not a trip); pandas' nanosecond range ends in 2262.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# RFC 3339 with a time zone, years 2000-2099: published as the schema's pattern and checked on the raw text
# (pydantic alone would also take "1700000000" or a space for the "T").
TIMESTAMP_PATTERN = (
    r"^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)

Number = Annotated[float, Strict()]  # a JSON number: true/false and "1.5" are refused
Flag = Annotated[bool, Strict()]  # a JSON boolean: 0/1 and "true" are refused


def _timestamp(value: Any) -> Any:
    """Before validation: an RFC 3339 string (or, from Python, a datetime); not a number of seconds."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        raise ValueError(
            "must be an RFC 3339 timestamp with a time zone between 2000 and 2099, e.g. 2026-09-30T02:42:11Z"
        )
    return value


def _in_range(value: datetime | None) -> datetime | None:
    """Years 2000-2099 as written (local time), exactly what the published pattern allows."""
    if value is not None and not (EARLIEST.year <= value.year < LATEST.year):
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


def _openapi30(schema: dict[str, Any]) -> None:
    """Publish ``X | None`` as OpenAPI 3.0's ``nullable: true`` (BentoML serves OpenAPI 3.0, which has no
    ``type: null``), so fuzzers and clients read the same rule the validation applies."""
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if options and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            if len(rest) == 1:
                del prop["anyOf"]
                prop.update(rest[0])
                prop["nullable"] = True


PaymentMethod = Literal[PAYMENT_METHODS]  # type: ignore[valid-type]
_ID = {"min_length": 1, "max_length": 128, "pattern": r"^[A-Za-z0-9_.:\-]+$"}
_WHEN = {"json_schema_extra": {"pattern": TIMESTAMP_PATTERN}}


def _city_enum(schema: dict[str, Any]) -> None:
    """``city`` is optional but, in JSON, never null, and one of the registry's cities."""
    from safetyml import cities

    schema.pop("anyOf", None)
    schema.pop("default", None)
    schema.update(type="string", enum=sorted(cities.registry()))


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, json_schema_extra=lambda schema, _: _openapi30(schema)
    )


class TripScoreRequest(_Strict):
    """A trip at dispatch time, as the dispatch service knows it."""

    rider_id: str = Field(description="rider offered the trip", **_ID)
    merchant_id: str = Field(description="merchant of the order", **_ID)
    requested_at: AwareDatetime = Field(
        description="dispatch time, RFC 3339 with a time zone (e.g. 2026-09-30T02:42:11Z)", **_WHEN
    )
    # Required, but null is allowed (no GPS fix): the trip then takes its city's zone values.
    pickup_lat: Number | None = Field(ge=-90, le=90)
    pickup_lng: Number | None = Field(ge=-180, le=180)
    dropoff_lat: Number | None = Field(ge=-90, le=90)
    dropoff_lng: Number | None = Field(ge=-180, le=180)
    distance_km: Number = Field(ge=0, le=200, description="route distance in km")
    order_value: Number = Field(ge=0, le=1_000_000, description="order value in local currency")
    payment_method: PaymentMethod  # type: ignore[valid-type]
    rain: Flag | None = Field(default=None, description="raining at request time, if known (null: unknown)")
    city: str | None = Field(  # optional; JSON null refused: leave it out to use the merchant's city
        default=None,
        max_length=64,
        description="city id; sets the market's policy (default, when absent: the merchant's city)",
        json_schema_extra=_city_enum,
    )
    explain: Flag = Field(default=True, description="include the top reason codes")

    _requested_text = field_validator("requested_at", mode="before")(_timestamp)
    _requested_in_range = field_validator("requested_at")(_in_range)

    @field_validator("city", mode="before")
    @classmethod
    def _no_json_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.mode == "json":
            raise ValueError("must be a city id; leave the field out to use the merchant's city")
        return value

    @field_validator("city")
    @classmethod
    def _known_city(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from safetyml import cities

        if value not in cities.registry():
            raise ValueError(f"unknown city {value!r}; known cities: {', '.join(sorted(cities.registry()))}")
        return value


class MerchantScoreRequest(_Strict):
    merchant_id: str = Field(description="merchant to score", **_ID)
    as_of: AwareDatetime | None = Field(
        default=None,
        description="snapshot time; must not be before the online store's as_of (absent or null: now)",
        **_WHEN,
    )
    explain: Flag = Field(default=True, description="include the top reason codes")

    _as_of_text = field_validator("as_of", mode="before")(lambda v: v if v is None else _timestamp(v))
    _as_of_in_range = field_validator("as_of")(_in_range)


class TripBatchRequest(_Strict):
    items: list[TripScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


class MerchantBatchRequest(_Strict):
    items: list[MerchantScoreRequest] = Field(min_length=1, max_length=MAX_BATCH)


class ReasonCode(BaseModel):
    """One feature that pushed the score up (or down), in words."""

    feature: str
    group: str | None = None
    value: Any = None
    contribution_logodds: float
    contribution_probability: float | None = None
    direction: str
    text: str


class _Decision(BaseModel):
    decision_id: str = Field(description="uuid of this decision in the audit log")
    decided_at: datetime
    risk_tier: str
    action: Action
    reasons: list[ReasonCode] = Field(default_factory=list)
    model_name: str
    model_version: str
    policy_version: str = Field(description="<market>@<version> of the policy that chose the action")
    market: str
    cold_start: bool = Field(description="true when an id was unknown and cold-start defaults were used")


class TripScoreResponse(_Decision):
    task: Literal["incident_risk"] = "incident_risk"
    rider_id: str
    merchant_id: str
    probability: float = Field(description="calibrated probability of a safety incident on this trip")


class MerchantScoreResponse(_Decision):
    task: Literal["merchant_credit"] = "merchant_credit"
    merchant_id: str
    as_of: datetime = Field(
        description="the time the merchant's features are as of (the online store's as_of)"
    )
    probability_of_default: float = Field(description="calibrated probability of a credit event in 90 days")
    credit_score: float
    grade: str


class TripBatchResponse(BaseModel):
    items: list[TripScoreResponse]


class MerchantBatchResponse(BaseModel):
    items: list[MerchantScoreResponse]


class ReloadRequest(_Strict):
    alias: str = Field(default="champion", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")


class ReloadResponse(BaseModel):
    model_versions: dict[str, str]
    previous_versions: dict[str, str]
