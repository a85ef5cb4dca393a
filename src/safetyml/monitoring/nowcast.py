"""Nowcast of recent incidents: how many of each recent day's incidents are still to be reported.

Incidents are reported late, so a count made at ``as_of`` misses part of the last days. The reporting
delay distribution ``F(d) = P(delay ≤ d)`` is estimated per (incident type, market) from incidents that
occurred in the last ``lookback_days``. Those are *right-truncated*: an incident that occurred at ``t``
is seen only if its delay is ≤ ``as_of − t``. The estimator is the reverse-time product-limit estimator
for truncated data (Lynden-Bell 1971; the daily "chain ladder" of actuaries), written here in numpy
because neither scipy nor statsmodels has it: with delays binned, the reverse hazard of bin ``k`` is
``#{delay in k} / #{delay ≤ k and truncation ≥ k}`` and ``F(k) = Π_{j>k} (1 − hazard_j)``.

For a cell (day, city, type) the expected share already reported is ``π = mean F(as_of − t)`` over its
trips' request times ``t`` (the exposure). A group of cells (a day and city, all types) has the share
of its cells weighted by their expected counts. With ``K`` incidents known the corrected count is
``K / π`` and, if the group's incidents are Poisson with an unknown mean (Jeffreys prior), the
still-to-come count given ``K`` is negative binomial with ``r = K + ½`` and success probability ``π``,
whose mid-p quantiles give the interval of the eventual count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from safetyml.errors import SafetymlError

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS


class NowcastError(SafetymlError, ValueError):
    """Input to the nowcast is unusable (no incidents to learn delays from, missing columns)."""


@dataclass
class DelayModel:
    """Reporting-delay CDFs on a grid of ``resolution`` hours, per stratum (``type|market``) and pooled."""

    resolution_hours: float
    max_delay_days: float
    cdf: dict[str, np.ndarray]  # stratum -> F at the end of each bin
    incidents: dict[str, int]

    def stratum(self, incident_type: str, market: str) -> str:
        for key in (f"{incident_type}|{market}", f"{incident_type}|*", f"*|{market}", "*|*"):
            if key in self.cdf:
                return key
        raise NowcastError("delay model has no pooled stratum '*|*'")

    def reported_share(self, stratum: str, elapsed_ns: np.ndarray) -> np.ndarray:
        """F(elapsed): share of incidents reported within ``elapsed`` (ns) of occurring (linear in a bin)."""
        cdf = self.cdf[stratum]
        step = self.resolution_hours * HOUR_NS
        grid = np.arange(len(cdf) + 1, dtype="float64") * step
        return np.interp(np.asarray(elapsed_ns, dtype="float64"), grid, np.concatenate([[0.0], cdf]))

    def types(self) -> list[str]:
        """Incident types with a fitted stratum of their own."""
        return sorted({key.split("|")[0] for key in self.cdf} - {"*"})

    def quantile(self, stratum: str, q: float) -> float:
        """Delay (days) by which a share ``q`` of incidents is reported."""
        k = int(np.searchsorted(self.cdf[stratum], q))
        return (k + 1) * self.resolution_hours / 24


def truncated_delay_cdf(
    delay_ns: np.ndarray, truncation_ns: np.ndarray, step_ns: float, bins: int
) -> np.ndarray:
    """Reverse-time product-limit estimate of P(delay ≤ end of bin k) from right-truncated delays.

    ``delay_ns[i] ≤ truncation_ns[i]`` is the time from occurrence to as_of; delays past the last bin are
    treated as never reported (the distribution is conditional on delay < bins·step).
    """
    d = np.floor(np.asarray(delay_ns, dtype="float64") / step_ns).astype(np.int64)
    tau = np.floor(np.asarray(truncation_ns, dtype="float64") / step_ns).astype(np.int64)
    keep = d < bins
    d, tau = d[keep], np.minimum(tau[keep], bins - 1)
    events = np.bincount(d, minlength=bins).astype("float64")  # A_k
    # at risk in reverse time at k: delay ≤ k and truncation ≥ k  =  #{d ≤ k} − #{tau < k}
    cum_d = np.cumsum(events)
    cum_tau_before = np.concatenate(
        [[0.0], np.cumsum(np.bincount(tau, minlength=bins).astype("float64"))[:-1]]
    )
    at_risk = cum_d - cum_tau_before
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(at_risk > 0, events / at_risk, 0.0)
    # F(k) = Π_{j>k} (1 − h_j): product over later bins, computed from the end
    survive = np.concatenate([np.cumprod((1.0 - hazard)[::-1])[::-1][1:], [1.0]])
    return np.clip(survive, 0.0, 1.0)


def fit_delays(
    incidents: pd.DataFrame,
    market_of: pd.Series,
    as_of: pd.Timestamp,
    lookback_days: int = 120,
    max_delay_days: float = 60.0,
    resolution_hours: float = 1.0,
    min_incidents: int = 150,
) -> DelayModel:
    """Delay CDFs per (type, market), per type, per market and pooled, from incidents known at ``as_of``.

    ``market_of`` gives each incident's market (index aligned with ``incidents``). Strata with fewer than
    ``min_incidents`` known incidents are not fitted (the lookup falls back to a coarser stratum).
    """
    for col in ("occurred_at", "reported_at", "type"):
        if col not in incidents.columns:
            raise NowcastError(f"nowcast: table 'incidents' has no column {col!r}")
    as_of_ns = pd.Timestamp(as_of).value
    occurred = incidents["occurred_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    reported = incidents["reported_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    window = (occurred >= as_of_ns - lookback_days * DAY_NS) & (reported <= as_of_ns) & (occurred < as_of_ns)
    if window.sum() < 10:
        raise NowcastError(
            f"nowcast: only {int(window.sum())} incident(s) occurred in the {lookback_days} days before "
            f"{as_of} and were reported by then; at least 10 are needed to learn reporting delays"
        )
    delay = (reported - occurred)[window]
    trunc = (as_of_ns - occurred)[window]
    types = incidents["type"].astype("str").to_numpy()[window]
    markets = market_of.astype("str").to_numpy()[window]
    step = resolution_hours * HOUR_NS
    bins = int(np.ceil(max_delay_days * 24 / resolution_hours))
    strata = {"*|*": np.ones(len(delay), dtype=bool)}
    for t in np.unique(types):
        strata[f"{t}|*"] = types == t
        for m in np.unique(markets):
            strata[f"{t}|{m}"] = (types == t) & (markets == m)
    for m in np.unique(markets):
        strata[f"*|{m}"] = markets == m
    cdf, counts = {}, {}
    for key, mask in strata.items():
        n = int(mask.sum())
        if key != "*|*" and n < min_incidents:
            continue
        cdf[key] = truncated_delay_cdf(delay[mask], trunc[mask], step, bins)
        counts[key] = n
    return DelayModel(resolution_hours, max_delay_days, cdf, counts)


def nb_interval(
    known: np.ndarray, share: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(corrected count, variance of the still-to-come, lower, upper) of the eventual count.

    ``known`` incidents reported, ``share`` the expected share reported by now. The point estimate is
    ``known / share`` (unbiased: E[known] = λ·share); the interval adds the quantiles of the still-to-come
    count, negative binomial with ``r = known + ½`` (Jeffreys prior on λ) and success probability ``share``.
    """

    k = np.asarray(known, dtype="float64")
    pi = np.clip(np.asarray(share, dtype="float64"), 1e-6, 1.0)
    r = k + 0.5
    pending = pi < 1.0
    alpha = 1.0 - level
    corrected = k / pi
    var = np.where(pending, r * (1 - pi) / pi**2, 0.0)
    lo = k + np.where(pending, _mid_p_bound(alpha / 2, r, pi, lower=True), 0.0)
    hi = k + np.where(pending, _mid_p_bound(1 - alpha / 2, r, pi, lower=False), 0.0)
    return corrected, var, lo, hi


