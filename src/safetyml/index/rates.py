"""Indicator values from counts: shrunk, imputed where a unit has no data, and redrawn for the Monte Carlo.

Imputation is explicit: a unit with no denominator for an indicator (a zone without merchants, say)
takes its group's rate (the empirical-Bayes prior mean: a zone its city's, a city its market's), and if
the whole group has none, the period's rate over all units. Each imputed cell is flagged and reported.
A *city* without data for a required indicator is an error by default (``impute_cities: error``): a
published city figure should not silently be its market's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from safetyml.index import shrink
from safetyml.index.config import IndexConfig, IndexDataError
from safetyml.index.indicators import EVENT_CELLS, THINNED, Panel


@dataclass
class Values:
    values: np.ndarray  # (U, I) on the display scale (e.g. per 10k trips)
    imputed: np.ndarray  # (U, I) bool
    report: pd.DataFrame  # indicator, units, imputed, how


def _shrink_flags(config: IndexConfig, panel: Panel) -> np.ndarray:
    return np.array([config.indicators[n].shrink for n in panel.indicators], dtype=bool)


def _fill_missing(values: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """NaN (a whole group without data) → the mean over the other units of the same period."""
    out = values.copy()
    for p in np.unique(periods):
        rows = periods == p
        block = out[..., rows, :]
        mean = np.nanmean(np.where(np.isnan(block), np.nan, block), axis=-2, keepdims=True)
        out[..., rows, :] = np.where(np.isnan(block), mean, block)
    return out


def _groups(panel: Panel, config: IndexConfig) -> tuple[np.ndarray, np.ndarray | None]:
    groups, pools = panel.group_codes(config.min_group_units)
    return groups, (pools if config.pool_periods else None)


def mixture_fit(panel: Panel, config: IndexConfig) -> shrink.MixturePosterior:
    """The two-Gamma prior's grid posterior for the panel's own counts, computed once per panel."""
    key = ("mixture", config.min_group_units, config.pool_periods)
    if key not in panel.cache:
        panel.cache[key] = shrink.mixture_posterior(panel.num, panel.den, *_groups(panel, config))
    return panel.cache[key]


def estimate(num: np.ndarray, den: np.ndarray, panel: Panel, config: IndexConfig) -> np.ndarray:
    """Rates for counts shaped (..., U, I): shrunk where the indicator says so, else raw; scaled.

    With ``prior: mixture`` the panel's own counts (U, I) get the two-Gamma posterior mean; counts
    redrawn for the Monte Carlo (the Poisson redraws of unshrunk shares) keep Marshall's estimator."""
    groups, pools = _groups(panel, config)
    if config.prior == "mixture" and num is panel.num:
        shrunk = shrink.mixture_shrink(num, den, groups, pools, mixture_fit(panel, config))
    else:
        shrunk = shrink.shrink(num, den, groups, pools)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(den > 0, np.nan_to_num(num) / np.where(den > 0, den, 1.0), np.nan)
    m, _ = shrink.prior(num, den, groups, pools)
    plain = np.where(np.isnan(raw), m, raw)
    rates = np.where(_shrink_flags(config, panel), shrunk, plain) * panel.scale
    return _fill_missing(rates, panel.period_codes()[0])


def nominal(panel: Panel, config: IndexConfig, config_file: str = "") -> Values:
    """The published values, with the imputation report; raises for a city without data."""
    missing = panel.den <= 0
    if panel.level == "city" and missing.any() and config.impute_cities == "error":
        unit, j = map(int, np.argwhere(missing)[0])
        name = panel.indicators[j]
        row = panel.units.iloc[unit]
        raise IndexDataError(
            f"{config_file or config.source}: field indicators.{name}: no data for city {row['city']!r} in "
            f"period {pd.Timestamp(row['period']):%Y-%m} ({name} has a zero denominator there). Remove the "
            f"indicator, set `required: false`, or set `impute_cities: group_rate` to use its market's rate."
        )
    values = estimate(panel.num, panel.den, panel, config)
    how = "shrinkage group rate (market, or all cities if too few)" if panel.level == "city" else "city rate"
    report = pd.DataFrame(
        {
            "level": panel.level,
            "indicator": panel.indicators,
            "units": len(panel.units),
            "imputed": missing.sum(axis=0).astype(int),
            "how": how,
        }
    )
    return Values(values, missing, report)


