"""Request-time trip features, one function used offline (training frames) and online (the scorer).

Everything here depends only on the request row itself and on the rider's and merchant's feature vectors
already looked up for it, so offline and online values match by construction.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from safetyml import cities

NIGHT_START_HOUR = 22  # local night is 22:00-05:59
NIGHT_END_HOUR = 6


def to_utc(values: pd.Series | pd.DatetimeIndex | list) -> pd.DatetimeIndex:
    """Any timestamps (naive means UTC) as a nanosecond UTC DatetimeIndex."""
    index = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return index.as_unit("ns")


def to_ns(values: pd.Series | pd.DatetimeIndex | list) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC)."""
    return to_utc(values).asi8


def local_hour_weekday(times: pd.Series | pd.DatetimeIndex, city: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (0-23) and weekday (0 = Monday) in each row's city time zone; NaN for unknown cities."""
    utc = to_utc(times)
    hour = np.full(len(utc), np.nan)
    weekday = np.full(len(utc), np.nan)
    known = cities.registry()
    city_series = (
        city.reset_index(drop=True) if isinstance(city, pd.Series) else pd.Series(city, dtype="object")
    )
    codes, uniques = pd.factorize(city_series, use_na_sentinel=True)
    for code, city_id in enumerate(uniques):
        if city_id not in known:
            continue
        rows = np.flatnonzero(codes == code)
        local = utc[rows].tz_convert(known[city_id].timezone)
        hour[rows] = np.asarray(local.hour, dtype="float64")
        weekday[rows] = np.asarray(local.weekday, dtype="float64")
    return hour, weekday


def night_flag(hour: np.ndarray) -> np.ndarray:
    """1.0 at local night, 0.0 by day, NaN when the hour is unknown."""
    night = ((hour >= NIGHT_START_HOUR) | (hour < NIGHT_END_HOUR)).astype("float64")
    night[np.isnan(hour)] = np.nan
    return night


def _numeric(requests: pd.DataFrame, column: str) -> np.ndarray:
    if column not in requests.columns:
        return np.full(len(requests), np.nan)
    values = requests[column]
    if pd.api.types.is_bool_dtype(values) or values.dtype == "boolean":
        return values.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


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
    out: dict[str, object] = {}
    for d in fs.entity_features("trip"):
        spec = d.spec
        if spec.compute == "local_hour":
            out[d.name] = hour
        elif spec.compute == "weekday":
            out[d.name] = weekday
        elif spec.compute == "night":
            out[d.name] = night_flag(hour)
        elif spec.compute == "relative":
            base = rider_features if spec.relative_to in rider_features.columns else merchant_features
            if spec.relative_to not in base.columns:
                raise KeyError(f"{d.name} needs {spec.relative_to!r} in the rider or merchant features")
            usual = pd.to_numeric(base[spec.relative_to], errors="coerce").to_numpy(dtype="float64")
            value = _numeric(requests, spec.column)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[d.name] = np.where(usual > 0, value / usual, np.nan)
        elif d.kind == "categorical":
            values = requests[spec.column] if spec.column in requests.columns else pd.Series([None] * n)
            out[d.name] = pd.Categorical(
                pd.Series(values, dtype="object").to_numpy(), categories=d.categories
            )
        else:
            out[d.name] = _numeric(requests, spec.column)
    return pd.DataFrame(out, index=requests.index)
