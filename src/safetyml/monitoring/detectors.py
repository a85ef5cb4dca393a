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
- :func:`count_cusum`: for incident counts, the quasi-Poisson likelihood-ratio CUSUM of a relative
  shift of the observed ÷ expected level, with its decision interval calibrated by simulating the
  fitted in-control model (parameter estimation, skew, over-dispersion and nowcast noise included); its
  signal is ``S / h`` (alarm at 1) and its nominal false-alarm rate 1/``arl0`` per period.
- :func:`threshold`: the raw value.

:func:`hysteresis` opens an episode after ``min_duration`` consecutive periods at or above ``enter`` and
closes it when the signal drops below ``exit``. statsmodels has no CUSUM chart on raw series (its
``breaks_cusumolsresid`` tests regression residuals), so the few lines are written here; the tests
check them against hand-made steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    kind: str,
    enter: float,
    min_duration: int = 1,
    k: float = 0.5,
    direction: str = "up",
    arl0: float = 1000.0,
) -> float:
    """Nominal false-alarm rate per period of a detector on in-control data (normal approximation;
    for ``count_cusum`` the rate its decision interval is calibrated to)."""
    from scipy import stats

    if kind == "count_cusum":
        return 1.0 / arl0

    sides = 2 if direction == "both" else 1
    if kind == "seasonal_z":
        return sides * float(stats.norm.sf(enter)) ** min_duration
    if kind == "cusum":
        return sides / cusum_arl0(k, enter)
    return float("nan")


# ---------------------------------------------------------------------------------------------- count CUSUM


@dataclass(frozen=True)
class InControl:
    """In-control model of a count series fitted on its baseline: level, dispersion, persistence."""

    level: float  # μ: (observed + ½) ÷ expected over the baseline (the counts' in-control mean is μ·E_t)
    events: float  # incidents seen in the baseline: the level's posterior is Gamma(events + ½, expected)
    dispersion: float  # φ ≥ 1: Pearson χ² / (B − 1), quasi-Poisson variance φ·μ·E_t
    rho: float  # lag-1 autocorrelation of the Pearson residuals, clipped to [0, 0.7]