def event_gammas(panel: Panel, n: int, rng: np.random.Generator, joint: bool = True) -> np.ndarray:
    """The counts' part of ``n`` posterior draws (n, U, I): Gamma(y) per unit and indicator.

    With ``joint``, indicators that count the same incidents share it: one Gamma(y_c) per incident cell
    (severity × type, :data:`~safetyml.index.indicators.CELLS`) and each incident indicator sums its
    cells; riders with an incident take a Beta(y_r, y − y_r) share of the incidents' draw (a Gamma(y_r)
    again). Marginals are exactly Gamma(y); what changes is that an unlucky month for a zone's incidents
    moves its severe, violent and accident rates and its riders together, as the data do. Independent
    draws made a composite of 5 incident-based indicators look surer than its data (the index's rank
    intervals held the true index's rank for fewer zones than the incident rate's held the true risk).
    """
    y = np.where(panel.den > 0, np.nan_to_num(panel.num), 0.0)
    out = np.zeros((n, *y.shape))
    names = panel.indicators
    shared = joint and panel.cells is not None
    cells = np.nan_to_num(panel.cells) if shared else None
    cell_draws = rng.gamma(np.broadcast_to(cells, (n, *cells.shape))) if shared else None
    for j, name in enumerate(names):
        if shared and name in EVENT_CELLS:
            out[..., j] = cell_draws[..., EVENT_CELLS[name]].sum(axis=-1)
        elif shared and name in THINNED and THINNED[name] in names:
            total = cells.sum(axis=-1)
            part = np.minimum(y[:, j], total)
            rest = np.maximum(total - part, 0.0)
            share = np.where(
                (part > 0) & (rest > 0),
                rng.beta(np.maximum(part, 1e-9), np.maximum(rest, 1e-9), size=(n, len(part))),
                (part > 0).astype(float),
            )
            out[..., j] = share * cell_draws[..., EVENT_CELLS[THINNED[name]]].sum(axis=-1)
        else:
            out[..., j] = rng.gamma(np.broadcast_to(y[:, j], (n, len(y))))
    return out


def shared_uniforms(panel: Panel, n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniforms (n, U, I) for the prior's part of each draw: one per draw and unit shared by every
    incident-based indicator (their true rates rise and fall together with the place's risk); NaN for
    the others (drawn independently)."""
    out = np.full((n, *panel.num.shape), np.nan)
    family = [j for j, name in enumerate(panel.indicators) if name in EVENT_CELLS or name in THINNED]
    if family:
        out[..., family] = rng.random((n, panel.num.shape[0], 1))
    return out


def draws(panel: Panel, config: IndexConfig, mode: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` redraws of every value (n, U, I): from the posterior, or Poisson-resampled counts re-shrunk."""
    if mode == "none":
        return np.broadcast_to(estimate(panel.num, panel.den, panel, config), (n, *panel.num.shape)).copy()
    counts = np.nan_to_num(panel.num)
    if mode == "poisson":
        redrawn = rng.poisson(np.broadcast_to(counts, (n, *counts.shape))).astype("float64")
        redrawn = np.where(panel.resample, redrawn, counts)
        return estimate(np.where(panel.den > 0, redrawn, np.nan), panel.den, panel, config)
    groups, pools = _groups(panel, config)
    data = event_gammas(panel, n, rng, config.uncertainty.joint_events)
    u = shared_uniforms(panel, n, rng) if config.uncertainty.joint_prior else None
    if config.prior == "mixture":
        fit = mixture_fit(panel, config)
        rates = shrink.mixture_draws(panel.num, panel.den, groups, n, rng, pools, fit, data, u)
    else:
        rates = shrink.posterior_draws(panel.num, panel.den, groups, n, rng, pools, data=data, prior_u=u)
    rates = rates * panel.scale
    # indicators that are not shrunk (shares) or not counts: Poisson around the observed count instead
    plain = ~(_shrink_flags(config, panel) & panel.resample)
    if plain.any():
        cols = np.flatnonzero(plain)
        sub = Panel(
            panel.level,
            panel.units,
            [panel.indicators[j] for j in cols],
            panel.num[:, cols],
            panel.den[:, cols],
            panel.scale[cols],
            panel.resample[cols],
        )
        rates[..., cols] = draws(sub, config, "poisson", n, rng)
    return _fill_missing(rates, panel.period_codes()[0])
