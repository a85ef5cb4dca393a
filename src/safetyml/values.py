"""The small value rules every stage shares, defined once: what "missing" means, UTC times, JSON-safe values.

Missing is ``None``, ``pd.NA``, ``pd.NaT`` or a float NaN (Python or NumPy); naive timestamps mean UTC.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def is_missing(value: Any) -> bool:
    """Whether a scalar is missing: None, pd.NA, pd.NaT or a NaN float (also NumPy's)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def optional_text(value: Any) -> str | None:
    """A stored value as text, or None when missing."""
    return None if is_missing(value) else str(value)


def as_float(value: Any) -> float:
    """A value as a float; NaN when it is missing or not a number."""
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def utc_timestamp(value: Any) -> pd.Timestamp:
    """One moment as a UTC ``pd.Timestamp`` (a naive value is taken to be UTC already)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_utc(values: pd.Series | pd.DatetimeIndex | list) -> pd.DatetimeIndex:
    """Any timestamps (naive means UTC) as a nanosecond UTC DatetimeIndex."""
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns")


def jsonable(value: Any) -> Any:
    """Plain JSON types, recursively: NumPy scalars unboxed, missing and ±inf → None, times → ISO text.

    Dicts (keys as text), lists, tuples and arrays are walked; anything else unknown becomes ``str(value)``.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if is_missing(value):
        return None
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


__all__ = ["as_float", "is_missing", "jsonable", "optional_text", "to_utc", "utc_timestamp"]
