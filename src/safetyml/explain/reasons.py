"""Reason codes: the few feature groups that pushed one score up (or down), with values and sentences.

Features computed from one source over several windows (``rider_incidents_7d``, ``rider_incidents_30d``)
share a *group* in the feature definitions; their contributions are summed so three reasons never say the
same thing three times. A group's reason shows the value and sentence of its strongest member (the one
contributing most in the group's direction).

Hot path: serving calls :func:`reason_codes` once per request, so everything that depends only on the
model and the feature set (groups, one-hot matrix, sentence templates) is built once and cached, and the
per-row work is a few small numpy operations. Batches are vectorised; :func:`reason_table` skips the
per-reason Python objects altogether for millions of rows.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from safetyml.explain.probability import probability_scale
from safetyml.explain.shap_values import _SMALL, explain_logodds, small_rows
from safetyml.model import RiskModel
from safetyml.values import jsonable

if TYPE_CHECKING:
    from safetyml.features.definitions import FeatureSet

Direction = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason behind a score: a feature group, its strongest member's value and sentence, its push."""

    feature: str
    group: str
    value: Any
    contribution_logodds: float
    contribution_probability: float
    direction: Direction
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    model_dump = to_dict  # the pydantic spelling, for callers that treat reasons like pydantic models


def _format_value(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, float):
        return (
            f"{value:,.0f}"
            if value.is_integer()
            else f"{value:,.3g}"
            if abs(value) < 1000
            else f"{value:,.0f}"
        )
    return str(value)


@dataclass
class _Plan:
    """Everything about a (model, feature set) pair that reason codes need, computed once."""

    features: list[str]
    group_of: np.ndarray  # (p,) group index of each feature
    groups: list[str]
    members: list[np.ndarray]  # feature indices of each group
    onehot: np.ndarray  # (p, g)
    describe: list[Callable[[Any], str]]  # per feature


def _definition(fs: FeatureSet, name: str) -> Any:
    if fs is None:
        return None
    try:
        return fs.get(name)
    except (KeyError, LookupError, ValueError, AttributeError):
        return None


def _describer(name: str, definition: Any) -> Callable[[Any], str]:
    generic = name.replace("_", " ")

    def fallback(value: Any) -> str:
        return f"{generic}: {_format_value(value)}"

    if definition is None or not hasattr(definition, "describe"):
        return fallback

    def describe(value: Any) -> str:
        try:
            return str(definition.describe(value))
        except Exception:  # a template that cannot format this value must not break a score
            return fallback(value)

    return describe


def _build_plan(model: RiskModel, fs: FeatureSet) -> _Plan:
    groups: list[str] = []
    index: dict[str, int] = {}
    group_of = np.empty(len(model.features), dtype=np.int64)
    describe = []
    for j, name in enumerate(model.features):
        definition = _definition(fs, name)
        group = str(getattr(definition, "group", None) or name)
        if group not in index:
            index[group] = len(groups)
            groups.append(group)
        group_of[j] = index[group]
        describe.append(_describer(name, definition))
    onehot = np.zeros((len(model.features), len(groups)), dtype="float64")
    onehot[np.arange(len(model.features)), group_of] = 1.0
    members = [np.flatnonzero(group_of == g) for g in range(len(groups))]
    return _Plan(list(model.features), group_of, groups, members, onehot, describe)


# id(model) -> (weakref to model, id(fs), plan); RiskModel is an unhashable dataclass: no WeakKeyDictionary.
_PLANS: dict[int, tuple[Any, int, _Plan]] = {}


def reason_plan(model: RiskModel, fs: FeatureSet) -> _Plan:
    """The cached grouping plan for this model and feature set."""
    entry = _PLANS.get(id(model))
    if (
        entry is not None
        and entry[0]() is model
        and entry[1] == id(fs)
        and entry[2].features == model.features
    ):
        return entry[2]
    plan = _build_plan(model, fs)
    key = id(model)
    _PLANS[key] = (weakref.ref(model, lambda _ref, key=key: _PLANS.pop(key, None)), id(fs), plan)
    return plan


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row, largest first."""
    n, g = values.shape
    idx = np.tile(np.arange(g), (n, 1)) if k >= g else np.argpartition(-values, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(values, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


@dataclass
class _Chosen:
    """Chosen reasons as arrays of shape (n, k): group, strongest feature, contributions; valid mask."""

    group: np.ndarray
    feature: np.ndarray
    logodds: np.ndarray
    probability: np.ndarray
    valid: np.ndarray
    direction: Direction


def _choose(
    plan: _Plan, phi: np.ndarray, grouped: np.ndarray, scale: np.ndarray, k: int, sign: int
) -> _Chosen:
    k = max(0, min(k, grouped.shape[1]))
    group = _top(sign * grouped, k) if k else np.zeros((len(grouped), 0), dtype=np.int64)
    logodds = np.take_along_axis(grouped, group, axis=1)
    valid = sign * logodds > 0
    feature = np.empty_like(group)
    for g, members in enumerate(plan.members):  # strongest member of each chosen group, in its direction
        hit = group == g
        if not hit.any():
            continue
        if len(members) == 1:
            feature[hit] = members[0]
            continue
        rows = np.nonzero(hit)[0]
        feature[hit] = members[np.argmax(sign * phi[rows][:, members], axis=1)]
    return _Chosen(group, feature, logodds, logodds * scale[:, None], valid, "up" if sign > 0 else "down")


def _value_getter(model: RiskModel, X: Any) -> Callable[[int, int], Any]:
    """(row, feature index) -> the input's value, reading each needed column once."""
    if isinstance(X, Mapping):
        return lambda _i, j: X[model.features[j]]
    if len(X) <= _SMALL:
        rows = small_rows(model, X)
        return lambda i, j: rows[i][j]
    columns: dict[int, np.ndarray] = {}

    def get(i: int, j: int) -> Any:
        col = columns.get(j)
        if col is None:
            col = columns[j] = X[model.features[j]].to_numpy()
        return col[i]

    return get