def _mid_p_bound(q: float, r: np.ndarray, p: np.ndarray, lower: bool) -> np.ndarray:
    """Mid-p quantile of a negative binomial: plain quantiles of a discrete law over-cover, mid-p do not.

    With ``u`` the plain quantile (smallest u with F(u) ≥ q) and ``mid(u) = F(u − 1) + pmf(u)/2``:
    the lower bound is ``u`` if ``mid(u) ≥ q`` else ``u + 1``; the upper bound is ``u`` if
    ``mid(u) ≤ q`` else ``u − 1``.
    """
    from scipy import stats

    u = stats.nbinom.ppf(q, r, p)
    mid = stats.nbinom.cdf(u - 1, r, p) + 0.5 * stats.nbinom.pmf(u, r, p)
    if lower:
        return np.where(mid >= q, u, u + 1)
    return np.maximum(np.where(mid <= q, u, u - 1), 0.0)


def _hour_profile(
    t_ns: np.ndarray, city: np.ndarray, o_ns: np.ndarray, inc_city: np.ndarray, lo: int, hi: int
) -> dict[str, np.ndarray]:
    """Incidents per trip by UTC hour of day per city over [lo, hi), shrunk to the city's mean rate."""
    out = {}
    trip_hour = (t_ns // HOUR_NS) % 24
    inc_hour = (o_ns // HOUR_NS) % 24
    in_trips = (t_ns >= lo) & (t_ns < hi)
    in_inc = (o_ns >= lo) & (o_ns < hi)
    for c in np.unique(city):
        trips_h = np.bincount(trip_hour[in_trips & (city == c)], minlength=24).astype("float64")
        inc_h = np.bincount(inc_hour[in_inc & (inc_city == c)], minlength=24).astype("float64")
        mean = (inc_h.sum() + 0.5) / max(trips_h.sum(), 1.0)
        prior = 200.0  # trips' worth of the city's mean rate in each hour
        out[str(c)] = (inc_h + prior * mean) / (trips_h + prior)
    return out


def nowcast_cells(
    trips: pd.DataFrame,
    incidents: pd.DataFrame,
    as_of: pd.Timestamp,
    model: DelayModel,
    days: int = 28,
    min_severity: int = 1,
    mature_days: int = 30,
) -> pd.DataFrame:
    """Known incidents and the expected reported share per (day, city, type) for the ``days`` before as_of.

    ``trips`` needs requested_at and city (the exposure); ``incidents`` occurred_at, reported_at, type,
    severity and ``city`` (see :func:`incident_cities`). Incidents happen when trips do, but not evenly:
    each trip's ``F(as_of − t)`` is weighted by its city's incident rate at that hour of day, and ``t`` is
    its request time plus the median time from request to incident, both from a mature history (the 90
    days that ended ``mature_days`` before as_of). ``weight`` is the cell's expected incident count from
    that history (trips × the type's rate), which weighs the types' shares when cells are summed. Days are
    UTC calendar days of occurrence; the last is partial when as_of is not midnight.
    """
    from safetyml import cities

    as_of = pd.Timestamp(as_of)
    start = (as_of - pd.Timedelta(days=days)).floor("D")
    t_ns = trips["requested_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    city_all = trips["city"].astype("str").to_numpy()
    inc = incidents[(incidents["severity"] >= min_severity) & incidents["city"].notna()]
    o_ns = inc["occurred_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    r_ns = inc["reported_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    inc_city = inc["city"].astype("str").to_numpy()
    inc_type = inc["type"].astype("str").to_numpy()
    hist_end = as_of.value - mature_days * DAY_NS
    hist_start = hist_end - 90 * DAY_NS
    in_hist = (o_ns >= hist_start) & (o_ns < hist_end) & (r_ns <= as_of.value)
    # median time from request to incident, over the history's incidents linked to a trip
    offset = 0
    if "trip_id" in inc.columns and "trip_id" in trips.columns:
        linked = (
            inc.loc[in_hist, ["trip_id", "occurred_at"]]
            .dropna()
            .merge(trips[["trip_id", "requested_at"]], on="trip_id")
        )
        if len(linked):
            offset = int((linked["occurred_at"] - linked["requested_at"]).median().value)
    occ_ns = t_ns + max(offset, 0)
    in_window = (occ_ns >= start.value) & (occ_ns < as_of.value)
    hours = _hour_profile(t_ns, city_all, o_ns[in_hist], inc_city[in_hist], hist_start, hist_end)
    tr = pd.DataFrame(
        {
            "day": pd.to_datetime(occ_ns[in_window]).floor("D").tz_localize("UTC"),
            "city": city_all[in_window],
            "elapsed": as_of.value - occ_ns[in_window],
        }
    )
    hour = (occ_ns[in_window] // HOUR_NS) % 24
    flat = np.ones(24)
    tr["w"] = (
        [hours.get(c, flat)[h] for c, h in zip(tr["city"].to_numpy(), hour, strict=True)] if len(tr) else []
    )
    keep = (o_ns >= start.value) & (o_ns < as_of.value) & (r_ns <= as_of.value)
    known = (
        pd.DataFrame(
            {
                "day": pd.to_datetime(o_ns[keep]).floor("D").tz_localize("UTC"),
                "city": inc_city[keep],
                "type": inc_type[keep],
            }
        )
        .groupby(["day", "city", "type"])
        .size()
        .rename("known")
    )
    # historical rate per (city, type): incidents per trip over the mature history
    hist_trips = pd.Series(city_all[(t_ns >= hist_start) & (t_ns < hist_end)]).value_counts()
    hist_inc = pd.DataFrame({"city": inc_city[in_hist], "type": inc_type[in_hist]}).value_counts()
    types = sorted(set(model.types()) | set(inc_type))
    city_market = {c: (cities.market_of(c) if c in cities.registry() else "*") for c in pd.unique(tr["city"])}
    tr["market"] = tr["city"].map(city_market)
    base = tr.groupby(["day", "city"], sort=True).size().rename("trips").reset_index()
    weight_sum = tr.groupby(["day", "city"], sort=True)["w"].sum().to_numpy()
    parts = []
    for t in types:
        # one F(elapsed) pass per delay stratum, then the incident-weighted mean per (day, city)
        share = np.empty(len(tr))
        for market, idx in tr.groupby("market").indices.items():
            share[idx] = model.reported_share(model.stratum(t, market), tr["elapsed"].to_numpy()[idx])
        weighted = tr.assign(_s=share * tr["w"].to_numpy()).groupby(["day", "city"], sort=True)["_s"].sum()
        part = base.assign(type=t, reported_share=weighted.to_numpy() / np.maximum(weight_sum, 1e-300))
        rate = part["city"].map(
            lambda c, t=t: (float(hist_inc.get((c, t), 0)) + 0.5) / max(float(hist_trips.get(c, 0)), 1.0)
        )
        part["weight"] = part["trips"] * rate.to_numpy(dtype="float64")
        parts.append(part)
    cells = pd.concat(parts, ignore_index=True).sort_values(["day", "city", "type"], kind="stable")
    cells = cells[["day", "city", "type", "trips", "reported_share", "weight"]].reset_index(drop=True)
    cells = cells.merge(known.reset_index(), on=["day", "city", "type"], how="left")
    cells["known"] = cells["known"].fillna(0).astype("int64")
    return cells


def aggregate(cells: pd.DataFrame, by: list[str], level: float = 0.9) -> pd.DataFrame:
    """Sum cells to ``by`` and nowcast each group: known, corrected, interval, rates per 10k trips.

    The group's reported share is its cells' shares weighted by their expected counts, and the
    negative-binomial interval of :func:`nb_interval` is applied once per group (not per cell, which
    would add the prior's half count once per cell).
    """
    frame = cells.assign(_wshare=cells["weight"] * cells["reported_share"])
    out = frame.groupby(by, sort=True).agg(
        known=("known", "sum"), weight=("weight", "sum"), _wshare=("_wshare", "sum")
    )
    # trips are repeated once per type in the cells: count them once per (day, city)
    exposure = cells.drop_duplicates(["day", "city"]).groupby(by, sort=True)["trips"].sum()
    out["trips"] = exposure.reindex(out.index).fillna(0).astype("int64")
    out["reported_share"] = np.where(out["weight"] > 0, out["_wshare"] / out["weight"].clip(lower=1e-12), 1.0)
    corrected, var, lo, hi = nb_interval(out["known"].to_numpy(), out["reported_share"].to_numpy(), level)
    out["corrected"] = corrected
    out["expected_unreported"] = corrected - out["known"].to_numpy()
    out["corrected_var"] = var
    out["lower"] = lo
    out["upper"] = hi
    trips = np.maximum(out["trips"].to_numpy(dtype="float64"), 1.0)
    for col in ("known", "corrected", "lower", "upper"):
        out[f"{col}_per_10k"] = out[col] / trips * 1e4
    return out.drop(columns=["_wshare"]).reset_index()


def incident_cities(
    incidents: pd.DataFrame, trips: pd.DataFrame, riders: pd.DataFrame, merchants: pd.DataFrame
) -> pd.Series:
    """City of each incident: its trip's city, else its rider's, else its merchant's (None if none)."""

    def lookup(keys: pd.Series, table: pd.DataFrame, key: str) -> pd.Series:
        mapping = table.drop_duplicates(key).set_index(key)["city"].astype("object")
        return keys.astype("object").map(mapping)

    city = lookup(incidents["trip_id"], trips, "trip_id")
    city = city.fillna(lookup(incidents["rider_id"], riders, "rider_id"))
    city = city.fillna(lookup(incidents["merchant_id"], merchants, "merchant_id"))
    return city.where(city.notna(), None)
