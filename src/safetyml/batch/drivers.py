"""Zone drivers: the feature groups whose SHAP makes a flagged zone's trips riskier than its city's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from safetyml.batch.zone_config import ZoneConfig

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet
    from safetyml.model import RiskModel


@dataclass
class DriverInputs:
    """What zone drivers need: per-trip SHAP (n, p) in log-odds, the model's features and its group plan."""

    phi: np.ndarray
    features: list[str]
    groups: list[str]
    members: list[np.ndarray]  # feature indices of each group
    describe: list[Any]  # per feature: value -> sentence
    values: pd.DataFrame  # the model's features of each trip (n rows)


def zone_drivers(
    zones: pd.DataFrame,
    members: pd.DataFrame,
    model: RiskModel,
    frame: pd.DataFrame,
    fs: FeatureSet,
    config: ZoneConfig,
) -> pd.Series:
    """Drivers of flagged (and ``driver_tiers``) zones from the SHAP of a seeded sample of window trips.

    TreeSHAP costs ~100× a prediction, so it runs on at most ``driver_sample`` trips per zone and
    ``baseline_sample`` trips per city-band for the baseline, not on every trip of the window.
    """
    wanted = zones["flagged"].astype(bool) | zones["tier"].isin(config.driver_tiers)
    empty = pd.Series([[] for _ in range(len(zones))], index=zones.index, dtype=object)
    if not wanted.any() or len(members) == 0:
        return empty
    rng = np.random.default_rng(config.seed)
    keys = ["city", "band", "h3"]
    want_keys = pd.MultiIndex.from_frame(zones.loc[wanted, keys].astype("str"))
    in_wanted = pd.MultiIndex.from_frame(members[keys].astype("str")).isin(want_keys)
    shuffled = members.assign(_r=rng.random(len(members)), _w=in_wanted)
    zone_sample = (
        shuffled[shuffled["_w"]].sort_values("_r").groupby(keys, sort=False).head(config.driver_sample)
    )
    base_sample = (
        shuffled.sort_values("_r").groupby(["city", "band"], sort=False).head(config.baseline_sample)
    )
    baseline = base_sample.assign(h3="__baseline__")
    sample = pd.concat([zone_sample, baseline], ignore_index=True)
    rows = np.unique(sample["row"].to_numpy())
    position = np.full(len(frame), -1)
    position[rows] = np.arange(len(rows))
    inputs = driver_inputs(model, frame.iloc[rows].reset_index(drop=True), fs)
    sample = sample.assign(row=position[sample["row"].to_numpy()]).drop(columns=["_r", "_w"])
    is_base = (sample["h3"] == "__baseline__").to_numpy()
    return drivers_from_shap(zones, sample, inputs, config, wanted, baseline_mask=is_base)


def drivers_from_shap(
    zones: pd.DataFrame,
    members: pd.DataFrame,
    inputs: DriverInputs,
    config: ZoneConfig,
    wanted: pd.Series,
    baseline_mask: np.ndarray | None = None,
) -> pd.Series:
    """Per zone row, the top feature groups raising its trips' risk above its city-band's (a list of dicts).

    ``members`` rows index ``inputs.phi``/``inputs.values``. A group's push is the mean over the zone's trips
    of the summed SHAP of its features, minus the same mean over all trips of the city and band: what
    makes *this place* riskier than the city. The sentence is the strongest member's description at the
    zone's typical value (mean, or most common level). ``baseline_mask`` picks the membership rows that
    make the city-band baselines (default: all of them).
    """
    result = pd.Series([[] for _ in range(len(zones))], index=zones.index, dtype=object)
    if not wanted.any() or inputs.phi.size == 0:
        return result
    p = len(inputs.features)
    onehot = np.zeros((p, len(inputs.groups)))
    for g, idx in enumerate(inputs.members):
        onehot[idx, g] = 1.0
    key_cols = ["city", "band", "h3"]
    rows = members["row"].to_numpy()
    phi_long = inputs.phi[rows]
    # city-band baselines (trip-weighted over memberships)
    cb = members[["city", "band"]].astype("str").agg("|".join, axis=1).to_numpy()
    cb_codes, cb_index = pd.factorize(cb)
    in_base = (
        np.ones(len(members), dtype=bool) if baseline_mask is None else np.asarray(baseline_mask, dtype=bool)
    )
    counts = np.bincount(cb_codes[in_base], minlength=len(cb_index)).astype("float64")
    base = np.zeros((len(cb_index), p))
    np.add.at(base, cb_codes[in_base], phi_long[in_base])
    base /= np.maximum(counts, 1)[:, None]
    # zone keys of memberships, matched to the wanted zone rows
    key_long = pd.MultiIndex.from_frame(members[key_cols].astype("str"))
    want_rows = zones.index[wanted.to_numpy()]
    key_want = pd.MultiIndex.from_frame(zones.loc[want_rows, key_cols].astype("str"))
    pos = key_want.get_indexer(key_long)
    keep = pos >= 0
    if not keep.any():
        return result
    sums = np.zeros((len(want_rows), p))
    np.add.at(sums, pos[keep], phi_long[keep])
    n_z = np.bincount(pos[keep], minlength=len(want_rows)).astype("float64")
    mean = sums / np.maximum(n_z, 1)[:, None]
    zone_cb = pd.Index(cb_index).get_indexer(
        zones.loc[want_rows, ["city", "band"]].astype("str").agg("|".join, axis=1)
    )
    delta = mean - base[zone_cb]
    grouped = delta @ onehot
    values = inputs.values
    for i, zone_row in enumerate(want_rows):
        order = np.argsort(-grouped[i], kind="stable")[: config.drivers_k]
        trip_rows = rows[keep][pos[keep] == i]
        drivers = []
        for g in order:
            if grouped[i, g] <= 0:
                break
            idx = inputs.members[g]
            j = int(idx[np.argmax(delta[i, idx])])
            value = _typical(values.iloc[trip_rows, j]) if len(trip_rows) else None
            drivers.append(
                {
                    "group": inputs.groups[g],
                    "feature": inputs.features[j],
                    "value": None if value is None else str(value),
                    "contribution_logodds": round(float(grouped[i, g]), 4),
                    "description": str(inputs.describe[j](value)),
                }
            )
        result.at[zone_row] = drivers
    return result


def _typical(values: pd.Series) -> Any:
    """The mean of a numeric column (rounded), or the most common level of a categorical one."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        mean = pd.to_numeric(values, errors="coerce").mean()
        return None if pd.isna(mean) else round(float(mean), 4)
    mode = values.dropna().astype("str").mode()
    return None if mode.empty else str(mode.iloc[0])


def driver_inputs(model: RiskModel, frame: pd.DataFrame, fs: FeatureSet) -> DriverInputs:
    """SHAP of every window trip (LightGBM's exact TreeSHAP) and the model's feature groups."""
    from safetyml.explain.reasons import reason_plan
    from safetyml.explain.shap_values import explain_logodds

    contributions = explain_logodds(model, frame)
    plan = reason_plan(model, fs)
    return DriverInputs(
        phi=contributions[:, : len(model.features)],
        features=list(model.features),
        groups=list(plan.groups),
        members=list(plan.members),
        describe=list(plan.describe),
        values=frame.loc[:, list(model.features)],
    )