def _fit_arrays(y: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level, dispersion and lag-1 autocorrelation of each row of ``y`` (R, B) against ``e`` (B,)."""
    ok = np.isfinite(y) & (np.isfinite(e) & (e > 0))[None, :]
    y0, e0 = np.where(ok, y, 0.0), np.where(ok, e[None, :], 0.0)
    # posterior mean under Jeffreys' prior: a baseline without a single incident still has a rate
    level = ((y0.sum(axis=1) + 0.5) / np.maximum(e0.sum(axis=1), 1e-12))[:, None]
    resid = np.where(ok, (y0 - level * e0) / np.sqrt(np.maximum(level * e0, 1e-12)), 0.0)
    n = ok.sum(axis=1)
    dispersion = np.maximum(1.0, (resid**2).sum(axis=1) / np.maximum(n - 1, 1))
    a, b = resid[:, :-1], resid[:, 1:]
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    rho = np.where(denom > 0, (a * b).sum(axis=1) / np.where(denom > 0, denom, 1.0), 0.0)
    return level[:, 0], dispersion, np.clip(rho, 0.0, 0.7)


def fit_in_control(counts: np.ndarray, expected: np.ndarray) -> InControl:
    """Fit :class:`InControl` on baseline points (finite counts, expected > 0)."""
    y = np.asarray(counts, dtype="float64")
    level, dispersion, rho = _fit_arrays(y[None, :], np.asarray(expected))
    events = float(np.nansum(np.where(np.isfinite(expected) & (np.asarray(expected) > 0), y, 0.0)))
    return InControl(float(level[0]), events, float(dispersion[0]), float(rho[0]))


def _llr_increments(
    counts: np.ndarray, base: np.ndarray, level: np.ndarray, dispersion: np.ndarray, shift: float
) -> np.ndarray:
    """Quasi-Poisson log-likelihood ratio per point of mean (1 + shift)·μE against μE (shift < 0: down)."""
    mean0 = level * base
    return (counts * math.log1p(shift) - shift * mean0) / dispersion


def _cusum_path(increments: np.ndarray) -> np.ndarray:
    """S_t = max(0, S_{t−1} + increment_t) along the last axis (NaN increments leave S unchanged)."""
    out = np.empty_like(increments)
    s = np.zeros(increments.shape[:-1])
    for t in range(increments.shape[-1]):
        step = increments[..., t]
        s = np.where(np.isfinite(step), np.maximum(0.0, s + np.nan_to_num(step)), s)
        out[..., t] = s
    return out


def _simulate_in_control(
    model: InControl,
    expected: np.ndarray,
    reported_share: np.ndarray,
    baseline: int,
    paths: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Known counts (paths, T) from the fitted in-control model, as they would be reported by as_of.

    Each path's level is drawn from its posterior, Gamma(events + ½) scaled to the fitted level, so a
    sparse baseline (a handful of incidents) allows the plausible higher and lower levels, not only the
    point estimate; Y_t ~ Poisson(μ E_t G_t) with a log-normal AR(1) multiplier G
    (variance matching φ at the baseline's mean count, lag-1 correlation ρ); a day with reported share
    π < 1 is seen as K_t ~ Binomial(Y_t, π_t).
    """
    shape = model.events + 0.5
    levels = rng.gamma(shape, model.level / shape, paths)[:, None]  # mean = the fitted level
    mean = levels * np.where(np.isfinite(expected), expected, 0.0)[None, :]
    m_bar = max(float(model.level * np.nanmean(expected[:baseline])), 1e-9)
    s2 = math.log1p((model.dispersion - 1.0) / m_bar)
    x = np.empty(mean.shape)
    x[:, 0] = rng.normal(0.0, math.sqrt(s2), paths)
    innovation = math.sqrt(s2 * (1 - model.rho**2))
    for t in range(1, mean.shape[1]):
        x[:, t] = model.rho * x[:, t - 1] + rng.normal(0.0, innovation, paths)
    y = rng.poisson(mean * np.exp(x - s2 / 2)).astype("float64")
    share = np.clip(np.nan_to_num(reported_share, nan=1.0), 1e-3, 1.0)
    late = share < 0.999
    if late.any():
        y[:, late] = rng.binomial(y[:, late].astype(np.int64), share[late])
    return y


def _calibrated_h(paths: np.ndarray, rate: float) -> float:
    """Smallest decision interval h whose up-crossing rate per point over ``paths`` (R, L) is ≤ rate."""
    prev = np.concatenate([np.zeros((paths.shape[0], 1)), paths[:, :-1]], axis=1)
    rising = paths > prev
    lo, hi = np.sort(prev[rising]), np.sort(paths[rising])
    if len(hi) == 0:
        return 1e-9
    grid = np.linspace(0.0, float(hi[-1]) * 1.0001, 2000)
    crossings = np.searchsorted(lo, grid, "left") - np.searchsorted(hi, grid, "left")
    from_right = np.maximum.accumulate(crossings[::-1])[::-1]  # fewest h above which it never exceeds
    allowed = rate * paths.size
    ok = np.flatnonzero(from_right <= allowed)
    return float(grid[ok[0]]) if len(ok) else float(grid[-1])


def count_cusum(
    counts: np.ndarray,
    expected: np.ndarray,
    baseline: int = 42,
    shift: float = 0.3,
    arl0: float = 1000.0,
    reported_share: np.ndarray | None = None,
    direction: str = "up",
    min_events: int = 10,
    paths: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """CUSUM of counts against an in-control model, with its decision interval calibrated by simulation.

    Returns ``S_t / h`` (NaN within the baseline): an alarm is a value ≥ 1. ``counts`` are the incidents
    *known* (reported by as_of) per point, ``expected`` what they are compared with (the model's expected
    incidents, or trips for a flat rate) and ``reported_share`` the nowcast's share π_t of each point's
    incidents reported by as_of (1 when omitted): in control, K_t ~ Poisson(μ·E_t·π_t).

    Why not :func:`cusum`'s normal theory: on small counts (a city × type sees 0.4–7 incidents a day)
    the standardised residuals are skewed, the baseline's mean and over-dispersion are estimated from six
    weeks and then treated as known, and a day's rain moves some types for several days; each of these
    shortens the in-control run length, and together they made the city × type rule alarm ~100× its
    Siegmund nominal on no-drift simulations. Here:

    - the statistic is the quasi-Poisson log-likelihood ratio of a ``shift`` (e.g. +30%) in the level
      μ = observed ÷ expected, the optimal CUSUM for that shift (Lucas 1985), divided by the baseline's
      dispersion φ. It is computed on the *known* counts with means μ·E_t·π_t, the likelihood of what
      has been reported: a recent day counts for what is known of it. (The delay-corrected count K/π
      has variance ≈ E/π: on the last day, 30% reported, 3× Poisson, and a CUSUM evaluated every day at
      that noisiest point alarmed 10–20× its nominal rate.)
    - ``h`` is set by a parametric bootstrap of the whole procedure (Gandy & Kvaløy 2013): ``paths``
      series are simulated from the fitted in-control model (negative-binomial-like counts with the
      baseline's μ, φ and lag-1 autocorrelation, thinned by the reported shares), μ and φ are
      re-estimated on each simulated baseline, and ``h`` is the smallest level the simulated CUSUMs cross
      upward at most once per ``arl0`` points. The estimation error, skew, over-dispersion and reporting
      delay are therefore in the calibration, and the nominal false-alarm rate is 1/``arl0`` per point.

    ``direction`` "up", "down" or "both" (each side calibrated at 2·``arl0``; the larger ratio). A series
    whose baseline holds fewer than ``min_events`` incidents is not evaluated (all NaN): with a handful
    of incidents in six weeks the in-control level is unknown to within a factor of two, and every alarm
    would be about the baseline, not the present.
    """
    y = np.asarray(counts, dtype="float64")
    share = np.ones(len(y)) if reported_share is None else np.asarray(reported_share, dtype="float64")
    share = np.clip(np.nan_to_num(share, nan=1.0), 1e-3, 1.0)
    e = np.asarray(expected, dtype="float64")
    out = np.full(len(y), np.nan)
    if len(y) <= baseline or np.isfinite(y[:baseline]).sum() < 7:
        return out
    seen = e * share  # what is expected to be known by as_of
    model = fit_in_control(y[:baseline], seen[:baseline])
    if model.events < min_events:
        return out
    if paths is None:  # about 50 expected up-crossings at the calibrated h over the simulated points
        paths = max(1000, math.ceil(50 * arl0 / (len(y) - baseline)))
    rng = np.random.default_rng(seed)
    sim = _simulate_in_control(model, e, share, baseline, paths, rng)
    sim_level, sim_disp, _ = _fit_arrays(sim[:, :baseline], seen[:baseline])
    sim_level, sim_disp = sim_level[:, None], sim_disp[:, None]
    e_mon = np.where(np.isfinite(seen[baseline:]), seen[baseline:], np.nan)
    sides = {"up": [shift], "down": [-abs(shift)], "both": [shift, -abs(shift)]}[direction]
    ratio = np.zeros(len(y) - baseline)
    for side in sides:
        target = (1.0 / arl0) / len(sides)
        h = _calibrated_h(
            _cusum_path(_llr_increments(sim[:, baseline:], e_mon, sim_level, sim_disp, side)), target
        )
        h = max(h, abs(math.log1p(side)))  # never alarm on less than one incident's worth of evidence
        path = _cusum_path(_llr_increments(y[baseline:], e_mon, model.level, model.dispersion, side))
        ratio = np.maximum(ratio, path / max(h, 1e-9))
    out[baseline:] = ratio
    return out
