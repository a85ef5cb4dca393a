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
    t_code: np.ndarray, t_hour: np.ndarray, o_code: np.ndarray, o_hour: np.ndarray, n_cities: int
) -> np.ndarray:
    """Incidents per trip by UTC hour of day per city (cities × 24), shrunk to the city's mean rate."""
    trips_h = (
        np.bincount(t_code * 24 + t_hour, minlength=n_cities * 24).reshape(n_cities, 24).astype("float64")
    )
    valid = o_code >= 0
    inc_h = np.bincount(o_code[valid] * 24 + o_hour[valid], minlength=n_cities * 24).reshape(n_cities, 24)
    mean = (inc_h.sum(axis=1, keepdims=True) + 0.5) / np.maximum(trips_h.sum(axis=1, keepdims=True), 1.0)
    prior = 200.0  # trips' worth of the city's mean rate in each hour
    return (inc_h + prior * mean) / (trips_h + prior)


def incident_offset(incidents: pd.DataFrame, trips: pd.DataFrame) -> int:
    """Median time (ns) from a trip's request to its incident, over incidents linked to these trips."""
    if "trip_id" not in incidents.columns or "trip_id" not in trips.columns:
        return 0
    linked = (
        incidents[["trip_id", "occurred_at"]].dropna().merge(trips[["trip_id", "requested_at"]], on="trip_id")
    )
    if linked.empty:
        return 0
    return max(int((linked["occurred_at"] - linked["requested_at"]).median().value), 0)


def trip_reported_share(
    requested_at: pd.Series,
    incidents: pd.DataFrame,
    as_of: pd.Timestamp,
    trips: pd.DataFrame | None = None,
    lookback_days: int = 120,
) -> np.ndarray:
    """Expected share of each trip's incidents already reported at ``as_of`` (pooled delay distribution).

    For counts over trips scored by a model (a zone's window), weigh these shares by the trips'
    probabilities and divide the known count by the result: see :func:`corrected_counts`.
    """
    as_of = pd.Timestamp(as_of)
    delays = fit_delays(
        incidents, pd.Series("*", index=incidents.index), as_of, lookback_days, min_incidents=10**12
    )
    offset = incident_offset(incidents, trips) if trips is not None else 0
    t_ns = pd.to_datetime(requested_at, utc=True).to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return delays.reported_share("*|*", (as_of.value - t_ns - offset).astype("float64"))


