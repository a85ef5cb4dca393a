"""Request and response models of the scoring API (pydantic), shared by the scorer and the BentoML service.

Requests are strict: unknown fields, NaN/inf, out-of-range coordinates and timestamps without a time zone
are refused with an error that names the field and the rule, so a caller's bug never becomes a score.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from safetyml.contract import PAYMENT_METHODS
from safetyml.scoring.policies import Action

MAX_BATCH = 1000
# Timestamps outside these bounds are refused (a typo, not a trip); pandas' nanosecond range ends in 2262.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _in_range(value: datetime | None) -> datetime | None:
    if value is not None and not (EARLIEST <= value < LATEST):
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


PaymentMethod = Literal[PAYMENT_METHODS]  # type: ignore[valid-type]
_ID = {"min_length": 1, "max_length": 128, "pattern": r"^[A-Za-z0-9_.:\-]+$"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)


class TripScoreRequest(_Strict):
    """A trip at dispatch time, as the dispatch service knows it."""

    rider_id: str = Field(description="rider offered the trip", **_ID)
    merchant_id: str = Field(description="merchant of the order", **_ID)
    requested_at: AwareDatetime = Field(description="dispatch time, ISO 8601 with a time zone (e.g. ...Z)")
    # Required, but null is allowed (no GPS fix): the trip then takes its city's zone values.
    pickup_lat: float | None = Field(ge=-90, le=90)
    pickup_lng: float | None = Field(ge=-180, le=180)
    dropoff_lat: float | None = Field(ge=-90, le=90)
    dropoff_lng: float | None = Field(ge=-180, le=180)
    distance_km: float = Field(ge=0, le=200, description="route distance in km")
    order_value: float = Field(ge=0, le=1_000_000, description="order value in local currency")
    payment_method: PaymentMethod  # type: ignore[valid-type]
    rain: bool | None = Field(default=None, description="raining at request time, if known")
    city: str | None = Field(
        default=None,
        max_length=64,
        description="city id; sets the market's policy (default: the merchant's city)",
    )
    explain: bool = Field(default=True, description="include the top reason codes")

    _requested_in_range = field_validator("requested_at")(_in_range)

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
        default=None, description="snapshot time; must not be before the online store's as_of (default: now)"
    )
    explain: bool = Field(default=True, description="include the top reason codes")

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
