"""Detectors: pure functions from one indicator series to a signal, and the hysteresis that turns a
signal into alert episodes.

- :func:`seasonal_z`: robust z-score against the same hour of the week (hourly series) or day of the
  week (daily series) over the previous ``weeks`` weeks: ``(x − median) / scale`` with
  ``scale = max(1.4826·MAD, noise)`` (the known sampling noise of the point, e.g. Poisson, floors the
  MAD of a handful of points) inflated by ``√(1 + π/(2·w))`` for the median's own error.
- :func:`cusum`: one-sided tabular CUSUM of standardised residuals against the in-control mean of a
  baseline (the first ``weeks`` weeks of the series): ``S_t = max(0, S_{t−1} + z_t − k)``; the standard
  deviation adds the baseline's over-dispersion to each point's noise and is inflated by the baseline's
  lag-1 autocorrelation (persistent swings would otherwise add up to false alarms).
- :func:`threshold`: the raw value.

:func:`hysteresis` opens an episode after ``min_duration`` consecutive periods at or above ``enter`` and
closes it when the signal drops below ``exit``. statsmodels has no CUSUM chart on raw series (its
``breaks_cusumolsresid`` tests regression residuals), so the few lines are written here; the tests
check them against hand-made steps.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

MAD_SCALE = 1.4826  # MAD → standard deviation for normal data


def _season(times: pd.DatetimeIndex, period: str) -> np.ndarray:
    if period == "hour":
        return (times.dayofweek * 24 + times.hour).to_numpy()
    return times.dayofweek.to_numpy()


def seasonal_z(
    times: pd.DatetimeIndex,
    values: np.ndarray,
    noise_sd: np.ndarray | None = None,
    period: str = "day",
    weeks: int = 6,
) -> np.ndarray:
    """Robust z of each point against the same season slot of the previous ``weeks`` weeks (NaN before)."""
    x = np.asarray(values, dtype="float64")
    noise = np.zeros_like(x) if noise_sd is None else np.nan_to_num(np.asarray(noise_sd, dtype="float64"))
    season = _season(pd.DatetimeIndex(times), period)
    slot_len = pd.Timedelta(hours=1) if period == "hour" else pd.Timedelta(days=1)
    z = np.full(len(x), np.nan)
    frame = pd.DataFrame({"t": pd.DatetimeIndex(times), "x": x, "s": season, "i": np.arange(len(x))})
    inflate = math.sqrt(1.0 + math.pi / (2.0 * weeks))
    for _, part in frame.groupby("s", sort=False):
        part = part.sort_values("t")
        vals, ts, idx = part["x"].to_numpy(), part["t"].to_numpy(), part["i"].to_numpy()
        for j in range(len(part)):
            lo = ts[j] - np.timedelta64(weeks * 7, "D") - np.timedelta64(slot_len) // 2
            prev = vals[:j][(ts[:j] >= lo) & np.isfinite(vals[:j])]
            if len(prev) < max(2, weeks // 2) or not np.isfinite(vals[j]):
                continue
            med = np.median(prev)
            mad = MAD_SCALE * np.median(np.abs(prev - med))
            scale = max(mad, noise[idx[j]], 1e-12) * inflate
            z[idx[j]] = (vals[j] - med) / scale
    return z


def cusum(
    values: np.ndarray,
    noise_sd: np.ndarray | None = None,
    baseline: int = 42,
    k: float = 0.5,
    direction: str = "up",
) -> np.ndarray:
    """Tabular CUSUM of ``values`` after a baseline of ``baseline`` points (NaN within the baseline).

    The in-control mean is the baseline's mean; each point's standard deviation combines its own
    sampling noise with the extra (over-dispersion) variance the baseline shows beyond that noise.
    ``direction`` "up" / "down" / "both" (the larger of the two sums).
    """
    x = np.asarray(values, dtype="float64")
    noise = np.zeros_like(x) if noise_sd is None else np.nan_to_num(np.asarray(noise_sd, dtype="float64"))
    out = np.full(len(x), np.nan)
    base = x[:baseline]
    ok = np.isfinite(base)
    if ok.sum() < 3 or len(x) <= baseline:
        return out
    mu = float(base[ok].mean())
    base_noise2 = float(np.mean(noise[:baseline][ok] ** 2))
    extra = max(0.0, float(base[ok].var(ddof=1)) - base_noise2)
    # day-to-day persistence (weather, a risky rider's spell) makes runs of same-sign residuals that a
    # CUSUM would add up: inflate the sd by the AR(1) long-run factor √((1+ρ)/(1−ρ)) seen in the baseline
    resid = (base[ok] - mu) / np.sqrt(extra + noise[:baseline][ok] ** 2 + 1e-24)
    rho = 0.0
    if len(resid) > 3 and resid[:-1].std() > 0 and resid[1:].std() > 0:
        rho = float(np.corrcoef(resid[:-1], resid[1:])[0, 1])
    rho = min(max(rho if np.isfinite(rho) else 0.0, 0.0), 0.7)
    inflate = math.sqrt((1 + rho) / (1 - rho))
    hi = lo = 0.0
    for t in range(baseline, len(x)):
        if not np.isfinite(x[t]):
            out[t] = max(hi, lo) if direction == "both" else (hi if direction == "up" else lo)
            continue
        sd = inflate * math.sqrt(extra + noise[t] ** 2 + (extra + base_noise2) / ok.sum())
        z = (x[t] - mu) / max(sd, 1e-12)
        hi = max(0.0, hi + z - k)
        lo = max(0.0, lo - z - k)
        out[t] = max(hi, lo) if direction == "both" else (hi if direction == "up" else lo)
    return out


def directed(signal: np.ndarray, direction: str) -> np.ndarray:
    """A z-like signal oriented so that larger is worse: up → z, down → −z, both → |z|."""
    s = np.asarray(signal, dtype="float64")
    return {"up": s, "down": -s, "both": np.abs(s)}[direction]


def hysteresis(signal: np.ndarray, enter: float, exit: float, min_duration: int = 1) -> np.ndarray:
    """Active flag per point: on after ``min_duration`` consecutive points ≥ enter, off when < exit.

    NaN never opens an episode and leaves an open one open.
    """
    s = np.asarray(signal, dtype="float64")
    active = np.zeros(len(s), dtype=bool)
    on, run = False, 0
    for t, v in enumerate(s):
        if on:
            if np.isfinite(v) and v < exit:
                on, run = False, 0
        else:
            run = run + 1 if (np.isfinite(v) and v >= enter) else 0
            if run >= min_duration:
                on = True
        active[t] = on
    return active


def episodes(times: pd.DatetimeIndex, active: np.ndarray) -> list[tuple[pd.Timestamp, pd.Timestamp | None]]:
    """(start, end) of each run of active points; end is None for a run still active at the last point."""
    out = []
    start = None
    for t, a in zip(times, active, strict=True):
        if a and start is None:
            start = t
        elif not a and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, None))
    return out


def cusum_arl0(k: float, h: float) -> float:
    """In-control average run length of a one-sided CUSUM on N(0,1) (Siegmund's approximation)."""
    b = h + 1.166
    if k == 0:
        return b * b
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)


def nominal_rate(
    kind: str, enter: float, min_duration: int = 1, k: float = 0.5, direction: str = "up"
) -> float:
    """Nominal false-alarm rate per period of a detector on in-control data (normal approximation)."""
    from scipy import stats

    sides = 2 if direction == "both" else 1
    if kind == "seasonal_z":
        return sides * float(stats.norm.sf(enter)) ** min_duration
    if kind == "cusum":
        return sides / cusum_arl0(k, enter)
    return float("nan")