def corrected_counts(
    known: np.ndarray, expected: np.ndarray, expected_reported: np.ndarray, level: float = 0.9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Delay-corrected counts and interval: ``expected_reported / expected`` is the share reported so far.

    ``expected`` is the sum of the trips' probabilities, ``expected_reported`` the same weighted by each
    trip's reported share (:func:`trip_reported_share`).
    """
    share = np.where(
        np.asarray(expected) > 0,
        np.asarray(expected_reported) / np.maximum(np.asarray(expected), 1e-300),
        1.0,
    )
    corrected, _, lo, hi = nb_interval(known, share, level)
    return corrected, lo, hi


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
    t_code, city_names = pd.factorize(trips["city"].astype("str"), sort=True)
    n_cities = len(city_names)
    inc = incidents[(incidents["severity"] >= min_severity) & incidents["city"].notna()]
    o_ns = inc["occurred_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    r_ns = inc["reported_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    o_code = pd.Index(city_names).get_indexer(inc["city"].astype("str"))
    type_code, type_names = pd.factorize(inc["type"].astype("str"), sort=True)
    hist_end = as_of.value - mature_days * DAY_NS
    hist_start = hist_end - 90 * DAY_NS
    in_hist = (o_ns >= hist_start) & (o_ns < hist_end) & (r_ns <= as_of.value)
    t_hist = (t_ns >= hist_start) & (t_ns < hist_end)
    occ_ns = t_ns + incident_offset(inc.loc[in_hist], trips.loc[t_hist])
    hours = _hour_profile(
        t_code[t_hist],
        (t_ns[t_hist] // HOUR_NS) % 24,
        o_code[in_hist],
        (o_ns[in_hist] // HOUR_NS) % 24,
        n_cities,
    )
    win = np.flatnonzero((occ_ns >= start.value) & (occ_ns < as_of.value))
    day_index = (occ_ns[win] - start.value) // DAY_NS
    n_days = int(day_index.max()) + 1 if len(win) else 0
    group = day_index * n_cities + t_code[win]  # (day, city) cell of each window trip
    n_groups = max(n_days * n_cities, 1)
    w = hours[t_code[win], (occ_ns[win] // HOUR_NS) % 24]
    elapsed = (as_of.value - occ_ns[win]).astype("float64")
    trips_per = np.bincount(group, minlength=n_groups)
    w_sum = np.bincount(group, weights=w, minlength=n_groups)
    # history: trips per (city, rain) and incidents per (city, rain, type). The type mix follows the
    # weather (accidents when it rains) while the champion predicts any incident; with the optional
    # ``rain`` column a cell's expected count of each type sums the wet and dry trips' type rates, so a
    # rainy week's extra accidents are expected rather than alarming the city × type rules.
    n_types = max(len(type_names), 1)
    wet = _trip_rain(trips)
    inc_wet = _incident_rain(inc, trips, wet)
    hist_trips = np.maximum(
        np.bincount(t_code[t_hist] * 2 + wet[t_hist], minlength=n_cities * 2).astype("float64"), 1.0
    ).reshape(n_cities, 2)
    ok = in_hist & (o_code >= 0)
    hist_inc = np.bincount(
        (o_code[ok] * 2 + inc_wet[ok]) * n_types + type_code[ok], minlength=n_cities * 2 * n_types
    ).reshape(n_cities, 2, n_types)
    wet_per = np.bincount(group, weights=wet[win], minlength=n_groups)
    # known incidents per (day, city, type)
    keep = (o_ns >= start.value) & (o_ns < as_of.value) & (r_ns <= as_of.value) & (o_code >= 0)
    k_group = ((o_ns[keep] - start.value) // DAY_NS) * n_cities + o_code[keep]
    market_of = np.array(
        [cities.market_of(c) if c in cities.registry() else "*" for c in city_names], dtype=object
    )
    m_code, m_names = pd.factorize(market_of)
    trip_market = m_code[t_code[win]]
    by_market = {str(m_names[m]): np.flatnonzero(trip_market == m) for m in range(len(m_names))}
    types = sorted(set(model.types()) | set(type_names))
    present = np.flatnonzero(trips_per > 0)
    parts = []
    for t in types:
        share = np.empty(len(win))
        for market, idx in by_market.items():
            share[idx] = model.reported_share(model.stratum(t, market), elapsed[idx])
        mean = np.bincount(group, weights=share * w, minlength=n_groups) / np.maximum(w_sum, 1e-300)
        tcode = int(np.searchsorted(type_names, t)) if t in set(type_names) else -1
        known = (
            np.bincount(k_group[type_code[keep] == tcode], minlength=n_groups)
            if tcode >= 0
            else np.zeros(n_groups)
        )
        city_idx = present % n_cities
        inc_of = hist_inc[city_idx, :, tcode] if tcode >= 0 else np.zeros((len(present), 2))
        rates = (inc_of + 0.5) / hist_trips[city_idx]  # (cells, dry/wet)
        n_wet = wet_per[present]
        expected = (trips_per[present] - n_wet) * rates[:, 0] + n_wet * rates[:, 1]
        parts.append(
            pd.DataFrame(
                {
                    "day": start + pd.to_timedelta(present // n_cities, unit="D"),
                    "city": np.asarray(city_names)[city_idx],
                    "type": t,
                    "trips": trips_per[present],
                    "reported_share": mean[present],
                    "weight": expected,
                    "known": known[present].astype("int64"),
                }
            )
        )
    cells = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["day", "city", "type", "trips", "reported_share", "weight", "known"])
    )
    return cells.sort_values(["day", "city", "type"], kind="stable").reset_index(drop=True)


def _trip_rain(trips: pd.DataFrame) -> np.ndarray:
    """1 for trips requested in the rain (optional contract column ``rain``), else 0."""
    if "rain" not in trips:
        return np.zeros(len(trips), dtype=np.int64)
    return trips["rain"].fillna(False).to_numpy(dtype=bool).astype(np.int64)


def _incident_rain(incidents: pd.DataFrame, trips: pd.DataFrame, wet: np.ndarray) -> np.ndarray:
    """Rain flag of each incident's trip (0 for incidents without a trip or without the column)."""
    if "rain" not in trips or "trip_id" not in incidents:
        return np.zeros(len(incidents), dtype=np.int64)
    at = pd.Index(trips["trip_id"]).get_indexer(incidents["trip_id"])
    return np.where(at >= 0, wet[np.maximum(at, 0)], 0)


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
