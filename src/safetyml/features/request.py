"""Request-time trip features: one definition, used offline (training frames) and online (the scorer).

Everything here depends only on the request row itself and on the rider's and merchant's feature vectors
already looked up for it. :func:`trip_request_features` takes DataFrames (training frames, batch);
:func:`trip_request_features_one` takes one request as plain values (the real-time path, ~30 µs instead
of ~2 ms of pandas per request). Both turn their inputs into float arrays and call the same
:func:`_numeric_features`, so each computation (night, ratios, …) has one definition; the only two
spellings are the UTC → local-time conversion (pandas ``tz_convert`` vs ``datetime.astimezone``, both on
the same ``zoneinfo`` zone from :func:`_zone_of`) and the categorical "level or missing" rule, and tests
check the two functions give identical values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from safetyml import cities
from safetyml.values import is_missing, to_utc

NIGHT_START_HOUR = 22  # local night is 22:00-05:59
NIGHT_END_HOUR = 6


def to_ns(values: pd.Series | pd.DatetimeIndex | list) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC)."""
    return to_utc(values).asi8


def local_hour_weekday(times: pd.Series | pd.DatetimeIndex, city: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (0-23) and weekday (0 = Monday) in each row's city time zone; NaN for unknown cities."""
    utc = to_utc(times)
    hour = np.full(len(utc), np.nan)
    weekday = np.full(len(utc), np.nan)
    city_series = (
        city.reset_index(drop=True) if isinstance(city, pd.Series) else pd.Series(city, dtype="object")
    )
    codes, uniques = pd.factorize(city_series, use_na_sentinel=True)
    for code, city_id in enumerate(uniques):
        zone = _zone_of(city_id)
        if zone is None:
            continue
        rows = np.flatnonzero(codes == code)
        local = utc[rows].tz_convert(zone)
        hour[rows] = np.asarray(local.hour, dtype="float64")
        weekday[rows] = np.asarray(local.weekday, dtype="float64")
    return hour, weekday


def _zone_of(city_id: Any) -> ZoneInfo | None:
    """The city's time zone (the one both paths convert to), None for an unknown or missing city."""
    city = cities.registry().get(city_id) if isinstance(city_id, str) else None
    return None if city is None else ZoneInfo(city.timezone)  # ZoneInfo caches its instances


def local_hour_weekday_one(requested_at: Any, city: Any) -> tuple[float, float]:
    """:func:`local_hour_weekday` for one timestamp (naive means UTC), without pandas."""
    zone = _zone_of(city)
    if zone is None:
        return math.nan, math.nan
    if not isinstance(requested_at, datetime) or requested_at is pd.NaT:
        requested_at = pd.Timestamp(requested_at) if requested_at is not None else pd.NaT
        if requested_at is pd.NaT:
            return math.nan, math.nan
    if requested_at.tzinfo is None:
        requested_at = requested_at.replace(tzinfo=UTC)
    local = requested_at.astimezone(zone)
    return float(local.hour), float(local.weekday())


def night_flag(hour: np.ndarray) -> np.ndarray:
    """1.0 at local night, 0.0 by day, NaN when the hour is unknown."""
    night = ((hour >= NIGHT_START_HOUR) | (hour < NIGHT_END_HOUR)).astype("float64")
    night[np.isnan(hour)] = np.nan
    return night


def hour_angle(hour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A local hour as a point on the 24-hour clock (cos, sin): 23:00 and 01:00 are close, not 22 apart."""
    angle = 2 * np.pi * np.asarray(hour, dtype="float64") / 24
    return np.cos(angle), np.sin(angle)


Z_LIMIT = 20.0  # |z| beyond this says the same thing ("far off"); two near-equal values give a tiny std


def zscore(value: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """How many of the entity's own standard deviations the value is from its own mean, within ±Z_LIMIT
    (NaN without a spread: fewer than two earlier values, or all equal)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = std > 1e-9 * np.maximum(np.abs(mean), 1.0)
        z = np.where(ok, (value - mean) / np.where(ok, std, 1.0), np.nan)
        return np.clip(z, -Z_LIMIT, Z_LIMIT)


def _numeric(requests: pd.DataFrame, column: str) -> np.ndarray:
    if column not in requests.columns:
        return np.full(len(requests), np.nan)
    values = requests[column]
    if pd.api.types.is_bool_dtype(values) or values.dtype == "boolean":
        return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _numeric_one(value: Any) -> float:
    """:func:`_numeric` for one value: booleans as 1/0, numbers as floats, anything else through pandas."""
    if is_missing(value):
        return math.nan
    if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
        return float(value)
    return float(pd.to_numeric(pd.Series([value], dtype="object"), errors="coerce").to_numpy("float64")[0])


def _numeric_features(
    defs: list, hour: np.ndarray, weekday: np.ndarray, column: Any, usual: Any
) -> dict[str, np.ndarray]:
    """The numeric trip features from float arrays: the one definition both entry points use.

    ``column(column)`` gives a request column as floats, ``usual(feature, target)`` the rider's or merchant's
    ``target`` feature that ``feature`` is relative to, as floats;
    categorical definitions are left to the caller (they keep the level or give missing).
    """
    out: dict[str, np.ndarray] = {}
    for d in defs:
        spec = d.spec
        if spec.compute == "local_hour":
            out[d.name] = hour
        elif spec.compute == "weekday":
            out[d.name] = weekday
        elif spec.compute == "night":
            out[d.name] = night_flag(hour)
        elif spec.compute == "relative":
            base, value = usual(d.name, spec.relative_to), column(spec.column)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[d.name] = np.where(base > 0, value / base, np.nan)
        elif spec.compute == "zscore":
            mean, std = (usual(d.name, ref) for ref in spec.refs)
            out[d.name] = zscore(column(spec.column), mean, std)
        elif spec.compute == "hour_affinity":
            # mean cosine between this hour and the hours of the entity's earlier trips, on the 24-hour
            # clock: 1 = always at this hour, -1 = always 12 hours away (from the means of cos and sin)
            cos_mean, sin_mean = (usual(d.name, ref) for ref in spec.refs)
            cos_h, sin_h = hour_angle(hour)
            out[d.name] = cos_h * cos_mean + sin_h * sin_mean
        elif d.kind != "categorical":
            out[d.name] = column(spec.column)
    return out


@lru_cache(maxsize=1)
def _default_feature_set():
    """The project's definitions, read once per process (pass ``fs`` explicitly to use others)."""
    from safetyml.features.definitions import load_feature_set

    return load_feature_set()


def trip_request_features(
    requests: pd.DataFrame,
    rider_features: pd.DataFrame,
    merchant_features: pd.DataFrame,
    fs=None,
) -> pd.DataFrame:
    """The trip.yaml columns for each request row (rider/merchant vectors aligned row by row).

    ``requests`` has the trips-table columns; ``city`` should be set (a trip's city; the callers derive it
    from the merchant when the data has none); a missing ``rain`` column gives NaN.
    """
    fs = fs or _default_feature_set()
    n = len(requests)
    if len(rider_features) != n or len(merchant_features) != n:
        raise ValueError(
            f"trip_request_features: {n} requests but {len(rider_features)} rider and "
            f"{len(merchant_features)} merchant vectors; they must be aligned row by row"
        )
    city = requests["city"] if "city" in requests.columns else pd.Series([None] * n, dtype="object")
    hour, weekday = local_hour_weekday(requests["requested_at"], city)

    def usual(name: str, target: str) -> np.ndarray:
        base = rider_features if target in rider_features.columns else merchant_features
        if target not in base.columns:
            raise KeyError(f"{name} needs {target!r} in the rider or merchant features")
        return pd.to_numeric(base[target], errors="coerce").to_numpy(dtype="float64")

    defs = fs.entity_features("trip")
    numeric = _numeric_features(defs, hour, weekday, lambda column: _numeric(requests, column), usual)
    out: dict[str, object] = {}
    for d in defs:
        if d.kind == "categorical" and d.name not in numeric:
            column = d.spec.column
            values = requests[column] if column in requests.columns else pd.Series([None] * n)
            out[d.name] = pd.Categorical(
                pd.Series(values, dtype="object").to_numpy(), categories=d.categories
            )
        else:
            out[d.name] = numeric[d.name]
    return pd.DataFrame(out, index=requests.index)


def trip_request_features_one(
    request: Mapping[str, Any],
    rider: Mapping[str, Any],
    merchant: Mapping[str, Any],
    fs=None,
) -> dict[str, Any]:
    """:func:`trip_request_features` for one request given as plain values: the real-time path.

    ``request`` maps the trips-table columns (``requested_at``, ``city``, ``distance_km``, …; a missing key
    is a missing value) and ``rider``/``merchant`` map feature names to values. Returns each trip feature
    as a float (NaN when missing) or, for categorical features, the level (None when missing or not one
    of the categories) — the same values the DataFrame version gives for that row.
    """
    fs = fs or _default_feature_set()
    hour, weekday = local_hour_weekday_one(request.get("requested_at"), request.get("city"))

    def usual(name: str, target: str) -> np.ndarray:
        base = rider if target in rider else merchant
        if target not in base:
            raise KeyError(f"{name} needs {target!r} in the rider or merchant features")
        return np.array([_numeric_one(base[target])])

    defs = fs.entity_features("trip")
    numeric = _numeric_features(
        defs,
        np.array([hour]),
        np.array([weekday]),
        lambda column: np.array([_numeric_one(request.get(column))]),
        usual,
    )
    out: dict[str, Any] = {}
    for d in defs:
        if d.kind == "categorical" and d.name not in numeric:
            value = request.get(d.spec.column)
            out[d.name] = value if _is_level(value, d.categories) else None
        else:
            out[d.name] = float(numeric[d.name][0])
    return out


def _is_level(value: Any, categories: list) -> bool:
    """Whether ``pd.Categorical([value], categories)`` keeps the value (missing values never match)."""
    if is_missing(value):
        return False
    try:
        return value in categories
    except TypeError:
        return False