def _compute(
    model: RiskModel, X: Any, fs: FeatureSet, k: int, include_negative: bool, contributions: np.ndarray | None
) -> tuple[_Plan, list[_Chosen]]:
    plan = reason_plan(model, fs)
    contrib = explain_logodds(model, X) if contributions is None else np.atleast_2d(contributions)
    p = len(plan.features)
    if contrib.shape[1] != p + 1:
        raise ValueError(
            f"contributions have {contrib.shape[1]} columns; the {model.task} model has {p} features + 1 base"
        )
    phi = contrib[:, :p]
    grouped = phi @ plan.onehot
    scale, _, _ = probability_scale(model, contrib)
    chosen = [_choose(plan, phi, grouped, scale, k, +1)]
    if include_negative:
        chosen.append(_choose(plan, phi, grouped, scale, k, -1))
    return plan, chosen


def reason_codes(
    model: RiskModel,
    X: pd.DataFrame | Mapping[str, Any],
    fs: FeatureSet,
    k: int = 3,
    include_negative: bool = False,
    contributions: np.ndarray | None = None,
) -> list[list[Reason]]:
    """Per row, the top ``k`` feature groups that pushed the score up (then, optionally, the top ``k`` down).

    ``X`` is a DataFrame (or one row as a mapping) holding the model's features; ``fs`` the feature set
    (``fs.get(name)`` gives a definition with ``group`` and ``describe(value)``; None gives generic
    sentences). Pass ``contributions`` (from :func:`~safetyml.explain.shap_values.explain_logodds` or
    ``model.contributions``) when already computed. Groups with no push in that direction are left out,
    so a row can have fewer than ``k`` reasons.
    """
    plan, chosen = _compute(model, X, fs, k, include_negative, contributions)
    get = _value_getter(model, X)
    n = chosen[0].group.shape[0]
    out: list[list[Reason]] = [[] for _ in range(n)]
    for part in chosen:
        rows, slots = np.nonzero(part.valid)  # row-major: reasons of a row stay in rank order
        for i, s in zip(rows.tolist(), slots.tolist(), strict=True):
            j = int(part.feature[i, s])
            value = jsonable(get(i, j))
            out[i].append(
                Reason(
                    feature=plan.features[j],
                    group=plan.groups[int(part.group[i, s])],
                    value=value,
                    contribution_logodds=float(part.logodds[i, s]),
                    contribution_probability=float(part.probability[i, s]),
                    direction=part.direction,
                    text=plan.describe[j](value),
                )
            )
    return out


def reason_table(
    model: RiskModel,
    X: pd.DataFrame,
    fs: FeatureSet,
    k: int = 3,
    include_negative: bool = False,
    contributions: np.ndarray | None = None,
) -> pd.DataFrame:
    """The same reasons as a long DataFrame (row, rank, direction, group, feature, contributions).

    For batch jobs over millions of rows: no Python object nor sentence per reason. ``row`` is the
    position in ``X``.
    """
    plan, chosen = _compute(model, X, fs, k, include_negative, contributions)
    frames = []
    groups = np.asarray(plan.groups, dtype=object)
    features = np.asarray(plan.features, dtype=object)
    for part in chosen:
        rows, slots = np.nonzero(part.valid)
        frames.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "rank": slots + 1,
                    "direction": part.direction,
                    "group": groups[part.group[rows, slots]],
                    "feature": features[part.feature[rows, slots]],
                    "contribution_logodds": part.logodds[rows, slots],
                    "contribution_probability": part.probability[rows, slots],
                }
            )
        )
    # up reasons come first in ``frames``; a stable sort by row keeps them before the down ones, in rank order
    return pd.concat(frames, ignore_index=True).sort_values("row", kind="stable", ignore_index=True)
