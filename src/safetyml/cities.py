"""The registry of cities: centre, time zone and market, read from YAML into pydantic models."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, Field, field_validator

from safetyml import envvars
from safetyml.errors import SafetymlError

CITIES_ENV = envvars.CITIES


class City(BaseModel):
    id: str
    name: str
    market: str = Field(pattern=r"^[A-Z]{2}$")
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    timezone: str

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class UnknownCityError(SafetymlError, KeyError):
    """A city id that has no entry (and so no time zone) in the registry."""


def _read(text: str, source: str) -> dict[str, City]:
    raw = yaml.safe_load(text) or {}
    entries = raw.get("cities")
    if not isinstance(entries, dict):
        raise ValueError(f"{source}: expected a top-level 'cities:' mapping of city id to its fields")
    return {city_id: City(id=city_id, **fields) for city_id, fields in entries.items()}


@lru_cache(maxsize=1)
def registry() -> dict[str, City]:
    """Built-in cities merged with the user's ``SAFETYML_CITIES`` file, if set."""
    builtin = resources.files("safetyml.resources").joinpath("cities.yaml").read_text()
    cities = _read(builtin, "safetyml/resources/cities.yaml")
    if extra := os.environ.get(CITIES_ENV):
        path = Path(extra)
        cities.update(_read(path.read_text(), str(path)))
    return cities


def get(city_id: str) -> City:
    try:
        return registry()[city_id]
    except KeyError:
        known = ", ".join(sorted(registry()))
        raise UnknownCityError(
            f"city {city_id!r} has no known time zone; known cities: {known}. "
            f"Add it to a YAML file named by {CITIES_ENV}."
        ) from None


def timezone_of(city_id: str) -> str:
    return get(city_id).timezone


def market_of(city_id: str) -> str:
    return get(city_id).market
